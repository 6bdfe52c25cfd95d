"""Targets: the highest quality whose file fits a size, or the smallest file that reaches a PSNR or
MS-SSIM, found by bisection over the fine quality scale (256 positions a level)."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from . import metrics
from .config import AUTO, DEFAULT_MAX_PIXELS
from .container import FRACTION
from .quality import Position, of_position

KINDS = ("size", "psnr", "ms-ssim")
SIZE_UNITS = {"": 1, "b": 1, "kb": 1000, "mb": 1000**2, "kib": 1024, "mib": 1024**2}


class TargetError(ValueError):
    """No quality meets the target."""


class Target(NamedTuple):
    kind: str  # "size": at most `value` bytes; "psnr": at least `value` dB; "ms-ssim": at least `value`
    value: float


class Reached(NamedTuple):
    """What a target search chose and what its file measures."""

    quality: float  # 0-100
    level: float  # the position as the gains see it
    bytes: int
    psnr: float
    ms_ssim: float
    tries: int  # files coded during the search


def parse_size(text: str) -> int:
    """A size such as 40KB, 40kB, 1.5MB, 64KiB or 40000 (bytes), as bytes; KB is 1000 bytes, as cwebp's."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", text)
    unit = match and match.group(2).lower()
    if not match or unit not in SIZE_UNITS:
        raise ValueError(f"{text!r} is not a size such as 40KB, 1.5MB, 64KiB or 40000")
    value = float(match.group(1)) * SIZE_UNITS[unit]
    if not math.isfinite(value) or value >= 2**63:
        raise ValueError(f"{text!r} is more bytes than any file holds")
    size = math.floor(value)
    if size < 1:
        raise ValueError(f"{text!r} is less than a byte")
    return size


def check(target: Target) -> Target:
    """A target with a known kind and a value it can mean, or ValueError."""
    if target.kind not in KINDS:
        raise ValueError(f"target kind {target.kind!r} is not one of {', '.join(KINDS)}")
    value = float(target.value)
    if not math.isfinite(value) or value <= 0 or (target.kind == "ms-ssim" and value > 1):
        raise ValueError(f"a {target.kind} target of {target.value} cannot be met (ms-ssim is 0..1)")
    return Target(target.kind, value)


def compress_to(
    image,
    target: Target,
    weights=None,
    coder: str = AUTO,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    metadata: str = "all",
    precision: str = "auto",
) -> tuple[bytes, Reached]:
    """The .cae file for a target and what it reached: for "size" the highest quality whose file
    (header and metadata included) fits; for "psnr" and "ms-ssim" the lowest quality that reaches it.
    TargetError when none does; nothing is returned then. `image`, `weights` and the rest are as
    for codec.compress."""
    from . import codec  # torch loads here, so the command line can check a target's text first
    from . import weights as weights_mod

    target = check(target)
    bf16 = codec.use_bf16(precision)
    source = codec.prepare(image, weights, max_pixels, metadata)
    w = weights_mod.load(weights, source.weights_id)
    original = source.rgb if source.mode != "L" else source.rgb[:, :, :1]
    tries: dict[int, tuple[bytes, float, float]] = {}

    def measure(index: int) -> tuple[bytes, float, float]:
        if index not in tries:
            at = Position(1 + index // FRACTION, index % FRACTION)
            data = min(codec.compress_source(source, at, weights, (coder,), None, bf16).values(), key=len)
            psnr = ssim = math.nan
            if target.kind != "size":
                decoded = np.asarray(codec.decompress(data, weights, max_pixels, precision))
                decoded = decoded[:, :, None] if decoded.ndim == 2 else decoded[:, :, :3]
                psnr = metrics.psnr(original, decoded)
                ssim = metrics.ms_ssim(original, decoded) if target.kind == "ms-ssim" else math.nan
            tries[index] = (data, psnr, ssim)
        return tries[index]

    meets: Callable[[int], bool] = {
        "size": lambda i: len(measure(i)[0]) <= target.value,
        "psnr": lambda i: measure(i)[1] >= target.value,
        "ms-ssim": lambda i: measure(i)[2] >= target.value,
    }[target.kind]
    top = FRACTION * (w.levels - 1)
    if target.kind == "size":
        index = highest(meets, 0, top)
    else:  # the lowest that reaches it: one above the highest that does not
        below = highest(lambda i: not meets(i), 0, top)
        index = 0 if below is None else None if below == top else below + 1
    if index is None:
        raise TargetError(_unmet(target, measure(0 if target.kind == "size" else top)))
    data, psnr, ssim = measure(index)
    level, fraction = 1 + index // FRACTION, index % FRACTION
    quality = round(of_position(level, fraction, w.levels), 2)
    return data, Reached(quality, level + fraction / FRACTION, len(data), psnr, ssim, len(tries))


def highest(fits: Callable[[int], bool], low: int, high: int) -> int | None:
    """The highest index in low..high for which `fits` holds, by bisection: it is taken to hold up
    to some index and not after (a file's size rises with its quality). None when it never holds."""
    if fits(high):
        return high
    if not fits(low):
        return None
    while high - low > 1:  # fits(low), not fits(high)
        middle = (low + high) // 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    return low


def _unmet(target: Target, nearest: tuple[bytes, float, float]) -> str:
    data, psnr, ssim = nearest
    if target.kind == "size":
        return f"no quality fits {target.value:,.0f} bytes: quality 0 takes {len(data):,}"
    reached = f"{psnr:.2f} dB" if target.kind == "psnr" else f"MS-SSIM {ssim:.4f}"
    wanted = f"{target.value:g} dB" if target.kind == "psnr" else f"{target.value:g}"
    return f"no quality reaches {target.kind} {wanted}: quality 100 gives {reached}"
