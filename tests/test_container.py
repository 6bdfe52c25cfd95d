import io

import pytest

from cae_codec.container import (
    HEADER_MAX,
    METADATA_MAX,
    CaeFile,
    FormatError,
    Header,
    get_varint,
    header_size,
    join_segments,
    max_file_bytes,
    pack,
    peek_header,
    put_varint,
    read_limited,
    read_metadata,
    reseal,
    unpack,
)


def make(mode="RGB", width=32, height=32, weights_id=1, color=b"\x01\x02\x03", alpha=None):
    if mode == "RGBA" and alpha is None:
        alpha = b"\x09\x08"
    return pack(CaeFile(Header(mode, "zstd", 6, weights_id, width, height), color, alpha))


@pytest.mark.parametrize("value", [0, 1, 127, 128, 300, 16383, 16384, (1 << 28) - 1])
def test_varint_round_trip(value):
    data = put_varint(value)
    assert get_varint(data + b"\xff", 0, 4, "x") == (value, len(data))


def test_varint_rejects_overlong_and_unterminated():
    with pytest.raises(FormatError, match="shortest"):
        get_varint(b"\x80\x00", 0, 4, "x")
    with pytest.raises(FormatError, match="longer"):
        get_varint(b"\xff\xff\xff\xff\x01", 0, 4, "x")
    with pytest.raises(FormatError, match="ends inside"):
        get_varint(b"\xff", 0, 4, "x")


def test_header_of_32x32_is_8_bytes():
    assert header_size(make()) == 8
    assert len(make()) == 8 + 3


def test_round_trip_every_field():
    for mode in ("L", "RGB", "RGBA"):
        data = make(mode, width=451, height=300, weights_id=70000)
        f = unpack(data)
        assert f.header == Header(mode, "zstd", 6, 70000, 451, 300)
        assert f.color == b"\x01\x02\x03"
        assert f.alpha == (b"\x09\x08" if mode == "RGBA" else None)


def test_rejects_wrong_magic():
    data = bytearray(make())
    data[0] ^= 0x40
    with pytest.raises(FormatError, match="magic"):
        unpack(bytes(data))
    with pytest.raises(FormatError, match="magic"):
        unpack(b"\x89PNG\r\n\x1a\n" + bytes(20))


def test_rejects_other_version():
    data = bytearray(make())
    data[1] = data[1] & 0xF0 | 4
    with pytest.raises(FormatError, match="version 4"):
        unpack(bytes(data))


def test_rejects_reserved_mode_and_coder():
    for flip, message in ((0xC0, "mode"), (0x30, "coder")):
        data = bytearray(make())
        data[2] |= flip
        with pytest.raises(FormatError, match=message):
            unpack(bytes(data))


def test_rejects_wrong_checksum():
    data = bytearray(make())
    data[6] ^= 0x01
    with pytest.raises(FormatError, match="checksum"):
        unpack(bytes(data))


def test_rejects_flipped_header_field_via_checksum():
    data = bytearray(make())
    data[4] ^= 0x01  # width 32 -> 33 (still a valid varint)
    with pytest.raises(FormatError, match="checksum"):
        unpack(bytes(data))


@pytest.mark.parametrize("cut", [0, 1, 2, 3, 5, 7, 8, 10])
def test_rejects_truncation(cut):
    with pytest.raises(FormatError):
        unpack(make()[:cut])


def test_rejects_trailing_bytes():
    with pytest.raises(FormatError):
        unpack(make() + b"\x00")


def test_rgba_colour_length_past_end():
    data = make("RGBA")
    body_start = header_size(data)
    forged = bytearray(data)
    forged[body_start] = 100  # colour length far beyond the file
    with pytest.raises(FormatError, match="colour section"):
        unpack(reseal(bytes(forged)))
    assert unpack(reseal(data)) == unpack(data)


def test_header_validates_fields():
    with pytest.raises(FormatError):
        Header("CMYK", "zstd", 1, 1, 1, 1)
    with pytest.raises(FormatError):
        Header("RGB", "zstd", 17, 1, 1, 1)
    with pytest.raises(FormatError):
        Header("RGB", "zstd", 1, 1, 0, 1)
    with pytest.raises(FormatError):
        pack(CaeFile(Header("RGB", "zstd", 1, 1, 1, 1), b"x", b"alpha"))


def segmented(width=300, height=200, side=128, parts=(b"a", b"bc", b"d", b"ef", b"g", b"h")):
    return pack(CaeFile(Header("RGB", "range", 2, 3, width, height, side), join_segments(list(parts)), None))


def test_segmented_file_round_trips_as_version_2():
    data = segmented()
    assert data[1] & 0xF == 2
    f = unpack(data)
    assert f.header.segment == 128 and f.header.segments == 3 * 2
    assert f.segments == [b"a", b"bc", b"d", b"ef", b"g", b"h"]
    assert header_size(data) == 2 + 1 + 1 + 2 + 2 + 2 + 2  # the segment side's varint added
    assert unpack(make()).header.segment == 0 and make()[1] & 0xF == 1


def test_segment_side_must_cut_the_image():
    with pytest.raises(FormatError, match="one 512-pixel segment"):
        Header("RGB", "zstd", 1, 1, 300, 200, 512)
    with pytest.raises(FormatError, match="segment side"):
        Header("RGB", "zstd", 1, 1, 300, 200, -1)


@pytest.mark.parametrize(
    "parts, message",
    [
        ((b"a", b"b", b"c", b"d", b"e"), "segment 4 is empty or runs past"),
        ((b"a", b"", b"c", b"d", b"e", b"f"), "every segment"),
    ],
)
def test_writer_refuses_wrong_segment_count(parts, message):
    with pytest.raises(FormatError, match=message):
        segmented(parts=parts)


def test_reader_refuses_segments_that_do_not_fill_the_section():
    # Five segments where the header needs six: the colour section ends early.
    color = join_segments([b"a", b"b", b"c", b"d", b"ee"])
    fields = bytearray(segmented())
    pos = header_size(bytes(fields))
    with pytest.raises(FormatError, match="segment 4 is empty or runs past"):
        unpack(reseal(bytes(fields[:pos]) + color))
    # A length running past the end.
    with pytest.raises(FormatError, match="segment 0"):
        unpack(reseal(bytes(fields[:pos]) + b"\x7f" + b"x" * 10))
    # A zero side.
    data = bytearray(segmented(side=64, parts=[b"x"] * 20))  # 5 x 4 segments, a 1-byte side
    data[header_size(bytes(data)) - 3] = 0
    with pytest.raises(FormatError, match="segment side is 0"):
        unpack(reseal(bytes(data)))


def extended(fraction=0, fold=1, metadata=None, segment=0, mode="RGB", width=32, height=32, parts=1):
    header = Header(mode, "range", 3, 5, width, height, segment, fraction, fold, bool(metadata))
    color = join_segments([b"c%d" % i for i in range(parts)])
    alpha = b"\x07" if mode == "RGBA" else None
    return pack(CaeFile(header, color, alpha, metadata or {}))


def test_version_3_round_trips_each_feature_alone_and_together():
    cases = [
        dict(fraction=37),
        dict(fold=16, width=5000, height=3),
        dict(metadata={"icc": b"P3", "xmp": b"<x/>"}),
        dict(fraction=255, fold=8, width=2, height=3000, segment=64, parts=6),  # 16x375 folded
        dict(fraction=1, metadata={"exif": b"MM"}, mode="RGBA", width=300, height=200, segment=128, parts=6),
    ]
    for case in cases:
        data = extended(**case)
        assert data[1] & 0xF == 3
        f = unpack(data)
        h = f.header
        assert (h.fraction, h.fold, h.segment) == (
            case.get("fraction", 0),
            case.get("fold", 1),
            case.get("segment", 0),
        )
        assert f.metadata == case.get("metadata", {}) and len(f.segments) == case.get("parts", 1)
        assert peek_header(data[:HEADER_MAX]) == h and len(data) > header_size(data)
        assert read_limited(io.BytesIO(data)) == data
    assert extended(fold=16, width=5000, height=3)[4:5] != b"\x00"


def test_whole_levels_without_extras_stay_versions_1_and_2():
    assert extended()[1] & 0xF == 1 and header_size(extended()) == 8
    assert extended(segment=128, width=300, height=200, parts=6)[1] & 0xF == 2
    # A quality between levels costs two bytes: the features byte and the fraction.
    assert header_size(extended(fraction=128)) == 10


def test_folded_sizes():
    h = Header("RGB", "zstd", 1, 5, 1_000_000, 1, fold=1000)
    assert h.coded_size == (1000, 1000)
    assert Header("RGB", "zstd", 1, 5, 3, 10_000, fold=7).coded_size == (21, 1429)


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(fold=3, width=4, height=1), "do not cut"),  # strips of 2 px: only 2 are needed
        (dict(fold=10, width=5, height=1), "do not cut"),
        (dict(fold=2**24, width=2**24, height=2), "beyond"),
        (dict(fraction=256), "fraction 256"),
        (dict(fraction=1, level=16), "no level above"),
    ],
)
def test_header_refuses_impossible_version_3_fields(fields, message):
    base = dict(mode="RGB", coder="zstd", level=1, weights_id=5, width=32, height=32)
    with pytest.raises(FormatError, match=message):
        Header(**{**base, **fields})


def _patched(data: bytes, pos: int, value: int) -> bytes:
    data = bytearray(data)
    data[pos] = value
    return reseal(bytes(data))


def test_reader_refuses_damaged_version_3_headers():
    plain = bytearray(extended())
    plain[1] = plain[1] & 0xF0 | 3  # version 3 claimed, with a features byte of 0 in place of the id
    with pytest.raises(FormatError):
        unpack(bytes(plain))
    data = extended(fraction=9)
    with pytest.raises(FormatError, match="reserved bits"):
        unpack(_patched(data, 3, data[3] | 0x40))
    with pytest.raises(FormatError, match="fraction 0"):
        unpack(_patched(data, 4, 0))
    with pytest.raises(FormatError, match="version 1 says"):
        unpack(reseal(data[:3] + b"\x00" + data[5:]))  # a features byte that asks for nothing
    folded = extended(fold=16, width=5000, height=3)
    pos = header_size(folded) - 3  # the fold's one-byte varint
    with pytest.raises(FormatError, match="not a fold"):
        unpack(_patched(folded, pos, 1))
    with pytest.raises(FormatError, match="ends inside"):
        unpack(folded[:4])


def test_reader_refuses_damaged_metadata_sections():
    data = extended(metadata={"icc": b"abc"})
    start = header_size(data)
    with pytest.raises(FormatError, match="mask"):
        unpack(_patched(data, start, 0))
    with pytest.raises(FormatError, match="mask"):
        unpack(_patched(data, start, 0x09))
    with pytest.raises(FormatError, match="icc section"):
        unpack(_patched(data, start + 1, 0x7F))  # a length past the end
    with pytest.raises(FormatError, match="icc section is empty"):
        unpack(_patched(data, start + 1, 0))
    with pytest.raises(FormatError, match="over"):
        extended(metadata={"xmp": bytes(METADATA_MAX + 1)})
    with pytest.raises(FormatError, match="unknown metadata"):
        extended(metadata={"gps": b"x"})
    f = unpack(data)
    assert read_metadata(io.BytesIO(data[start:])) == f.metadata == {"icc": b"abc"}
    # Metadata raises the most a file may take, so a reader still takes the largest it allows.
    assert max_file_bytes(32, 32, True) > max_file_bytes(32, 32) + METADATA_MAX
