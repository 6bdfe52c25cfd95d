"""What this machine's CPU has, read once: the codec chooses its code paths by it, never by what the
machine it was developed on had."""

from __future__ import annotations

import functools
import platform

import torch


@functools.cache
def flags() -> frozenset[str]:
    """The CPU's feature flags as Linux names them (empty where /proc/cpuinfo cannot be read)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def native_bf16() -> bool:
    """Whether bfloat16 convolutions run on native units (AMX or AVX512-BF16), so beat float32."""
    return platform.machine() in ("x86_64", "AMD64") and bool(flags() & {"amx_bf16", "avx512_bf16"})


def bf16_for(precision: str, cpu_device: bool = True) -> bool:
    """Whether a precision choice (config.PRECISIONS) means bfloat16 here: "bf16", or "auto" on a
    CPU with bf16 units (and the work on the CPU)."""
    from .config import PRECISIONS

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    return precision == "bf16" or (precision == "auto" and cpu_device and native_bf16())


def fast_int8() -> bool:
    """Whether int8 matrix products have native units (AMX-INT8 or VNNI), so beat float32 ones."""
    if not hasattr(torch, "_int_mm"):
        return False
    return bool(flags() & {"amx_int8", "avx512_vnni", "avx_vnni"})


def describe() -> str:
    """The CPU's model name and the units the codec uses, for benchmark reports."""
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            name = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), name)
    except OSError:
        pass
    units = [u for u in ("amx_bf16", "avx512_bf16", "amx_int8", "avx512_vnni", "avx_vnni") if u in flags()]
    return f"{name} ({', '.join(units) or 'no bf16/int8 units'})"
