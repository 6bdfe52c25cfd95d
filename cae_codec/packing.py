"""The zstd coder's layouts: integers as bytes or bit fields, in magicless zstd frames with a trained
dictionary per quality level (docs/format.md, coder 0).

Factorized bundles lay out one byte per value (zigzag, 255 escapes to a uint32), channel by channel
in the bundle's order; hyperprior bundles bit-pack z, then y sorted by predicted scale, each value
in a width both sides know.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import numpy as np
import zstandard

from .container import FormatError

ZSTD_LEVEL = 19
ZSTD_DICT_SIZE = 16384
ESCAPE = 255
MAX_SYMBOL = 1 << 20  # larger latent magnitudes never come out of a sane encoder
_FEED = 64  # input bytes fed per step, so each step's output stays small (zstd blocks reach 128 KiB)


def zigzag(values: np.ndarray) -> np.ndarray:
    return np.where(values < 0, -2 * values - 1, 2 * values)


def unzigzag(values: np.ndarray) -> np.ndarray:
    return np.where(values & 1, -(values + 1) // 2, values // 2)


# zstd's parameters for a frame depend on its size only by size class, and a compressor or
# decompressor digests its dictionary once; so each thread keeps those it has built (they are not
# thread-safe), which makes a small image's frame about 10x cheaper and the bytes the same.
_BUILT = threading.local()
_PARAMETER_NAMES = (
    "window_log",
    "chain_log",
    "hash_log",
    "search_log",
    "min_match",
    "target_length",
    "strategy",
)


def _built(key: tuple, make):
    cache = _BUILT.__dict__.setdefault("coders", {})
    if key not in cache:
        cache[key] = make()
    return cache[key]


def _compressor(size: int, dictionary: bytes | None = None) -> zstandard.ZstdCompressor:
    params = zstandard.ZstdCompressionParameters.from_level(
        ZSTD_LEVEL,
        source_size=size,
        format=zstandard.FORMAT_ZSTD1_MAGICLESS,
        write_checksum=False,
        write_content_size=False,
        write_dict_id=False,
    )

    def make() -> zstandard.ZstdCompressor:
        zdict = zstandard.ZstdCompressionDict(dictionary) if dictionary else None
        return zstandard.ZstdCompressor(compression_params=params, dict_data=zdict)

    return _built(("c", *(getattr(params, n) for n in _PARAMETER_NAMES), dictionary), make)


def _decompressor(dictionary: bytes | None) -> zstandard.ZstdDecompressor:
    def make() -> zstandard.ZstdDecompressor:
        zdict = zstandard.ZstdCompressionDict(dictionary) if dictionary else None
        return zstandard.ZstdDecompressor(dict_data=zdict, format=zstandard.FORMAT_ZSTD1_MAGICLESS)

    return _built(("d", dictionary), make)


def zstd_pack(raw: bytes, dictionary: bytes | None = None) -> bytes:
    """Compress bytes into one magicless zstd frame, optionally with a trained dictionary."""
    return _compressor(len(raw), dictionary).compress(raw)


def zstd_unpack(frame: bytes, max_size: int, what: str, dictionary: bytes | None = None) -> bytes:
    """Decompress exactly one frame that must fill `frame` and expand to at most `max_size` bytes."""
    obj = _decompressor(dictionary).decompressobj()
    out = bytearray()
    fed = 0
    try:
        while fed < len(frame) and not obj.eof:
            out += obj.decompress(frame[fed : fed + _FEED])
            fed += _FEED
            if len(out) > max_size:
                raise FormatError(f"{what} expands past the {max_size} bytes its header allows")
    except zstandard.ZstdError as e:
        raise FormatError(f"{what} is corrupt ({e})") from None
    if not obj.eof:
        raise FormatError(f"{what} is truncated")
    if obj.unused_data or fed < len(frame):
        raise FormatError(f"{what} is followed by trailing bytes")
    return bytes(out)


@dataclass(frozen=True)
class ZstdLayout:
    """How one quality level lays its integers out for zstd: channel order and trained dictionary."""

    order: np.ndarray  # (M,) channel permutation, cheapest channels first
    dictionary: bytes | None = None
    widths: np.ndarray | None = None  # (M,) bits per value of each channel, for bit-packed layouts


def symbol_bytes(symbols: np.ndarray, order: np.ndarray | None = None) -> bytes:
    """The bytes zstd sees: one byte per zigzag integer (255 escapes to a uint32 tail), channel-major."""
    ordered = symbols if order is None else symbols[order]
    return value_bytes(ordered.ravel())


def value_bytes(flat: np.ndarray) -> bytes:
    """A 1-D run of integers as zigzag head bytes, then a little-endian uint32 for each escape."""
    flat = flat.astype(np.int64)
    if np.abs(flat).max(initial=0) > MAX_SYMBOL:
        raise ValueError("latent value out of range; the weights are unsuitable for this image")
    return _head_tail(zigzag(flat))


def encode_symbols(symbols: np.ndarray, layout: ZstdLayout | None = None) -> bytes:
    """Integers (M, H, W) to a zstd frame."""
    if layout is None:
        return zstd_pack(symbol_bytes(symbols))
    return zstd_pack(symbol_bytes(symbols, layout.order), layout.dictionary)


def decode_symbols(frame: bytes, shape: tuple[int, ...], layout: ZstdLayout | None = None) -> np.ndarray:
    """A zstd frame back to exactly the integers of `shape` (M, H, W)."""
    ordered = decode_values(frame, math.prod(shape), layout.dictionary if layout else None).reshape(shape)
    if layout is None:
        return ordered
    symbols = np.empty_like(ordered)
    symbols[layout.order] = ordered
    return symbols


def decode_values(frame: bytes, count: int, dictionary: bytes | None = None) -> np.ndarray:
    """A zstd frame of `value_bytes` back to exactly `count` integers."""
    raw = zstd_unpack(frame, count * 5, "latent payload", dictionary)
    zigzag, end = _read_head_tail(raw, 0, count)
    if end != len(raw):
        raise FormatError(f"latent payload has {len(raw) - end} bytes past its values")
    if zigzag.max(initial=0) > 2 * MAX_SYMBOL:
        raise FormatError("latent payload holds a value out of range")
    return unzigzag(zigzag)


def scale_order(index: np.ndarray) -> np.ndarray:
    """Positions of y sorted by predicted scale (stable), so alike symbols sit together for zstd."""
    # A scale index is below 64: as uint8, numpy's stable sort is a one-pass radix sort (int16 took
    # two passes and twice the time; int64 a merge sort, 7x more).
    return np.argsort(index.ravel().astype(np.uint8), kind="stable")


def scale_counts(index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The scale indices in use, ascending, and how many values each has (np.unique's answer, without
    a sort)."""
    counts = np.bincount(index.ravel())
    used = np.flatnonzero(counts)
    return used, counts[used]


# With a hyperprior, the zstd coder bit-packs: each value gets a width known to both sides (from its
# z channel or its y scale table), so zstd's byte-wise Huffman coding sees several small values per
# byte instead of one byte each. A value too large for its width escapes to a byte stream after the
# bits.
def width_for(bits_per_symbol: np.ndarray) -> np.ndarray:
    """The packing width for tables of the given entropy: ceil(H - 1/2), from 1 to 8 bits."""
    return np.clip(np.ceil(bits_per_symbol - 0.5), 1, 8).astype(np.int64)


def packed_bytes(values: np.ndarray, widths: np.ndarray) -> bytes:
    """Zigzag values in `widths` bits each (MSB first, zero-padded to a byte), then the escapes."""
    if np.abs(values).max(initial=0) > MAX_SYMBOL:
        raise ValueError("latent value out of range; the weights are unsuitable for this image")
    v = values.astype(np.int32)  # |v| <= 2**20, so zigzag fits an int32
    u = (v << 1) ^ (v >> 31)
    cap = (1 << widths.astype(np.int32)) - 1
    head = np.minimum(u, cap)
    bits = np.unpackbits(head.astype(np.uint8)[:, None], axis=1)
    escaped = u >= cap
    return np.packbits(_low_bits(bits, widths)).tobytes() + _head_tail((u - cap)[escaped])


def _low_bits(bits: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """The last widths[i] of each row's 8 bits, row after row."""
    starts = np.flatnonzero(np.diff(widths, prepend=-1))
    if not 0 < len(starts) <= 64:
        return bits[np.arange(8)[None, :] >= 8 - widths[:, None]]
    # Widths come in runs (y sorted by scale, z channel by channel): slice each run's columns.
    ends = [*starts[1:], len(widths)]
    return np.concatenate([bits[s:e, 8 - widths[s] :].ravel() for s, e in zip(starts, ends, strict=True)])


def read_packed(raw: bytes, offset: int, widths: np.ndarray) -> tuple[np.ndarray, int]:
    """Inverse of `packed_bytes` from `raw[offset:]`: the values and the offset after them."""
    total = int(widths.sum())
    end = offset + -(-total // 8)
    if end > len(raw):
        raise FormatError("latent payload is shorter than its bit widths need")
    # Each value spans at most two bytes: read a 16-bit window at its bit offset and shift.
    data = np.frombuffer(raw, dtype=np.uint8, count=end - offset, offset=offset).astype(np.int64)
    data = np.append(data, 0)
    start = np.cumsum(widths) - widths
    window = (data[start >> 3] << 8) | data[(start >> 3) + 1]
    head = (window >> (16 - (start & 7) - widths)) & ((1 << widths) - 1)
    cap = (1 << widths) - 1
    escaped = np.flatnonzero(head == cap)
    extra, end = _read_head_tail(raw, end, len(escaped))
    head[escaped] += extra
    if head.max(initial=0) > 2 * MAX_SYMBOL:
        raise FormatError("latent payload holds a value out of range")
    return unzigzag(head), end


def _head_tail(u: np.ndarray) -> bytes:
    """Non-negative integers as one byte each (255 escapes) and a uint32 per escape."""
    head = np.minimum(u, ESCAPE).astype(np.uint8)
    return head.tobytes() + u[u >= ESCAPE].astype("<u4").tobytes()


def _read_head_tail(raw: bytes, offset: int, count: int) -> tuple[np.ndarray, int]:
    head = np.frombuffer(raw, dtype=np.uint8, count=min(count, max(0, len(raw) - offset)), offset=offset)
    if len(head) < count:
        raise FormatError("latent payload ends inside its escapes")
    values = head.astype(np.int64)
    long = np.flatnonzero(values == ESCAPE)
    end = offset + count + 4 * len(long)
    if end > len(raw):
        raise FormatError("latent payload ends inside its escapes")
    values[long] = np.frombuffer(raw, dtype="<u4", count=len(long), offset=offset + count)
    return values, end


def hyper_raw(*parts: tuple[np.ndarray, np.ndarray]) -> bytes:
    """The bytes zstd codes for a hyperprior latent: each part's (values, widths) packed, in order."""
    return b"".join(packed_bytes(*part) for part in parts)


def channel_part(z: np.ndarray, layout: ZstdLayout) -> tuple[np.ndarray, np.ndarray]:
    """(values, widths) of z in the layout's channel order."""
    per_channel = z[0].size
    return z[layout.order].ravel(), np.repeat(layout.widths[layout.order], per_channel)


def scale_part(
    values: np.ndarray, index: np.ndarray, scale_widths: np.ndarray, order: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(values, widths) of y values sorted by their scale table (`order`: scale_order(index), if known)."""
    order = scale_order(index) if order is None else order
    return values.ravel()[order], scale_widths[index.ravel()[order]]


def train_dictionary(samples: list[bytes], size: int = ZSTD_DICT_SIZE) -> bytes:
    """A zstd dictionary trained on `symbol_bytes` of training images (never test images).

    Returns b"" (no dictionary) when zstd cannot train one, as with very few samples.
    """
    try:
        return zstandard.train_dictionary(size, samples, level=ZSTD_LEVEL).as_bytes()
    except zstandard.ZstdError:
        return b""
