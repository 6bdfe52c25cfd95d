"""The Pillow plugin, tested through Pillow's own API."""

import io

import numpy as np
import pytest
from conftest import sample_image
from PIL import Image, UnidentifiedImageError

import cae_codec
import cae_codec.pillow  # noqa: F401  (registers the plugin)
from cae_codec.container import CaeFile, Header, pack


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA"])
def test_save_and_open_round_trip_through_pillow(mode, tmp_path):
    array = sample_image(37, 29, mode)
    path = tmp_path / "a.cae"
    Image.fromarray(array).save(path, quality=35, coder="range")
    with Image.open(path) as im:
        assert (im.format, im.size, im.mode) == ("CAE", (37, 29), mode)
        assert im.info == {
            "quality": 35,  # the 0-100 scale, as Pillow's own formats take it
            "level": 3 + 110 / 256,  # 35 is 6/14 of the way from level 3 (29) to 4 (43)
            "coder": "range",
            "weights_id": cae_codec.read_header(path).weights_id,
        }
        assert im.get_format_mimetype() == "image/x-cae"
        np.testing.assert_array_equal(np.asarray(im), np.asarray(cae_codec.decompress(path)))


def test_open_reads_only_the_header(tmp_path):
    """A file whose weights are not installed opens (size and mode known); only decoding fails."""
    data = pack(CaeFile(Header("RGB", "zstd", 3, 999_999, 640, 480), b"\x00" * 8, None))
    im = Image.open(io.BytesIO(data))
    assert (im.size, im.mode) == ((640, 480), "RGB")
    with pytest.raises(OSError, match="cannot decode .cae image: .*999999"):
        im.load()


def test_a_corrupt_or_foreign_file_is_pillows_usual_error(tmp_path):
    data = cae_codec.compress(sample_image(20, 20, "RGB"))
    for bad in (b"GIF89a" + data, data[:2] + bytes([0xF0 | data[2] & 0xF]) + data[3:], data[:4]):
        with pytest.raises(UnidentifiedImageError):  # the header is wrong: refused on open
            Image.open(io.BytesIO(bad))
    for bad in (data[:-2], data[:9] + bytes([data[9] ^ 1]) + data[10:]):
        im = Image.open(io.BytesIO(bad))  # a sound header opens; the damage shows on load
        with pytest.raises(OSError, match="cannot decode .cae image: checksum mismatch"):
            im.load()


class _Counting(io.BytesIO):
    """A stream that remembers how far it was read."""

    furthest = 0

    def read(self, size=-1):
        data = super().read(size)
        self.furthest = max(self.furthest, self.tell())
        return data


def test_open_reads_no_further_than_the_header():
    data = cae_codec.compress(sample_image(64, 48, "RGB"))
    stream = _Counting(data)
    with Image.open(stream) as im:
        assert im.size == (64, 48) and stream.furthest <= 32 < len(data)
        im.load()
    assert stream.furthest == len(data)


def test_the_extension_picks_the_format_and_bad_options_are_refused(tmp_path):
    image = Image.fromarray(sample_image(16, 16, "RGB"))
    image.save(tmp_path / "b.cae")
    assert cae_codec.read_header(tmp_path / "b.cae").coder in ("zstd", "range")
    with pytest.raises(ValueError, match="cannot write .cae: quality"):
        image.save(tmp_path / "c.cae", quality=101)
    with pytest.raises(ValueError, match="cannot write .cae: metadata"):
        image.save(tmp_path / "c.cae", metadata="gps")
    assert not (tmp_path / "c.cae").exists()  # Pillow removes what a failed save created
    assert Image.registered_extensions()[".cae"] == "CAE"
