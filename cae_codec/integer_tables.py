"""Integer probability tables: a model's densities turned into what the coders use.

Tables are integer frequencies summing to 2**16 with an escape slot (range_coder.RangeTables); a
table's entropy also sets the zstd coder's bit widths and channel order.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .range_coder import RANGE_PRECISION, RangeTables

RANGE_HALF_WIDTH = 256  # tables cover at most median +- this many steps; the rest is escaped
# Tables always cover centre +- this many steps, even where the model gives them almost no mass:
# on images unlike the training data such values do occur, and a 16-bit floor (16 bits at most)
# costs far less than an escape (the escape symbol plus 21 bits).
RANGE_MIN_HALF = 16


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


def gaussian_tables(scales: np.ndarray) -> RangeTables:
    """Integer tables of a zero-mean discretized Gaussian (convolved with U(-1/2, 1/2)) per scale."""
    half = max(int(np.ceil(8 * scales.max())), RANGE_MIN_HALF)
    k = np.arange(-half, half + 1, dtype=np.float64)
    upper = [_ndtr((0.5 - np.abs(k)) / s) for s in scales]
    lower = [_ndtr((-0.5 - np.abs(k)) / s) for s in scales]
    return quantize_pmf(np.array(upper) - np.array(lower), half)


def _ndtr(x: np.ndarray) -> np.ndarray:
    return 0.5 * np.vectorize(math.erfc)(-x / math.sqrt(2))


def scale_index(log_sigma: np.ndarray | torch.Tensor, bounds: np.ndarray) -> np.ndarray:
    """Which table codes each y symbol: exact comparisons of log sigma with the table's bounds (as
    np.searchsorted(side="right"); torch's bucketize gives the same answer on 2 threads, twice as fast)."""
    if isinstance(log_sigma, torch.Tensor):
        return torch.bucketize(log_sigma, torch.from_numpy(bounds), right=True).numpy()
    return np.searchsorted(bounds, log_sigma, side="right")


def table_entropy(tables: RangeTables) -> np.ndarray:
    """Bits per symbol of each channel's integer table (used to order channels for zstd)."""
    bits = []
    for f in tables.freqs:
        p = f / f.sum()
        bits.append(float(-(p * np.log2(p)).sum()))
    return np.array(bits)
