"""The classic codecs the benchmark measures cae-codec against, all through Pillow (no torch here, so
the command line can list them without loading the network)."""

from __future__ import annotations

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
}


def available(name: str) -> bool:
    """Whether this Pillow build has the codec."""
    from PIL import features

    spec = CLASSICS[name]
    return spec.feature is None or bool(features.check(spec.feature))
