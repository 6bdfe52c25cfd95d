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


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    taps = np.exp(-((np.arange(size) - size // 2) ** 2) / (2 * sigma**2))
    return taps / taps.sum()


def _filter_valid(stack: np.ndarray, taps: np.ndarray) -> np.ndarray:
    """Separable 'valid' convolution over the first two axes of an (H, W, K) stack."""
    windows = np.lib.stride_tricks.sliding_window_view(stack, len(taps), axis=0)
    rows = windows @ taps
    return np.lib.stride_tricks.sliding_window_view(rows, len(taps), axis=1) @ taps


def _ssim_terms(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Mean SSIM and mean contrast-structure term of two float (H, W, C) images in 8-bit range."""
    mx, my, xx, yy, xy = np.split(
        _filter_valid(np.concatenate([x, y, x * x, y * y, x * y], axis=2), _gaussian_window()), 5, axis=2
    )
    vx, vy, cov = xx - mx * mx, yy - my * my, xy - mx * my
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    cs = (2 * cov + c2) / (vx + vy + c2)
    s = (2 * mx * my + c1) / (mx**2 + my**2 + c1) * cs
    return float(s.mean(axis=(0, 1)).mean()), float(cs.mean(axis=(0, 1)).mean())


def _as_float(a: np.ndarray) -> np.ndarray:
    return (a[:, :, None] if a.ndim == 2 else a).astype(np.float64)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM (Wang et al. 2004): 11x11 Gaussian window, sigma 1.5, K1=0.01, K2=0.03, 8-bit range.

    Computed per channel and averaged over RGB; only windows wholly inside the image count,
    so images under 11 pixels a side give NaN.
    """
    if min(a.shape[:2]) < 11:
        return float("nan")
    return _ssim_terms(_as_float(a), _as_float(b))[0]


MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)  # Wang, Simoncelli and Bovik 2003


def ms_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """MS-SSIM (Wang et al. 2003) over as many of its 5 scales as the image allows (each halves it by
    2x2 averaging; weights renormalised): 2 for 32x32, all 5 from 176x176. NaN under 11 pixels."""
    scales = min(5, 1 + int(np.log2(min(a.shape[:2]) / 11))) if min(a.shape[:2]) >= 11 else 0
    if scales == 0:
        return float("nan")
    weights = np.array(MS_SSIM_WEIGHTS[:scales]) / sum(MS_SSIM_WEIGHTS[:scales])
    x, y, terms = _as_float(a), _as_float(b), []
    for s in range(scales):
        full, cs = _ssim_terms(x, y)
        terms.append(full if s == scales - 1 else cs)
        h, w = x.shape[0] // 2 * 2, x.shape[1] // 2 * 2
        x, y = (v[:h, :w].reshape(h // 2, 2, w // 2, 2, -1).mean(axis=(1, 3)) for v in (x, y))
    return float(np.prod(np.maximum(terms, 1e-6) ** weights))
