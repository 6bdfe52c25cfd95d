"""The classic codecs the benchmark measures cae-codec against, all through Pillow (no torch here, so
the command line can list them without loading the network). JPEG XL and HEIF come from Pillow
plugins, installed with the `peers` extra: pip install 'cae-codec[peers]'."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Classic:
    """A Pillow codec: its format name, the qualities swept, and fixed save options."""

    fmt: str
    qualities: tuple[int, ...]
    options: dict = field(default_factory=dict)
    feature: str | None = None  # Pillow feature that must be present
    quality_key: str = "quality"
    color_options: dict = field(default_factory=dict)  # options for 3-channel images only
    plugin: str | None = None  # a module that adds the format to Pillow when imported


DEFAULT_PEERS = ("jpeg", "webp")  # what bench compares with unless --codecs asks for more (fast ones)
CLASSICS = {
    "jpeg": Classic("JPEG", tuple(range(5, 100, 5)), feature="jpg"),
    "webp": Classic("WEBP", tuple(range(0, 100, 5)), {"method": 6}, feature="webp"),
    "avif": Classic("AVIF", tuple(range(0, 100, 5)), feature="avif"),
    # JPEG 2000's "quality" is the target PSNR of its single layer, in dB. Lossy JPEG 2000 uses the
    # 9/7 wavelet (irreversible) and a colour transform (mct); Pillow's defaults, the lossless
    # 5/3 wavelet on raw RGB, take about twice the bits.
    "jpeg2000": Classic(
        "JPEG2000",
        tuple(range(20, 52, 2)),
        {"quality_mode": "dB", "irreversible": True},
        "jpg_2000",
        "quality_layers",
        {"mct": 1},
    ),
    # Optional peers; quality 100 would be lossless, so the sweeps stop at 95.
    "jpegxl": Classic("JXL", tuple(range(5, 100, 5)), plugin="pillow_jxl"),
    "heif": Classic("HEIF", tuple(range(0, 100, 5)), plugin="pillow_heif"),
}
PEERS_EXTRA = "pip install 'cae-codec[peers]'"


def available(name: str) -> bool:
    """Whether this Pillow build (with its plugins) has the codec; registers a plugin's format."""
    from PIL import features

    spec = CLASSICS[name]
    if spec.plugin is not None:
        try:
            module = importlib.import_module(spec.plugin)
        except ImportError:
            return False
        register = getattr(module, "register_heif_opener", None)  # pillow_heif registers on request
        if register is not None:
            register()
    return spec.feature is None or bool(features.check(spec.feature))
