"""The classic codecs the benchmark measures cae-codec against, all through Pillow (no torch here, so
the command line can list them without loading the network). JPEG XL and HEIF come from Pillow
plugins, installed with the `peers` extra: pip install 'cae-codec[peers]'."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field


def strip_jpeg(data: bytes) -> bytes:
    """A JPEG without its APPn (JFIF, EXIF, ICC, XMP) and COM segments: what decoders need and no
    more (they take three components without JFIF as YCbCr)."""
    out, pos = bytearray(data[:2]), 2  # SOI
    while pos + 4 <= len(data) and data[pos] == 0xFF and data[pos + 1] not in (0xDA, 0xD9):
        size = 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
        if not (0xE0 <= data[pos + 1] <= 0xEF or data[pos + 1] == 0xFE):
            out += data[pos : pos + size]
        pos += size
    return bytes(out + data[pos:])


def strip_j2k(data: bytes) -> bytes:
    """A JPEG 2000 codestream without the COM segments of its main header (OpenJPEG writes "Created
    by OpenJPEG version ...", 37 bytes: 0.29 bpp of a 32x32 image)."""
    if data[:2] != b"\xff\x4f":
        raise ValueError("not a JPEG 2000 codestream (a JP2 file? save with no_jp2=True)")
    out, pos = bytearray(data[:2]), 2
    while pos + 4 <= len(data) and data[pos] == 0xFF and data[pos + 1] != 0x90:  # up to the first tile
        size = 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
        if data[pos + 1] != 0x64:
            out += data[pos : pos + size]
        pos += size
    return bytes(out + data[pos:])


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
    strip: Callable[[bytes], bytes] | None = None  # removes metadata the encoder wrote unasked


COMPARE_PEERS = ("webp", "avif", "jpeg", "jpegxl", "heif")  # what compare shows beside cae-codec
DEFAULT_PEERS = ("jpeg", "webp")  # what bench compares with unless --codecs asks for more (fast ones)
CLASSICS = {
    "jpeg": Classic("JPEG", tuple(range(5, 100, 5)), feature="jpg", strip=strip_jpeg),
    "webp": Classic("WEBP", tuple(range(0, 100, 5)), {"method": 6}, feature="webp"),  # its slowest
    "avif": Classic("AVIF", tuple(range(0, 100, 5)), {"speed": 0}, feature="avif"),  # its slowest
    # JPEG 2000's "quality" is the target PSNR of its single layer, in dB. Lossy JPEG 2000 uses the
    # 9/7 wavelet (irreversible) and a colour transform (mct); Pillow's defaults, the lossless
    # 5/3 wavelet on raw RGB, take about twice the bits.
    "jpeg2000": Classic(
        "JPEG2000",
        tuple(range(20, 52, 2)),
        {"quality_mode": "dB", "irreversible": True, "no_jp2": True},  # the codestream, no JP2 boxes
        "jpg_2000",
        "quality_layers",
        {"mct": 1},
        strip=strip_j2k,
    ),
    # Optional peers; quality 100 would be lossless, so the sweeps stop at 95.
    "jpegxl": Classic("JXL", tuple(range(5, 100, 5)), plugin="pillow_jxl"),
    "heif": Classic(
        "HEIF", tuple(range(0, 100, 5)), {"enc_params": {"preset": "placebo"}}, plugin="pillow_heif"
    ),  # x265's slowest preset
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


def settings() -> dict[str, dict]:
    """Each peer's fixed save options and whether its files are stripped, for results.json."""
    return {
        name: {
            "format": spec.fmt,
            "options": {**spec.options, **spec.color_options},
            "stripped": bool(spec.strip),
        }
        for name, spec in CLASSICS.items()
    }
