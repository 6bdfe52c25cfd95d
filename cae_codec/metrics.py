"""Quality and rate measures, on 8-bit images as the field reports them."""

from __future__ import annotations

import numpy as np


def bpp(num_bytes: int, width: int, height: int) -> float:
    """Bits per pixel of a whole file."""
    return 8 * num_bytes / (width * height)


def mse(a: np.ndarray, b: np.ndarray) -> float:
    """Mean squared error between two uint8 images, in 8-bit levels squared."""
    return float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB for 8-bit images; infinite for identical images."""
    err = mse(a, b)
    return float("inf") if err == 0 else 10 * np.log10(255**2 / err)
