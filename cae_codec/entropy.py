"""Entropy coding of the quantized latent: integers <-> bytes, by one of two coders.

zstd: each symbol becomes one byte (zigzag, 255 = escape to a uint32 in a second stream), in an
order the weights define (channel by channel, cheapest first; with a hyperprior, z first and then y
sorted by predicted scale), and zstd-19 codes the bytes with the bundle's trained dictionary in a
magicless frame with no size, checksum or dictionary id.
range: constriction's range coder, driven by the weight bundle's integer tables (one per channel,
or with a hyperprior one per scale of the Gaussian conditional).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import constriction
import numpy as np
import zstandard

from .container import FormatError

ZSTD_LEVEL = 19
ZSTD_DICT_SIZE = 16384
ESCAPE = 255
MAX_SYMBOL = 1 << 20  # larger latent magnitudes never come out of a sane encoder
_FEED = 64  # input bytes fed per step, so each step's output stays small (zstd blocks reach 128 KiB)


def _zigzag(values: np.ndarray) -> np.ndarray:
    return np.where(values < 0, -2 * values - 1, 2 * values)


def _unzigzag(values: np.ndarray) -> np.ndarray:
    return np.where(values & 1, -(values + 1) // 2, values // 2)


def _compressor(size: int, dictionary: bytes | None = None) -> zstandard.ZstdCompressor:
    params = zstandard.ZstdCompressionParameters.from_level(
        ZSTD_LEVEL,
        source_size=size,
        format=zstandard.FORMAT_ZSTD1_MAGICLESS,
        write_checksum=False,
        write_content_size=False,
        write_dict_id=False,
    )
    zdict = zstandard.ZstdCompressionDict(dictionary) if dictionary else None
    return zstandard.ZstdCompressor(compression_params=params, dict_data=zdict)


def zstd_pack(raw: bytes, dictionary: bytes | None = None) -> bytes:
    """Compress bytes into one magicless zstd frame, optionally with a trained dictionary."""
    return _compressor(len(raw), dictionary).compress(raw)


def zstd_unpack(frame: bytes, max_size: int, what: str, dictionary: bytes | None = None) -> bytes:
    """Decompress exactly one frame that must fill `frame` and expand to at most `max_size` bytes."""
    zdict = zstandard.ZstdCompressionDict(dictionary) if dictionary else None
    decompressor = zstandard.ZstdDecompressor(dict_data=zdict, format=zstandard.FORMAT_ZSTD1_MAGICLESS)
    obj = decompressor.decompressobj()
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
    return _head_tail(_zigzag(flat))


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
    return _unzigzag(zigzag)


def scale_order(index: np.ndarray) -> np.ndarray:
    """Positions of y sorted by predicted scale (stable), so alike symbols sit together for zstd."""
    return np.argsort(index.ravel(), kind="stable")


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
    u = _zigzag(values.astype(np.int64))
    cap = (1 << widths) - 1
    head = np.minimum(u, cap)
    bits = np.unpackbits(head.astype(np.uint8)[:, None], axis=1)
    kept = bits[np.arange(8)[None, :] >= 8 - widths[:, None]]
    return np.packbits(kept).tobytes() + _head_tail(u[u >= cap] - cap[u >= cap])


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
    return _unzigzag(head), end


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


def hyper_raw(z: tuple[np.ndarray, np.ndarray], y: tuple[np.ndarray, np.ndarray]) -> bytes:
    """The bytes zstd codes for a hyperprior latent: z's (values, widths), then y's, each packed."""
    return packed_bytes(*z) + packed_bytes(*y)


def hyper_layout(
    z: np.ndarray, y: np.ndarray, index: np.ndarray, layout: ZstdLayout, scale_widths: np.ndarray
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """(values, widths) of z in channel order and of y sorted by scale: what the zstd coder packs."""
    per_channel = z[0].size
    z_part = (z[layout.order].ravel(), np.repeat(layout.widths[layout.order], per_channel))
    order = scale_order(index)
    return z_part, (y.ravel()[order], scale_widths[index.ravel()[order]])


# --- range: the learned per-channel tables of the weight bundle drive constriction's range coder ---

RANGE_PRECISION = 16  # each table's integer frequencies sum to 2**16
RANGE_HALF_WIDTH = 256  # tables cover at most median +- this many steps; the rest is escaped
# Tables always cover centre +- this many steps, even where the model gives them almost no mass:
# on images unlike the training data such values do occur, and a 16-bit floor (16 bits at most)
# costs far less than an escape (the escape symbol plus 21 bits).
RANGE_MIN_HALF = 16
ESCAPE_BITS = 21  # escaped values are coded uniformly as zigzag integers below 2**21
_TRIM_LIMIT = 1 << 14  # streams up to this size are trimmed byte by byte (it matters for small images)


@dataclass(frozen=True)
class RangeTables:
    """One quality level's integer tables: channel c codes symbols lo[c] .. lo[c]+len-1, then escape."""

    lo: np.ndarray  # (M,) int64
    freqs: tuple[np.ndarray, ...]  # M arrays of int64 frequencies, the last entry the escape

    @cached_property
    def models(self) -> list:
        """constriction's models, built once per table set (64 of them for a hyperprior's scales)."""
        return [
            constriction.stream.model.Categorical(f.astype(np.float64), perfect=False) for f in self.freqs
        ]


def quantize_pmf(pmf: np.ndarray, half_width: int, min_half: int = RANGE_MIN_HALF) -> RangeTables:
    """Float tables (M, 2*half_width+1) over symbols -half_width.. to integer tables with an escape."""
    total = 1 << RANGE_PRECISION
    los, freqs = [], []
    for row in pmf.astype(np.float64):
        # Drop tails whose mass would round to nothing (the escape slot carries them), but never
        # the centre +- min_half.
        cdf = np.cumsum(row)
        first = min(int(np.searchsorted(cdf, 1 / total)), max(0, half_width - min_half))
        last = max(int(np.searchsorted(cdf, cdf[-1] - 1 / total)), min(2 * half_width, half_width + min_half))
        kept = row[first : last + 1]
        escape = max(0.0, 1.0 - kept.sum())
        counts = np.maximum(1, np.floor(np.append(kept, escape) * total)).astype(np.int64)
        counts[np.argmax(counts)] += total - counts.sum()
        los.append(first - half_width)
        freqs.append(counts)
    return RangeTables(np.array(los, dtype=np.int64), tuple(freqs))


# constriction reports a stream that its model cannot have produced with these exceptions.
_BROKEN_STREAM = (AssertionError, ValueError, RuntimeError, OverflowError)

# A stream is a sequence of parts, each a list of integer groups coded with chosen tables. Each
# part's escaped values follow its groups, so a decoder can use one part to parse the next.


class RangeReader:
    """Decodes a range-coded stream part by part (a hyperprior decoder needs z to parse y)."""

    def __init__(self, data: bytes) -> None:
        padded = data + bytes(-len(data) % 4)
        words = np.frombuffer(padded, dtype=">u4").astype(np.uint32)
        self._decoder = constriction.stream.queue.RangeDecoder(words)

    def read(self, sizes: Sequence[int], tables: RangeTables, which: Sequence[int] | None = None):
        """The next part: groups of `sizes[i]` integers coded with table `which[i]` (default i)."""
        which = range(len(sizes)) if which is None else which
        groups, escaped = [], []
        models = tables.models
        try:
            for size, t in zip(sizes, which, strict=True):
                index = self._decoder.decode(models[t], size).astype(np.int64) if size else np.zeros(0, int)
                groups.append(index + tables.lo[t])
                escaped.append(np.flatnonzero(index == len(tables.freqs[t]) - 1))
            count = sum(len(where) for where in escaped)
            if count:
                codes = self._decoder.decode(constriction.stream.model.Uniform(1 << ESCAPE_BITS), count)
                values = _unzigzag(codes.astype(np.int64))
                start = 0
                for group, where in zip(groups, escaped, strict=True):
                    group[where] = values[start : start + len(where)]
                    start += len(where)
        except _BROKEN_STREAM as e:
            raise FormatError(f"range-coded payload is corrupt ({e})") from None
        return groups


def _encode_part(encoder, groups: Sequence[np.ndarray], tables: RangeTables, which: Sequence[int]) -> None:
    models = tables.models
    escaped = []
    for group, t in zip(groups, which, strict=True):
        if not len(group):
            continue
        index = group.astype(np.int64) - tables.lo[t]
        escape = len(tables.freqs[t]) - 1
        outside = (index < 0) | (index >= escape)
        encoder.encode(np.where(outside, escape, index).astype(np.int32), models[t])
        escaped.append(group[outside])
    values = np.concatenate(escaped) if escaped else np.zeros(0, np.int64)
    if values.size:
        encoder.encode(_zigzag(values).astype(np.int32), constriction.stream.model.Uniform(1 << ESCAPE_BITS))


def range_encode_parts(parts: Sequence[tuple[Sequence[np.ndarray], RangeTables, Sequence[int]]]) -> bytes:
    """Parts of (groups, tables, table index of each group) to one stream, trimmed to the shortest
    prefix that still decodes exactly."""
    for groups, _, _ in parts:
        if any(np.abs(g).max(initial=0) > MAX_SYMBOL for g in groups):
            raise ValueError("latent value out of range; the weights are unsuitable for this image")
    encoder = constriction.stream.queue.RangeEncoder()
    for groups, tables, which in parts:
        _encode_part(encoder, groups, tables, which)
    data = encoder.get_compressed().astype(">u4").tobytes()
    if len(data) <= _TRIM_LIMIT:
        # The coder flushes whole 32-bit words; keep only the bytes the decoder really needs.
        for cut in range(min(7, len(data) - 1), 0, -1):
            if _decodes_to(data[:-cut], parts):
                return data[:-cut]
    return data


def _decodes_to(data: bytes, parts) -> bool:
    reader = RangeReader(data)
    try:
        for groups, tables, which in parts:
            back = reader.read([len(g) for g in groups], tables, which)
            if not all(np.array_equal(a, b) for a, b in zip(back, groups, strict=True)):
                return False
    except FormatError:
        return False
    return True


def range_encode(symbols: np.ndarray, tables: RangeTables) -> bytes:
    """Integers (M, H, W) to a range-coded stream, channel c with table c."""
    groups = list(symbols.reshape(symbols.shape[0], -1).astype(np.int64))
    return range_encode_parts([(groups, tables, range(len(groups)))])


def range_decode(data: bytes, tables: RangeTables, shape: tuple[int, ...]) -> np.ndarray:
    """A range-coded stream back to integers of `shape` (M, H, W)."""
    if len(tables.freqs) != shape[0]:
        raise FormatError(f"range tables have {len(tables.freqs)} channels, the latent {shape[0]}")
    groups = RangeReader(data).read([math.prod(shape[1:])] * shape[0], tables)
    return np.stack(groups).reshape(shape)


def gaussian_tables(scales: np.ndarray) -> RangeTables:
    """Integer tables of a zero-mean discretized Gaussian (convolved with U(-1/2, 1/2)) per scale."""
    half = max(int(np.ceil(8 * scales.max())), RANGE_MIN_HALF)
    k = np.arange(-half, half + 1, dtype=np.float64)
    upper = [_ndtr((0.5 - np.abs(k)) / s) for s in scales]
    lower = [_ndtr((-0.5 - np.abs(k)) / s) for s in scales]
    return quantize_pmf(np.array(upper) - np.array(lower), half)


def _ndtr(x: np.ndarray) -> np.ndarray:
    return 0.5 * np.vectorize(math.erfc)(-x / math.sqrt(2))


def scale_index(log_sigma: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """Which table codes each y symbol: exact comparisons of log sigma with the table's bounds."""
    return np.searchsorted(bounds, log_sigma, side="right")


def table_entropy(tables: RangeTables) -> np.ndarray:
    """Bits per symbol of each channel's integer table (used to order channels for zstd)."""
    bits = []
    for f in tables.freqs:
        p = f / f.sum()
        bits.append(float(-(p * np.log2(p)).sum()))
    return np.array(bits)


def train_dictionary(samples: list[bytes], size: int = ZSTD_DICT_SIZE) -> bytes:
    """A zstd dictionary trained on `symbol_bytes` of training images (never test images).

    Returns b"" (no dictionary) when zstd cannot train one, as with very few samples.
    """
    try:
        return zstandard.train_dictionary(size, samples, level=ZSTD_LEVEL).as_bytes()
    except zstandard.ZstdError:
        return b""
