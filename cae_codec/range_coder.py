"""The range coder: constriction's range coder driven by the weight bundle's integer tables
(docs/format.md, coder 1). A stream is a sequence of parts, each a list of integer groups coded
with chosen tables; each part's escaped values follow its groups, so a decoder can use one part to
parse the next (a hyperprior's z before y).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import constriction
import numpy as np

from .container import FormatError
from .packing import MAX_SYMBOL, unzigzag, zigzag

RANGE_PRECISION = 16  # each table's integer frequencies sum to 2**16
ESCAPE_BITS = 21  # escaped values are coded uniformly as zigzag integers below 2**21
_TRIM_LIMIT = 1 << 14  # streams up to this size are trimmed byte by byte (it matters for small images)


@dataclass(frozen=True)
class RangeTables:
    """One quality level's integer tables: channel c codes symbols lo[c] .. lo[c]+len-1, then escape."""

    lo: np.ndarray  # (M,) int64
    freqs: tuple[np.ndarray, ...]  # M arrays of int64 frequencies, the last entry the escape

    @cached_property
    def escapes(self) -> np.ndarray:
        """Each table's escape symbol (its last)."""
        return np.array([len(f) - 1 for f in self.freqs], dtype=np.int64)

    @cached_property
    def cheapest_bits(self) -> float:
        """The fewest bits any symbol of these tables costs (its most frequent entry's)."""
        return min(-math.log2(int(f.max()) / (1 << RANGE_PRECISION)) for f in self.freqs)

    @cached_property
    def models(self) -> list:
        """constriction's models, built once per table set (64 of them for a hyperprior's scales)."""
        return [
            constriction.stream.model.Categorical(f.astype(np.float64), perfect=False) for f in self.freqs
        ]


# constriction reports a stream that its model cannot have produced with these exceptions.
_BROKEN_STREAM = (AssertionError, ValueError, RuntimeError, OverflowError)


class RangeReader:
    """Decodes a range-coded stream part by part (a hyperprior decoder needs z to parse y)."""

    def __init__(self, data: bytes) -> None:
        padded = data + bytes(-len(data) % 4)
        words = np.frombuffer(padded, dtype=">u4").astype(np.uint32)
        self._decoder = constriction.stream.queue.RangeDecoder(words)

    def read(self, sizes: Sequence[int], tables: RangeTables, which: Sequence[int] | None = None):
        """The next part: groups of `sizes[i]` integers coded with table `which[i]` (default i)."""
        values = self.read_flat(sizes, tables, which)
        return np.split(values, np.cumsum(sizes)[:-1]) if len(sizes) else []

    def read_flat(
        self, sizes: Sequence[int], tables: RangeTables, which: Sequence[int] | None = None
    ) -> np.ndarray:
        """The next part as `read` gives it, its groups end to end in one array."""
        which = range(len(sizes)) if which is None else [int(t) for t in which]
        models = tables.models
        values = np.empty(int(sum(sizes)), dtype=np.int64)
        escapes = []
        try:
            start = 0
            for size, t in zip(sizes, which, strict=True):
                if size:  # group by group, in place: no concatenation or repeated tables
                    index = self._decoder.decode(models[t], int(size))
                    np.add(index, tables.lo[t], out=values[start : start + size])
                    escapes.append(np.flatnonzero(index == tables.escapes[t]) + start)
                    start += size
            escaped = np.concatenate(escapes) if escapes else np.zeros(0, np.int64)
            if len(escaped):
                codes = self._decoder.decode(
                    constriction.stream.model.Uniform(1 << ESCAPE_BITS), len(escaped)
                )
                values[escaped] = unzigzag(codes.astype(np.int64))
        except _BROKEN_STREAM as e:
            raise FormatError(f"range-coded payload is corrupt ({e})") from None
        return values


def _encode_part(encoder, groups: Sequence[np.ndarray], tables: RangeTables, which: Sequence[int]) -> None:
    """Each group with its table, then the part's escaped values (in group order) uniformly. Works
    group by group in int32: a large image's y is tens of millions of values, and whole-part arrays
    of int64 cost more than the coding itself."""
    models, escaped = tables.models, []
    for group, t in zip(groups, which, strict=True):
        if not len(group):
            continue
        symbols = np.subtract(group, tables.lo[t], out=np.empty(len(group), np.int32), casting="unsafe")
        escape = tables.escapes[t]
        outside = (symbols < 0) | (symbols >= escape)  # within int32: checked first
        if outside.any():
            symbols[outside] = escape
            escaped.append(group[outside])
        encoder.encode(symbols, models[t])
    if escaped:
        uniform = constriction.stream.model.Uniform(1 << ESCAPE_BITS)
        encoder.encode(zigzag(np.concatenate(escaped)).astype(np.int32), uniform)


def range_encode_parts(parts: Sequence[tuple[Sequence[np.ndarray], RangeTables, Sequence[int]]]) -> bytes:
    """Parts of (groups, tables, table index of each group) to one stream, trimmed to the shortest
    prefix that still decodes exactly."""
    for groups, _, _ in parts:
        if not all(_within(g) for g in groups):
            raise ValueError("latent value out of range; the weights are unsuitable for this image")
    encoder = constriction.stream.queue.RangeEncoder()
    for groups, tables, which in parts:
        _encode_part(encoder, groups, tables, which)
    data = encoder.get_compressed().astype(">u4").tobytes()
    if len(data) <= _TRIM_LIMIT:
        # The coder flushes whole 32-bit words; keep only the bytes the decoder really needs. A
        # zero-padded prefix reads as a number that grows with its length, and it decodes exactly
        # once that number is inside the final interval: so the longest cut that decodes is found
        # by bisection. Most streams (96 % of CIFAR-10 files) need every byte, so a cut of one byte
        # is tried first: one trial decode settles them, where plain bisection takes three.
        good, bad, cut = 0, min(7, len(data) - 1) + 1, 1
        while bad - good > 1:
            good, bad = (cut, bad) if _decodes_to(data[:-cut], parts) else (good, cut)
            cut = (good + bad) // 2
        return data[:-good] if good else data
    return data


def _within(group: np.ndarray) -> bool:
    """Whether every value is within MAX_SYMBOL (its extremes: no array of absolute values)."""
    return not len(group) or max(-int(group.min()), int(group.max())) <= MAX_SYMBOL


def _decodes_to(data: bytes, parts) -> bool:
    reader = RangeReader(data)
    try:
        for groups, tables, which in parts:
            back = reader.read_flat([len(g) for g in groups], tables, which)
            if len(groups) and not np.array_equal(back, np.concatenate(groups)):
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
    return RangeReader(data).read_flat([math.prod(shape[1:])] * shape[0], tables).reshape(shape)
