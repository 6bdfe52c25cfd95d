"""The Python API and CLI behave as a new user expects: clear argument errors, paths and streams,
shipped weights by name, an honest version."""

import io
import json
from importlib.metadata import version

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import at_level, sample_image
from PIL import Image

import cae_codec
from cae_codec import files, weights
from cae_codec.cli import main


@pytest.fixture
def image():
    return sample_image(24, 16, "RGB")


@pytest.mark.parametrize("quality", ["6", True, [6], None.__class__])
def test_quality_must_be_a_number(image, quality):
    with pytest.raises(TypeError, match="quality must be a number from 0 to 100"):
        cae_codec.compress(image, quality=quality)


def test_quality_out_of_range_is_a_value_error(image):
    for bad in (-0.5, 101, float("nan")):
        with pytest.raises(ValueError, match="quality must be a number from 0 to 100"):
            cae_codec.compress(image, quality=bad)
    header = cae_codec.read_header(cae_codec.compress(image, quality=np.int64(14)))
    assert (header.level, header.fraction) == (2, 0)
    header = cae_codec.read_header(cae_codec.compress(image, quality=np.float32(21.5)))
    assert (header.level, header.fraction) == (2, 128)


def test_compress_takes_a_path_bytes_or_stream(image, tmp_path):
    path = tmp_path / "a.png"
    Image.fromarray(image).save(path)
    expected = cae_codec.compress(image, quality=at_level(3))
    assert cae_codec.compress(str(path), quality=at_level(3)) == expected
    assert cae_codec.compress(path, quality=at_level(3)) == expected
    assert cae_codec.compress(path.read_bytes(), quality=at_level(3)) == expected
    with path.open("rb") as f:
        assert cae_codec.compress(f, quality=at_level(3)) == expected
    with pytest.raises(TypeError, match="image must be a PIL image"):
        cae_codec.compress(42)


def test_decompress_takes_bytes_a_path_or_a_binary_stream(image, tmp_path):
    data = cae_codec.compress(image, quality=at_level(3))
    expected = np.asarray(cae_codec.decompress(data))
    (tmp_path / "a.cae").write_bytes(data)
    for given in (
        bytearray(data),
        memoryview(data),
        io.BytesIO(data),
        tmp_path / "a.cae",
        str(tmp_path / "a.cae"),
    ):
        assert np.array_equal(np.asarray(cae_codec.decompress(given)), expected)
    assert cae_codec.read_header(io.BytesIO(data)).width == 24
    with pytest.raises(TypeError, match="binary mode"):
        cae_codec.decompress(io.StringIO("text"))
    with pytest.raises(TypeError, match="data must be .cae bytes"):
        cae_codec.decompress(12345)


def test_shipped_weights_by_name_and_listed(image, tmp_path):
    data = cae_codec.compress(image, quality=at_level(2), weights="cae-fp8-v2")
    assert cae_codec.read_header(data).weights_id == 2
    result = CliRunner().invoke(main, ["info", "--list-weights"])
    assert result.exit_code == 0
    for entry in weights.REGISTRY.values():
        assert entry.name in result.output and f"id {entry.id}" in result.output
    lines = {line.split("  ")[0]: line for line in result.output.splitlines()}
    assert "(default under 2,304 pixels)" in lines[f"id {weights.DEFAULT_ID}"]
    assert "(default from 2,304 pixels)" in lines[f"id {weights.PHOTO_ID}"]
    with pytest.raises(TypeError, match="weights must be a path or a shipped name"):
        cae_codec.compress(image, weights=3)
    png = tmp_path / "a.png"
    Image.fromarray(image).save(png)
    result = CliRunner().invoke(main, ["compress", str(png), "--weights", "cae-fp8-v2"])
    assert result.exit_code == 0, result.output
    assert cae_codec.read_header((tmp_path / "a.cae").read_bytes()).weights_id == 2


def test_version_is_the_packages():
    assert cae_codec.__version__ == version("cae-codec")
    result = CliRunner().invoke(main, ["--version"])
    assert cae_codec.__version__ in result.output


def test_a_write_failure_names_the_output(image, tmp_path, monkeypatch):
    png = tmp_path / "a.png"
    Image.fromarray(image).save(png)

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / ".a.cae.x.tmp"))

    monkeypatch.setattr(files, "write_all", refuse)
    result = CliRunner().invoke(main, ["compress", str(png)])
    assert result.exit_code == 1
    assert f"cannot write {tmp_path / 'a.cae'}: permission denied" in result.stderr


def test_bench_refuses_a_bad_level_before_loading_data(tmp_path):
    result = CliRunner().invoke(
        main, ["bench", str(tmp_path / "no-such-folder"), "--levels", "9", "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 2 and "9 is not a level" in result.output


def test_pixel_limit_message_names_the_option(image):
    with pytest.raises(ValueError, match="--max-pixels"):
        cae_codec.compress(image, max_pixels=100)


def test_bench_results_record_machine_versions_and_date(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.fromarray(sample_image(32, 32, "RGB")).save(folder / "a.png")
    out = tmp_path / "o"
    result = CliRunner().invoke(
        main, ["bench", str(folder), "--levels", "1", "--codecs", "jpeg", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    record = json.loads((out / "results.json").read_text())
    assert record["versions"]["cae-codec"] == cae_codec.__version__ and "cores" in record["machine"]
    assert record["date"][:2] == "20" and record["weights"]["id"] == weights.DEFAULT_ID


def test_dropped_icc_profiles_and_1_bit_images_are_warned_about(tmp_path):
    from PIL import ImageCms

    rgb = Image.fromarray(sample_image(20, 12, "RGB"))
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("XYZ")).tobytes()
    rgb.save(tmp_path / "icc.png", icc_profile=icc)
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    rgb.save(tmp_path / "srgb.png", icc_profile=srgb)  # sRGB is what untagged pixels mean: no warning
    Image.fromarray(sample_image(20, 12, "L") > 128).save(tmp_path / "bits.png")
    Image.fromarray(sample_image(20, 12, "RGB")).save(tmp_path / "plain.png")
    inputs = [str(tmp_path / f) for f in ("icc.png", "bits.png", "plain.png")]
    result = CliRunner().invoke(main, ["compress", *inputs, "--metadata", "exif,xmp"])
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    assert any("icc.png: its ICC colour profile is not kept" in line for line in lines)
    assert any("bits.png: a 1-bit image is coded as 8-bit grayscale" in line for line in lines)
    assert not any("plain.png" in line for line in lines) and len(lines) == 2
    with pytest.warns(cae_codec.codec.InputWarning, match="ICC"):
        cae_codec.compress(Image.open(tmp_path / "icc.png"), metadata="none")
    kept = CliRunner().invoke(main, ["compress", inputs[0], "-o", str(tmp_path / "kept.cae")])
    assert kept.exit_code == 0 and "ICC" not in kept.stderr  # kept by default: nothing to warn about


def test_threads_option_sets_torch_threads(tmp_path):
    import torch

    before = torch.get_num_threads()
    png = tmp_path / "a.png"
    Image.fromarray(sample_image(16, 16, "RGB")).save(png)
    try:
        result = CliRunner().invoke(main, ["--threads", "1", "compress", str(png)])
        assert result.exit_code == 0 and torch.get_num_threads() == 1
        assert CliRunner().invoke(main, ["--threads", "0", "compress", str(png)]).exit_code == 2
    finally:
        torch.set_num_threads(before)
