"""The .cae container: a header of at most 8 bytes for small images, then the payload.

Version 1 holds the colour section whole; version 2, for images larger than one segment, adds the
segment side to the header and holds one colour section per segment, so a codec needs memory for
one segment at a time. Version 3 adds a features byte for what versions 1 and 2 cannot say: a
quality between two levels, a thin image folded into a squarer one, and metadata sections.

docs/format.md is the byte-by-byte spec; this module is its only implementation.
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass, field
from typing import BinaryIO

MAGIC = 0xCAE  # 12 bits; the low 4 bits of the first two bytes hold the version
VERSION = 1  # the colour section whole
SEGMENTED = 2  # the colour section in segments of `segment` pixels a side
EXTENDED = 3  # a features byte after the mode byte: fraction, segmented, folded, metadata
FRACTION = 256  # version 3 places the gains between two levels in 256ths of a level
FEATURE_FRACTION, FEATURE_SEGMENTED, FEATURE_FOLDED, FEATURE_METADATA = 0x01, 0x02, 0x04, 0x08
METADATA_KINDS = ("icc", "exif", "xmp")  # bit i of the metadata mask: kind i, in this order
METADATA_MAX = 8 << 20  # all metadata sections together, in bytes
MODES = ("L", "RGB", "RGBA")  # index = 2-bit mode code; code 3 is reserved
CODERS = ("zstd", "range")  # index = 2-bit coder code; codes 2 and 3 are reserved
MAX_QUALITY = 16  # quality is stored as quality-1 in 4 bits
MAX_SIDE = 1 << 24  # width and height are varints of at most 4 bytes
MAX_ID = (1 << 28) - 1  # weights ids are varints of at most 4 bytes
CRC_INIT = 0xFFFF


class FormatError(ValueError):
    """The bytes are not a valid .cae file (foreign, truncated, corrupt or unsupported)."""


@dataclass(frozen=True)
class Header:
    mode: str
    coder: str
    level: int  # the quality level whose tables code the file (1..16)
    weights_id: int
    width: int
    height: int
    segment: int = 0  # side of the square segments in pixels; 0: the whole image is one segment
    fraction: int = 0  # how far the gains sit towards the next level, in 256ths (version 3)
    fold: int = 1  # strips a thin image was cut into and stacked (version 3); 1: not folded
    metadata: bool = False  # metadata sections lead the payload (version 3)

    @property
    def version(self) -> int:
        if self.fraction or self.fold > 1 or self.metadata:
            return EXTENDED
        return SEGMENTED if self.segment else VERSION

    @property
    def position(self) -> float:
        """The quality level with its fraction, as the gains see it (for example 4.375)."""
        return self.level + self.fraction / FRACTION

    @property
    def tables(self) -> int:
        """The level whose entropy tables code the file: the level above when between two, whose
        wider tables cost a little, where the level's own would need escapes (docs/format.md)."""
        return self.level + bool(self.fraction)

    @property
    def coded_size(self) -> tuple[int, int]:
        """(width, height) of the image the network codes: the folded one for a folded image."""
        return folded_size(self.width, self.height, self.fold)

    @property
    def segments(self) -> int:
        """How many segments the colour section holds (raster order, the last row and column cut)."""
        if not self.segment:
            return 1
        width, height = self.coded_size
        return -(-width // self.segment) * -(-height // self.segment)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise FormatError(f"mode {self.mode!r} is not one of {', '.join(MODES)}")
        if self.coder not in CODERS:
            raise FormatError(f"coder {self.coder!r} is not one of {', '.join(CODERS)}")
        if not 1 <= self.level <= MAX_QUALITY:
            raise FormatError(f"quality level {self.level} is outside 1..{MAX_QUALITY}")
        if not 0 <= self.fraction < FRACTION:
            raise FormatError(f"fraction {self.fraction} is outside 0..{FRACTION - 1}")
        if self.fraction and self.level == MAX_QUALITY:
            raise FormatError(f"level {MAX_QUALITY} has no level above it to move towards")
        if not 0 <= self.weights_id <= MAX_ID:
            raise FormatError(f"weights id {self.weights_id} is outside 0..{MAX_ID}")
        if not (1 <= self.width <= MAX_SIDE and 1 <= self.height <= MAX_SIDE):
            raise FormatError(f"size {self.width}x{self.height} is outside 1..{MAX_SIDE} per side")
        if not 0 <= self.segment <= MAX_SIDE:
            raise FormatError(f"segment side {self.segment} is outside 1..{MAX_SIDE}")
        check_fold(self.width, self.height, self.fold)
        if self.segment and self.segments == 1:
            raise FormatError(
                f"a {self.width}x{self.height} image is one {self.segment}-pixel segment; use version 1"
            )


def folded_size(width: int, height: int, fold: int) -> tuple[int, int]:
    """The size of an image cut along its longer side into `fold` strips stacked side by side."""
    if fold == 1:
        return width, height
    if width >= height:
        return -(-width // fold), height * fold
    return width * fold, -(-height // fold)


def check_fold(width: int, height: int, fold: int) -> None:
    """A fold count must leave every strip at least one pixel long and the folded sides within range."""
    if fold == 1:
        return
    longer = max(width, height)
    if not 2 <= fold <= longer or -(-longer // -(-longer // fold)) != fold:
        raise FormatError(f"{fold} strips do not cut a {width}x{height} image into non-empty strips")
    if max(folded_size(width, height, fold)) > MAX_SIDE:
        raise FormatError(f"{fold} strips of a {width}x{height} image stack beyond {MAX_SIDE} pixels")


@dataclass(frozen=True)
class CaeFile:
    header: Header
    color: bytes  # the latent, as packed by header.coder
    alpha: bytes | None  # the alpha plane, a zstd frame; present exactly when mode is RGBA
    metadata: dict[str, bytes] = field(default_factory=dict)  # kind (METADATA_KINDS) -> its bytes

    @property
    def segments(self) -> list[bytes]:
        """The colour section of each segment, in raster order."""
        return split_segments(self.color, self.header.segments)


def join_segments(parts: list[bytes]) -> bytes:
    """Segments' colour sections as one: each but the last after its varint length."""
    if not parts or not all(parts):
        raise FormatError("every segment needs a non-empty colour section")
    return b"".join(put_varint(len(p)) + p for p in parts[:-1]) + parts[-1]


def split_segments(color: bytes, count: int) -> list[bytes]:
    """The inverse of `join_segments`, checking that exactly `count` non-empty segments fill `color`."""
    parts, pos = [], 0
    for i in range(count - 1):
        size, pos = get_varint(color, pos, 4, f"segment {i} length")
        if size == 0 or pos + size >= len(color):
            raise FormatError(f"segment {i} is empty or runs past the colour section (truncated)")
        parts.append(color[pos : pos + size])
        pos += size
    if pos >= len(color):
        raise FormatError("the last segment is empty (truncated)")
    return [*parts, color[pos:]]


def put_varint(value: int) -> bytes:
    """Unsigned LEB128: 7 bits a byte, low bits first, high bit set on all but the last byte."""
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def get_varint(data: bytes, pos: int, max_bytes: int, what: str) -> tuple[int, int]:
    """Read an unsigned LEB128 at `pos`; returns (value, next position)."""
    value = 0
    for i in range(max_bytes):
        if pos + i >= len(data):
            raise FormatError(f"file ends inside the {what} field")
        byte = data[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if byte < 0x80:
            if byte == 0 and i > 0:
                raise FormatError(f"{what} field is not in its shortest form")
            return value, pos + i + 1
    raise FormatError(f"{what} field is longer than {max_bytes} bytes")


def _crc(parts: list[bytes]) -> int:
    crc = CRC_INIT
    for part in parts:
        crc = binascii.crc_hqx(part, crc)
    return crc


def _body(f: CaeFile) -> bytes:
    if (f.header.mode == "RGBA") != (f.alpha is not None):
        raise FormatError("an alpha section is present exactly when the mode is RGBA")
    if f.header.metadata != bool(f.metadata):
        raise FormatError("the header's metadata flag must say whether metadata sections are present")
    image = f.color if f.alpha is None else put_varint(len(f.color)) + f.color + f.alpha
    return pack_metadata(f.metadata) + image


def pack_metadata(sections: dict[str, bytes]) -> bytes:
    """The metadata block: a mask of the kinds present, then each kind's varint length and bytes."""
    if not sections:
        return b""
    if unknown := set(sections) - set(METADATA_KINDS):
        raise FormatError(f"unknown metadata kinds {sorted(unknown)}; known: {', '.join(METADATA_KINDS)}")
    if not all(sections.values()):
        raise FormatError("a metadata section is never empty")
    if (total := sum(map(len, sections.values()))) > METADATA_MAX:
        raise FormatError(f"{total:,} bytes of metadata are over the {METADATA_MAX:,} a .cae file may hold")
    present = [kind for kind in METADATA_KINDS if kind in sections]
    mask = sum(1 << METADATA_KINDS.index(kind) for kind in present)
    return bytes([mask]) + b"".join(put_varint(len(sections[k])) + sections[k] for k in present)


def unpack_metadata(body: bytes) -> tuple[dict[str, bytes], int]:
    """The metadata block at the start of a payload, each section checked; and where the image starts."""
    mask = body[0]
    if mask == 0 or mask >> len(METADATA_KINDS):
        raise FormatError(f"metadata mask {mask:#04x} is empty or names unknown kinds")
    sections, pos, total = {}, 1, 0
    for i, kind in enumerate(METADATA_KINDS):
        if mask >> i & 1:
            size, pos = get_varint(body, pos, 4, f"{kind} length")
            total += size
            if size == 0 or total > METADATA_MAX:
                raise FormatError(f"{kind} section is empty, or metadata is over {METADATA_MAX:,} bytes")
            if pos + size >= len(body):
                raise FormatError(f"{kind} section runs past the end of the file (truncated)")
            sections[kind], pos = body[pos : pos + size], pos + size
    return sections, pos


def read_metadata(stream: BinaryIO) -> dict[str, bytes]:
    """The metadata block from a stream at the payload's start, read section by section, for showing
    it before the rest is read (unpack checks it again, with the checksum over the whole file)."""
    block = read_up_to(stream, 1)
    for i, kind in enumerate(METADATA_KINDS):
        if block and block[0] >> i & 1:
            raw = b""
            while len(raw) < 4 and (byte := read_up_to(stream, 1)):
                raw += byte
                if byte[0] < 0x80:
                    break
            size, _ = get_varint(raw, 0, 4, f"{kind} length")
            block += raw + read_up_to(stream, min(size, METADATA_MAX))
    return unpack_metadata(block + b"\0")[0]  # the 0 stands for the image sections that follow


def pack(f: CaeFile) -> bytes:
    """Serialize a .cae file."""
    h = f.header
    version = h.version
    features = b""
    if version == EXTENDED:
        flags = (
            FEATURE_FRACTION * bool(h.fraction)
            | FEATURE_SEGMENTED * bool(h.segment)
            | FEATURE_FOLDED * (h.fold > 1)
            | FEATURE_METADATA * h.metadata
        )
        features = bytes([flags]) + (bytes([h.fraction]) if h.fraction else b"")
    fields = (
        bytes(
            [
                MAGIC >> 4,
                (MAGIC & 0xF) << 4 | version,
                MODES.index(h.mode) << 6 | CODERS.index(h.coder) << 4 | (h.level - 1),
            ]
        )
        + features
        + put_varint(h.weights_id)
        + put_varint(h.width - 1)
        + put_varint(h.height - 1)
        + (put_varint(h.segment) if h.segment else b"")
        + (put_varint(h.fold) if h.fold > 1 else b"")
    )
    split_segments(f.color, h.segments)  # a writer's bug, caught before it reaches a file
    body = _body(f)
    return fields + _crc([fields, body]).to_bytes(2, "big") + body


def check_magic(prefix: bytes) -> None:
    """Raise FormatError unless `prefix` (at least the first 3 bytes) starts like a .cae file."""
    if len(prefix) < 3 or prefix[0] != MAGIC >> 4 or prefix[1] >> 4 != MAGIC & 0xF:
        raise FormatError("not a .cae file (wrong magic number)")


def unpack(data: bytes) -> CaeFile:
    """Parse and check every field of a .cae file; raises FormatError on any defect."""
    header, pos = _parse_header(data)
    if pos + 2 > len(data):
        raise FormatError("file ends inside the checksum field")
    width, height = header.width, header.height
    if len(data) > (limit := max_file_bytes(width, height, header.metadata)):
        raise FormatError(f"{len(data):,} bytes is more than a {width}x{height} file may take ({limit:,})")
    stored = int.from_bytes(data[pos : pos + 2], "big")
    body = data[pos + 2 :]
    if not body:
        raise FormatError("file has a header but no payload (truncated)")
    if _crc([data[:pos], body]) != stored:
        raise FormatError("checksum mismatch: the file is corrupt, truncated or has trailing bytes")
    metadata, start = unpack_metadata(body) if header.metadata else ({}, 0)
    if header.mode != "RGBA":
        f = CaeFile(header, body[start:], None, metadata)
    else:
        color_len, start = get_varint(body, start, 4, "colour length")
        if start + color_len >= len(body):
            raise FormatError("colour section runs past the end of the file (truncated)")
        f = CaeFile(header, body[start : start + color_len], body[start + color_len :], metadata)
    f.segments  # noqa: B018 -- checks the segment lengths now, before any decoding
    return f


def _parse_header(data: bytes) -> tuple[Header, int]:
    """The header's fields, each checked, and where the checksum starts; the body is not looked at."""
    check_magic(data)
    if (version := data[1] & 0xF) not in (VERSION, SEGMENTED, EXTENDED):
        raise FormatError(f".cae version {version} is not supported (this reader knows 1, 2 and 3)")
    mode_code, coder_code = data[2] >> 6, data[2] >> 4 & 0x3
    if mode_code >= len(MODES):
        raise FormatError(f"unknown mode code {mode_code}")
    if coder_code >= len(CODERS):
        raise FormatError(f"unknown entropy coder code {coder_code}")
    features, fraction, pos = (0, 0, 3) if version != EXTENDED else _features(data)
    weights_id, pos = get_varint(data, pos, 4, "weights id")
    width, pos = get_varint(data, pos, 4, "width")
    height, pos = get_varint(data, pos, 4, "height")
    segment, fold = 0, 1
    if version == SEGMENTED or features & FEATURE_SEGMENTED:
        segment, pos = get_varint(data, pos, 4, "segment side")
        if segment == 0:
            raise FormatError("segment side is 0")
    if features & FEATURE_FOLDED:
        fold, pos = get_varint(data, pos, 4, "fold")
        if fold < 2:
            raise FormatError(f"fold {fold} is not a fold (2 or more strips)")
    header = Header(
        MODES[mode_code],
        CODERS[coder_code],
        (data[2] & 0xF) + 1,
        weights_id,
        width + 1,
        height + 1,
        segment,
        fraction=fraction,
        fold=fold,
        metadata=bool(features & FEATURE_METADATA),
    )
    if header.version != version:
        raise FormatError(f"a version {version} header for what version {header.version} says")
    return header, pos


def _features(data: bytes) -> tuple[int, int, int]:
    """Version 3's features byte and fraction byte (0 when absent), and where the varints start."""
    if len(data) < 4:
        raise FormatError("file ends inside the features field")
    features = data[3]
    if features & 0xF0:
        raise FormatError(f"features byte {features:#04x} sets reserved bits")
    if not features & FEATURE_FRACTION:
        return features, 0, 4
    if len(data) < 5:
        raise FormatError("file ends inside the fraction field")
    if data[4] == 0:
        raise FormatError("fraction 0 is written by leaving the fraction out")
    return features, data[4], 5


HEADER_MAX = 5 + 5 * 4 + 2  # the longest: magic, mode, features, fraction, five 4-byte varints, checksum
# The largest file a reader accepts for an image: 4 bytes a pixel (32 bpp; cae-codec's files stay
# under 1 byte a pixel, even an alpha plane of noise) and 64 KiB. It bounds what is read and held
# before the checksum can be tested.
BYTES_PER_PIXEL_MAX, BYTES_SLACK = 4, 2**16


def peek_header(prefix: bytes) -> Header:
    """The header from a file's first bytes (HEADER_MAX are always enough), its fields checked but
    not its checksum, which covers the whole file."""
    return _parse_header(prefix)[0]


def max_file_bytes(width: int, height: int, metadata: bool = False) -> int:
    """The most bytes a .cae file of a width x height image may take (docs/format.md, Limits)."""
    return BYTES_PER_PIXEL_MAX * width * height + BYTES_SLACK + (METADATA_MAX + 16 if metadata else 0)


def read_limited(stream: BinaryIO, size: int | None = None) -> bytes:
    """A .cae file from a stream read once, in pieces: the header first, then no more than
    max_file_bytes allows for its size. `size`: the stream's length where known (a regular file),
    so that a file too large is refused before it is read."""
    prefix = read_up_to(stream, HEADER_MAX)
    if not prefix:
        raise FormatError("empty input")
    header = peek_header(prefix)
    width, height = header.width, header.height
    limit = max_file_bytes(width, height, header.metadata)
    if size is not None and size > limit:
        raise FormatError(f"{size:,} bytes is more than a {width}x{height} file may take ({limit:,})")
    rest = read_up_to(stream, limit - len(prefix) + 1)
    if len(prefix) + len(rest) > limit:
        raise FormatError(f"more than the {limit:,} bytes a {width}x{height} .cae file may take")
    return prefix + rest


def read_up_to(stream: BinaryIO, count: int) -> bytes:
    """Up to `count` bytes, fewer only at the end of the stream (a pipe may return less per read)."""
    chunks, left = [], count
    while left > 0 and (chunk := stream.read(min(left, 2**20))):
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def peek_size(prefix: bytes) -> tuple[int, int]:
    """(width, height) from the first bytes of a .cae file (HEADER_MAX are enough): for planning
    work, never for decoding."""
    header = peek_header(prefix)
    return header.width, header.height


def header_size(data: bytes) -> int:
    """Bytes before the payload (for reporting the header's share of the rate); only the fields'
    lengths are read, so damaged bytes can be resealed."""
    if len(data) < 3:
        raise FormatError("file ends inside its first three bytes")
    version = data[1] & 0xF
    features, _, pos = _features(data) if version == EXTENDED else (0, 0, 3)
    fields = ["weights id", "width", "height"]
    fields += ["segment side"] * (version == SEGMENTED or bool(features & FEATURE_SEGMENTED))
    fields += ["fold"] * bool(features & FEATURE_FOLDED)
    for what in fields:
        _, pos = get_varint(data, pos, 4, what)
    return pos + 2


def reseal(data: bytes) -> bytes:
    """Recompute the checksum of (possibly damaged) .cae bytes, so tests can reach deeper checks."""
    pos = header_size(data)
    return data[: pos - 2] + _crc([data[: pos - 2], data[pos:]]).to_bytes(2, "big") + data[pos:]
