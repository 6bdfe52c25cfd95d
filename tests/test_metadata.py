"""ICC profiles, EXIF and XMP kept in .cae files and written back on decode."""

import io

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import display_p3_profile, sample_image
from PIL import Image

import cae_codec
import cae_codec.pillow  # noqa: F401  (registers the plugin)
from cae_codec import metadata
from cae_codec.cli import main
from cae_codec.container import header_size, unpack

XMP = (
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    b'<rdf:Description xmlns:dc="http://purl.org/dc/elements/1.1/" dc:creator="A. Photographer"/>'
    b"</rdf:RDF></x:xmpmeta>"
)
CAMERA = {0x010F: "Acme", 0x0110: "Phone 15", 0x0132: "2026:12:04 10:11:12"}  # Make, Model, DateTime


def phone_jpeg(path, orientation: int = 1, size=(64, 48)) -> None:
    """A JPEG as a phone writes it: a Display P3 profile, EXIF with camera and date, and XMP."""
    exif = Image.Exif()
    exif.update(CAMERA)
    exif[metadata.ORIENTATION] = orientation
    image = Image.fromarray(sample_image(*size, "RGB"))
    image.save(path, quality=92, icc_profile=display_p3_profile(), exif=exif.tobytes(), xmp=XMP)


def camera(image: Image.Image) -> dict:
    exif = image.getexif()
    return {tag: exif.get(tag) for tag in CAMERA}


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".webp", ".tif"])
def test_a_phone_jpeg_keeps_its_profile_exif_and_xmp_through_the_command_line(tmp_path, suffix):
    phone_jpeg(tmp_path / "phone.jpg")
    runner = CliRunner()
    assert runner.invoke(main, ["compress", str(tmp_path / "phone.jpg")]).exit_code == 0
    assert sorted(unpack((tmp_path / "phone.cae").read_bytes()).metadata) == ["exif", "icc", "xmp"]
    result = runner.invoke(
        main, ["decompress", str(tmp_path / "phone.cae"), "-o", str(tmp_path / f"back{suffix}")]
    )
    assert result.exit_code == 0, result.output
    back = Image.open(tmp_path / f"back{suffix}")
    assert back.info["icc_profile"] == display_p3_profile()
    assert camera(back) == CAMERA
    xmp = back.info.get("xmp") or back.getexif().get(700)  # TIFF keeps XMP in tag 700
    assert XMP in (xmp if isinstance(xmp, bytes) else xmp.encode())


def test_metadata_none_and_one_kind(tmp_path):
    phone_jpeg(tmp_path / "phone.jpg")
    runner = CliRunner()
    for choice, kept in (("none", []), ("icc", ["icc"]), ("exif,xmp", ["exif", "xmp"])):
        out = tmp_path / f"{choice}.cae"
        result = runner.invoke(
            main, ["compress", str(tmp_path / "phone.jpg"), "-o", str(out), "--metadata", choice]
        )
        assert result.exit_code == 0, result.output
        assert sorted(unpack(out.read_bytes()).metadata) == kept
    assert (
        runner.invoke(
            main, ["decompress", str(tmp_path / "none.cae"), "-o", str(tmp_path / "n.jpg")]
        ).exit_code
        == 0
    )
    back = Image.open(tmp_path / "n.jpg")
    assert "icc_profile" not in back.info and camera(back) == dict.fromkeys(CAMERA)
    assert (tmp_path / "none.cae").read_bytes()[1] & 0xF == 1  # without metadata: a version 1 file


def test_exif_orientation_is_applied_and_stored_as_upright(tmp_path):
    phone_jpeg(tmp_path / "turned.jpg", orientation=6, size=(64, 48))  # 6: rotate 90 degrees to view
    data = cae_codec.compress(tmp_path / "turned.jpg")
    image = cae_codec.decompress(data)
    assert image.size == (48, 64)
    exif = image.getexif()
    assert exif.get(metadata.ORIENTATION, 1) == 1 and camera(image) == CAMERA


def test_small_files_without_metadata_stay_as_small_and_the_plugin_shows_it_on_open(tmp_path):
    plain = cae_codec.compress(sample_image(32, 32, "RGB"))
    assert header_size(plain) == 8
    image = Image.fromarray(sample_image(32, 32, "RGB"))
    image.info["icc_profile"] = display_p3_profile()
    data = cae_codec.compress(image)
    assert data[1] & 0xF == 3 and len(data) < len(plain) + len(display_p3_profile())  # zstd frames
    with Image.open(io.BytesIO(data)) as opened:
        assert opened.info["icc_profile"] == display_p3_profile()  # before load(), like PNG's
        assert opened.size == (32, 32)
        opened.load()
    with pytest.warns(cae_codec.codec.InputWarning, match="ICC colour profile is not kept"):
        image.save(tmp_path / "a.cae", metadata="none")
    assert unpack((tmp_path / "a.cae").read_bytes()).metadata == {}


def test_formats_that_cannot_hold_metadata_say_so(tmp_path):
    phone_jpeg(tmp_path / "phone.jpg")
    runner = CliRunner()
    runner.invoke(main, ["compress", str(tmp_path / "phone.jpg")])
    result = runner.invoke(main, ["decompress", str(tmp_path / "phone.cae"), "-o", str(tmp_path / "b.bmp")])
    assert result.exit_code == 0 and "BMP cannot hold its exif and icc and xmp metadata" in result.stderr


def test_oversized_metadata_is_refused_by_writer_and_reader(monkeypatch):
    image = Image.fromarray(sample_image(16, 16, "RGB"))
    image.info["xmp"] = b"x" * 5000
    monkeypatch.setattr(metadata, "METADATA_MAX", 4096)
    with pytest.raises(ValueError, match="over the 4,096 a .cae file holds"):
        cae_codec.compress(image)
    assert unpack(cae_codec.compress(image, metadata="icc")).metadata == {}
    monkeypatch.undo()
    data = cae_codec.compress(image)
    monkeypatch.setattr(metadata, "METADATA_MAX", 4096)
    with pytest.raises(cae_codec.FormatError, match="xmp section expands past"):
        cae_codec.decompress(data)


def test_array_inputs_have_no_metadata_and_pixels_are_unchanged_by_it(tmp_path):
    array = sample_image(40, 30, "RGB")
    image = Image.fromarray(array)
    image.info.update(icc_profile=display_p3_profile(), xmp=XMP)
    with_meta, without = cae_codec.compress(image), cae_codec.compress(array)
    assert unpack(with_meta).color == unpack(without).color
    assert np.array_equal(
        np.asarray(cae_codec.decompress(with_meta)), np.asarray(cae_codec.decompress(without))
    )


def _oriented(folder, orientation: int = 6) -> Image.Image:
    """A 64x48 photo whose EXIF says it must be turned (6: 90 degrees clockwise), as a phone writes."""
    phone_jpeg(folder / "oriented.jpg", orientation=orientation)
    return Image.open(folder / "oriented.jpg")


@pytest.mark.parametrize("entry", ["path", "bytes", "pil", "plugin"])
def test_every_entry_point_gives_upright_pixels_and_an_upright_orientation(tmp_path, entry):
    photo = _oriented(tmp_path, 6)
    photo.save(tmp_path / "p.jpg", exif=photo.info["exif"], quality=95)
    if entry == "plugin":
        photo.save(tmp_path / "p.cae", quality=50)
        back = Image.open(tmp_path / "p.cae")
        back.load()
    else:
        source = {"path": tmp_path / "p.jpg", "bytes": (tmp_path / "p.jpg").read_bytes(), "pil": photo}[entry]
        back = cae_codec.decompress(cae_codec.compress(source, quality=50))
    assert back.size == (48, 64)  # turned upright
    assert back.getexif().get(metadata.ORIENTATION) == 1


def _mutations(data: bytes, count: int, seed: int):
    rng = np.random.default_rng(seed)
    for _ in range(count):
        mutated = bytearray(data)
        for _ in range(int(rng.integers(1, 7))):
            mutated[int(rng.integers(0, len(mutated)))] = int(rng.integers(0, 256))
        yield bytes(mutated)


def test_mutated_metadata_never_costs_a_file(tmp_path):
    """EXIF, ICC and XMP with 1-6 random bytes changed (as broken writers leave them) through compress
    and every output format: each file is written, with at most one line about what was left out,
    and the pixels come upright wherever the orientation can still be read."""
    photo = _oriented(tmp_path, 6)
    exif = photo.info["exif"]
    runner = CliRunner()
    cases = [("exif", m) for m in _mutations(exif, 24, 0)]
    cases += [("icc", m) for m in _mutations(display_p3_profile(), 6, 1)]
    cases += [("xmp", m) for m in _mutations(XMP, 4, 2)]
    pixels = Image.fromarray(sample_image(64, 48, "RGB"))
    for i, (kind, data) in enumerate(cases):
        source = tmp_path / f"source{i}.png"
        info = PngInfo_with(kind, data)
        pixels.save(source, **info)
        result = runner.invoke(main, ["compress", str(source), "-o", str(tmp_path / f"m{i}.cae")])
        assert result.exit_code == 0 and "Traceback" not in result.output, (kind, result.output)
        assert len([ln for ln in result.stderr.splitlines() if ln]) <= 1, result.stderr
        for suffix in (".png", ".jpg", ".webp", ".tif", ".bmp"):
            out = tmp_path / f"m{i}{suffix}"
            result = runner.invoke(main, ["decompress", str(tmp_path / f"m{i}.cae"), "-o", str(out)])
            assert result.exit_code == 0 and out.stat().st_size > 0, (kind, suffix, result.output)
            assert len([ln for ln in result.stderr.splitlines() if ln]) <= 2, result.stderr
            Image.open(out).load()


def PngInfo_with(kind: str, data: bytes) -> dict:  # noqa: N802 (reads as what it returns)
    """Pillow's PNG save options that store one metadata kind as given, whatever it holds."""
    from PIL import PngImagePlugin

    if kind == "exif":
        return {"exif": data}
    if kind == "icc":
        return {"icc_profile": data}
    info = PngImagePlugin.PngInfo()
    info.add_itxt("XML:com.adobe.xmp", data.decode("utf-8", "replace"))
    return {"pnginfo": info}


def test_outputs_say_what_they_leave_out(tmp_path):
    """JPEG holds at most 64 KB of EXIF or XMP in one segment: the rest of the file is written, and
    one line names what was left out and why."""
    big_xmp = XMP[: -len(b"</x:xmpmeta>")] + b"<!--" + b"x" * 70_000 + b"--></x:xmpmeta>"
    image = Image.fromarray(sample_image(64, 48, "RGB"))
    image.save(tmp_path / "big.png", **PngInfo_with("xmp", big_xmp))
    runner = CliRunner()
    assert runner.invoke(main, ["compress", str(tmp_path / "big.png")]).exit_code == 0
    result = runner.invoke(main, ["decompress", str(tmp_path / "big.cae"), "-o", str(tmp_path / "b.jpg")])
    assert result.exit_code == 0 and (tmp_path / "b.jpg").exists()
    assert "its xmp metadata left out" in result.stderr and "over JPEG's 64 KB" in result.stderr
    result = runner.invoke(main, ["decompress", str(tmp_path / "big.cae"), "-o", str(tmp_path / "b.png")])
    assert result.exit_code == 0 and "left out" not in result.stderr


def test_the_plugin_takes_pillows_metadata_keywords(tmp_path):
    image = Image.fromarray(sample_image(40, 30, "RGB"))
    exif = Image.Exif()
    exif.update(CAMERA)
    image.save(tmp_path / "k.cae", quality=50, exif=exif, icc_profile=display_p3_profile(), xmp=XMP)
    back = Image.open(tmp_path / "k.cae")
    assert back.info["icc_profile"] == display_p3_profile()
    assert camera(back) == CAMERA and back.info["xmp"] == XMP
