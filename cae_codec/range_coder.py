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
                values = unzigzag(codes.astype(np.int64))
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
        encoder.encode(zigzag(values).astype(np.int32), constriction.stream.model.Uniform(1 << ESCAPE_BITS))


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
