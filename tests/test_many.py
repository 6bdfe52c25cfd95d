"""The batch API: many images through shared forward passes, the same files as one at a time."""

import io

import numpy as np
import pytest
from conftest import at_level, sample_image
from PIL import Image

import cae_codec
from cae_codec import codec


def _mixed() -> list:
    """Same-size images (which share passes), other sizes, modes and kinds of input."""
    images = [sample_image(32, 32, "RGB", seed=s) for s in range(5)]
    images += [sample_image(40, 24, "RGBA", seed=7), sample_image(32, 32, "L", seed=8)]
    png = io.BytesIO()
    Image.fromarray(sample_image(32, 32, "RGB", seed=9)).save(png, format="PNG")
    return [*images, png.getvalue(), Image.fromarray(sample_image(17, 33, "RGB", seed=10))]


@pytest.mark.parametrize("coder", ["auto", "range"])
def test_compress_many_makes_the_files_compress_makes(coder):
    images = _mixed()
    one = [cae_codec.compress(image, at_level(3), coder=coder) for image in images]
    many = cae_codec.compress_many(images, at_level(3), coder=coder, batch_size=3)
    assert len(many) == len(images)
    # Batched convolutions may round a rare latent value the other way; headers and sizes agree.
    for a, b in zip(one, many, strict=True):
        assert cae_codec.read_header(a) == cae_codec.read_header(b)
        assert abs(len(a) - len(b)) <= max(4, 0.02 * len(a))
    assert sum(a == b for a, b in zip(one, many, strict=True)) >= len(images) - 2


def test_decompress_many_gives_the_images_decompress_gives():
    files = [cae_codec.compress(image, at_level(2)) for image in _mixed()]
    many = cae_codec.decompress_many(files, batch_size=2)
    for data, image in zip(files, many, strict=True):
        alone = cae_codec.decompress(data)
        assert (image.mode, image.size) == (alone.mode, alone.size)
        assert np.abs(np.asarray(image, dtype=int) - np.asarray(alone)).max() <= 1


def test_batches_share_forward_passes(monkeypatch):
    calls = []
    analyse = codec.analyse
    monkeypatch.setattr(
        codec, "analyse", lambda w, x, *a, **k: calls.append(len(x)) or analyse(w, x, *a, **k)
    )
    cae_codec.compress_many(
        [sample_image(32, 32, "RGB", seed=s) for s in range(10)], at_level(2), batch_size=4
    )
    assert calls == [4, 4, 2]


def test_many_refuses_what_one_refuses():
    with pytest.raises(ValueError, match="coder"):
        cae_codec.compress_many([sample_image(8, 8, "RGB")], coder="huffman")
    with pytest.raises(cae_codec.FormatError):
        cae_codec.decompress_many([cae_codec.compress(sample_image(8, 8, "RGB")), b"not a cae file"])
    assert cae_codec.compress_many([]) == [] and cae_codec.decompress_many([]) == []


def test_compress_many_each_keeps_every_coders_file():
    images = [sample_image(32, 32, "RGB", seed=s) for s in range(3)] + [sample_image(17, 33, "RGB", seed=4)]
    each = codec.compress_many_each(images, at_level(2), batch_size=2)
    assert [sorted(files) for files in each] == [sorted(codec.CODERS)] * len(images)
    assert cae_codec.compress_many(images, at_level(2), batch_size=2) == [
        min(f.values(), key=len) for f in each
    ]
    for files in each:
        assert {cae_codec.read_header(data).coder for data in files.values()} == set(codec.CODERS)
        pixels = [np.asarray(cae_codec.decompress(data)) for data in files.values()]
        assert np.array_equal(pixels[0], pixels[1])


def test_return_errors_keeps_the_others_going():
    good = sample_image(32, 32, "RGB", seed=1)
    files = cae_codec.compress_many([good, b"not an image", good], at_level(2), return_errors=True)
    assert isinstance(files[1], ValueError) and files[0] == files[2]
    images = cae_codec.decompress_many([files[0], b"CAE junk", files[2]], return_errors=True)
    assert isinstance(images[1], cae_codec.FormatError) and images[0].size == images[2].size == (32, 32)
    with pytest.raises(cae_codec.FormatError):
        cae_codec.decompress_many([files[0], b"CAE junk"])


def test_decode_batches_share_h_s_and_g_s(monkeypatch):
    calls = {"h_s": [], "g_s": []}
    hyper, synthesize = codec.hyper_features, codec._synthesize_quietly
    monkeypatch.setattr(
        codec, "hyper_features", lambda w, z, q: calls["h_s"].append(len(z)) or hyper(w, z, q)
    )
    monkeypatch.setattr(
        codec, "_synthesize_quietly", lambda w, y, *a: calls["g_s"].append(len(y)) or synthesize(w, y, *a)
    )
    images = [sample_image(32, 32, "RGB", seed=s) for s in range(10)]
    files = [
        cae_codec.compress(image, at_level(2), coder=("zstd", "range")[s % 2])
        for s, image in enumerate(images)
    ]
    many = cae_codec.decompress_many(files, batch_size=4)
    assert calls == {"h_s": [4, 4, 2], "g_s": [4, 4, 2]}  # z of both coders' files in one h_s pass
    for data, image in zip(files, many, strict=True):
        _same_but_rare_pixels(image, cae_codec.decompress(data))


def _same_but_rare_pixels(batched: Image.Image, alone: Image.Image) -> None:
    """A file decoded in a batch and alone: g_s runs in float, and oneDNN picks its kernels by batch
    size, so a rare pixel may round one level apart (one in thousands), never more."""
    a, b = np.asarray(batched, dtype=int), np.asarray(alone, dtype=int)
    assert a.shape == b.shape and np.abs(a - b).max() <= 1 and (a != b).mean() < 0.002


def test_a_batch_decodes_every_file_as_decompress_does_but_rare_pixels():
    images = [sample_image(32, 32, "RGB", seed=s) for s in range(12)]
    for level in (1, 4, 6, 8):
        files = cae_codec.compress_many(images, at_level(level))
        for data, image in zip(files, cae_codec.decompress_many(files), strict=True):
            _same_but_rare_pixels(image, cae_codec.decompress(data))


def test_a_file_that_fails_inside_a_batch_fails_alone():
    from cae_codec.container import CaeFile, pack, unpack

    files = [cae_codec.compress(sample_image(32, 32, "RGBA", seed=s), 2) for s in range(3)]
    f = unpack(files[1])
    files[1] = pack(CaeFile(f.header, f.color, b"\x28\xb5\x2f\xfd broken frame"))  # z and y intact
    images = cae_codec.decompress_many(files, return_errors=True)
    assert isinstance(images[1], cae_codec.FormatError)
    for data, image in zip((files[0], files[2]), (images[0], images[2]), strict=True):
        _same_but_rare_pixels(image, cae_codec.decompress(data))
    with pytest.raises(cae_codec.FormatError, match="alpha"):
        cae_codec.decompress_many(files)
