"""The codec: image <-> .cae bytes, one plain step at a time.

image -> (rgb, alpha, mode) -> tensor -> latent -> integers -> bytes, and back.
"""

from __future__ import annotations

import functools
import io
import math
import os
import warnings
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import BinaryIO, NamedTuple

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from . import cpu, packing
from . import metadata as metadata_mod
from . import weights as weights_mod
from .config import (
    AUTO,
    BATCH_PIXELS,
    CODER_CHOICES,
    DEFAULT_MAX_PIXELS,
    ZSTD_MAX_LEVEL,
    ZSTD_MIN_PIXELS,
)
from .container import CODERS, CaeFile, FormatError, Header, folded_size, join_segments, pack, unpack
from .latent_codecs import Symbols, hyper_features
from .metadata import InputWarning
from .model import SEGMENT
from .quality import Position, position
from .tiling import run_tiled, tile_count, tiling

WeightsArg = str | os.PathLike | None
# Called as work on one large image goes on: (steps done, steps in all). A step is a segment coded,
# or a tile of g_s decoded, so a 24 MP photo reports about 40 steps.
Progress = Callable[[int, int], None]


class _Steps:
    """Counts steps done and tells a Progress callback (if any)."""

    def __init__(self, progress: Progress | None, total: int) -> None:
        self.progress, self.total, self.done = progress, total, 0

    def __call__(self) -> None:
        self.done += 1
        if self.progress is not None:
            self.progress(self.done, self.total)


# How Pillow modes reach the network: everything becomes L, RGB or RGBA first.
CONVERSIONS = {"1": "L", "F": "L", "LA": "RGBA", "PA": "RGBA"}
SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")


class FrameWarning(InputWarning):
    """An input had several frames or pages and only the first was kept."""


def _foreign_profile(icc: bytes | None) -> bool:
    """An ICC profile other than sRGB (pixels without a profile are read as sRGB anyway)."""
    if not icc:
        return False
    try:
        from PIL import ImageCms

        return "srgb" not in ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(icc))).lower()
    except (ImportError, OSError, ImageCms.PyCMSError):
        return True  # unreadable: say it is dropped


def warn_about_losses(image: Image.Image, metadata: str = "all") -> None:
    """Say what the .cae file will not keep: a colour profile left out by `metadata`, a 1-bit
    image's compactness, and the low bits of 16-bit samples."""
    if "icc" not in metadata_mod.kinds(metadata) and _foreign_profile(image.info.get("icc_profile")):
        warnings.warn(
            "its ICC colour profile is not kept; colour-managed viewers may show colours slightly "
            "differently (the pixels are coded as they are)",
            InputWarning,
            stacklevel=3,
        )
    if image.mode == "1":
        warnings.warn(
            "a 1-bit image is coded as 8-bit grayscale; a lossless 1-bit format is likely far smaller",
            InputWarning,
            stacklevel=3,
        )
    if image.mode in SIXTEEN_BIT:
        warnings.warn(
            f"a {image.mode} image keeps only the high 8 bits of each sample (cae-codec codes 8 bits)",
            InputWarning,
            stacklevel=3,
        )


def read_image(path: str | os.PathLike | BinaryIO, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open an image file (a path or binary stream) fully, upright by its EXIF orientation; first frame."""
    if isinstance(path, (str, os.PathLike)) and os.path.isfile(path) and os.path.getsize(path) == 0:
        raise ValueError("empty file")
    heif = _heif_opener()
    try:
        with warnings.catch_warnings():
            # Our own pixel limit is checked right after opening, before any pixel is decoded.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                _check_pixels(image.width, image.height, max_pixels)
                frames = getattr(image, "n_frames", 1)
                image.load()
                upright = metadata_mod.upright(image)
    except Image.DecompressionBombError:
        raise ValueError(
            f"image is over the limit of {max_pixels} pixels (max_pixels, --max-pixels)"
        ) from None
    except UnidentifiedImageError:
        if not heif and _looks_like_heif(path):
            raise ValueError("a HEIF/HEIC image, which needs pillow-heif: pip install pillow-heif") from None
        raise ValueError("not an image file, or a format Pillow cannot read") from None
    except (OSError, SyntaxError) as e:
        if isinstance(e, OSError) and e.errno is not None:
            raise  # a file-system error: missing, a directory, no permission
        raise ValueError(f"corrupt or truncated image ({e})") from None
    if frames > 1:
        warnings.warn(f"{frames} frames; only the first is kept", FrameWarning, stacklevel=2)
    return upright


@functools.cache
def _heif_opener() -> bool:
    """Register pillow-heif's opener where it is installed, so phones' HEIC photos open; False if not."""
    try:
        import pillow_heif
    except ImportError:
        return False
    pillow_heif.register_heif_opener()
    return True


HEIF_BRANDS = (b"heic", b"heix", b"hevc", b"heim", b"heis", b"mif1", b"msf1", b"avif")


def _looks_like_heif(source) -> bool:
    """Whether a file starts as an ISO-BMFF HEIF/HEIC one does (an ftyp box with a HEIF brand)."""
    try:
        if isinstance(source, (str, os.PathLike)):
            with open(source, "rb") as f:
                head = f.read(12)
        else:
            source.seek(0)
            head = source.read(12)
            source.seek(0)
    except (OSError, AttributeError):
        return False
    return head[4:8] == b"ftyp" and head[8:12] in HEIF_BRANDS


def split_image(
    image: Image.Image | np.ndarray, metadata: str = "all"
) -> tuple[np.ndarray, np.ndarray | None, str]:
    """An image as (rgb uint8 HxWx3, alpha uint8 HxW or None, stored mode)."""
    if isinstance(image, np.ndarray):
        image = _array_to_image(image)
    warn_about_losses(image, metadata)
    if image.mode in SIXTEEN_BIT:
        # Pillow's convert("L") clips 16-bit values at 255; keep the high byte instead.
        image = Image.fromarray((np.asarray(image).astype(np.int64) >> 8).clip(0, 255).astype(np.uint8), "L")
    elif image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif image.mode in CONVERSIONS:
        image = image.convert(CONVERSIONS[image.mode])
    elif image.mode not in ("L", "RGB", "RGBA"):
        image = image.convert("RGB")
    mode = image.mode
    rgb = np.asarray(image.convert("RGB"), dtype=np.uint8)
    alpha = np.asarray(image.getchannel("A"), dtype=np.uint8) if mode == "RGBA" else None
    return rgb, alpha, mode


def _array_to_image(array: np.ndarray) -> Image.Image:
    if array.dtype != np.uint8:
        raise TypeError(f"image arrays must be uint8, not {array.dtype}")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 2:
        return Image.fromarray(array, "L")
    if array.ndim == 3 and array.shape[2] in (3, 4):
        return Image.fromarray(array, "RGB" if array.shape[2] == 3 else "RGBA")
    raise TypeError(f"image arrays must be HxW, HxWx1, HxWx3 or HxWx4, not {array.shape}")


def to_tensor(rgb: np.ndarray, stride: int) -> torch.Tensor:
    """uint8 HxWx3 to a (1,3,H',W') float tensor in [0,1], edge-padded to multiples of `stride`."""
    return _as_float(to_pixel_tensor(rgb, stride))


def to_pixel_tensor(rgb: np.ndarray, multiple: int) -> torch.Tensor:
    """uint8 HxWx3 to a (1,3,H',W') uint8 view, edge-padded to multiples of `multiple`; the network
    sees it as floats one tile at a time, so a large image never exists as floats whole."""
    h, w = rgb.shape[:2]
    if h % multiple or w % multiple:
        rgb = np.pad(rgb, ((0, -h % multiple), (0, -w % multiple), (0, 0)), mode="edge")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # a read-only array: the tensor is only ever read
        # The batch axis is added before the permute, so its stride is the image's size: with a
        # stride of 3, convolutions could not tell the layout is channels-last and copied it.
        return torch.from_numpy(np.asarray(rgb, dtype=np.uint8)).unsqueeze(0).permute(0, 3, 1, 2)


def _as_float(x: torch.Tensor) -> torch.Tensor:
    return x.float().div_(255) if x.dtype == torch.uint8 else x  # keeps x's memory format


def _as_uint8(x_hat: torch.Tensor) -> torch.Tensor:
    return x_hat.clamp(0, 1).mul(255).round().to(torch.uint8)


def to_pixels(x_hat: torch.Tensor, height: int, width: int) -> np.ndarray:
    """Decoder output to uint8 HxWx3, cropped to the original size."""
    x = x_hat if x_hat.dtype == torch.uint8 else _as_uint8(x_hat)
    return x[0, :, :height, :width].permute(1, 2, 0).numpy()


def _level_tensor(level: float) -> torch.Tensor:
    """A level (1-based, maybe between two) as the networks take it: 0-based, a float only between
    levels, so whole levels run exactly as before fine qualities existed."""
    return torch.tensor([int(level) - 1]) if float(level).is_integer() else torch.tensor([float(level) - 1])


@torch.inference_mode()
def analyse(
    w: weights_mod.Weights,
    x: torch.Tensor,
    level: float,
    tile: int | None = None,
    channels_last: bool = False,
    bf16: bool = False,
) -> torch.Tensor:
    """g_a, tile by tile: an image tensor (float in [0,1], or uint8) to the unquantized latent y
    at a level (Position.value); `channels_last` for images over BATCH_PIXELS (tiling.run_tiled),
    `bf16` in bfloat16 (use_bf16)."""
    level = _level_tensor(level)
    cfg = w.model.config
    tile, halo, _ = tiling(cfg.stride, tile)
    return run_tiled(
        lambda part: w.model.analysis(_as_float(part), level, bf16),
        x,
        cfg.M,
        1 / cfg.stride,
        tile,
        halo,
        torch.float32,
        channels_last,
    )


@torch.inference_mode()
def encode_latent(w: weights_mod.Weights, x: torch.Tensor, level: float, tile: int | None = None) -> Symbols:
    """Image tensor to integers: g_a, then the latent codec of the model's prior (with the tables
    of the whole level at or above `level`: Position.tables)."""
    return w.latent.quantize(w, analyse(w, x, level, tile), math.ceil(level), tile)


@torch.inference_mode()
def encode_segment(
    w: weights_mod.Weights,
    pixels: torch.Tensor,
    box: Box,
    level: float,
    tile: int | None = None,
    channels_last: bool = False,
    bf16: bool = False,
) -> Symbols:
    """One segment's integers: g_a sees a halo across the segment's edges (so the latent is continuous
    over them), the latent codec only the segment's own latent."""
    stride = w.model.config.stride
    top, left, bottom, right = box
    halo = tiling(stride, tile)[1]
    ctop, cleft = max(0, top - halo), max(0, left - halo)
    crop = pixels[:, :, ctop : bottom + halo, cleft : right + halo]
    y = analyse(w, crop, level, tile, channels_last, bf16)
    core = y[:, :, (top - ctop) // stride : (bottom - ctop) // stride, (left - cleft) // stride :]
    tables = math.ceil(level)
    core = core[:, :, :, : (right - left) // stride].contiguous()
    return w.latent.quantize(w, core, tables, tile, bf16)


@torch.inference_mode()
def synthesize(
    w: weights_mod.Weights,
    y_hat: torch.Tensor,
    level: float,
    tile: int | None = None,
    pixels: bool = False,
    channels_last: bool = False,
    bf16: bool = False,
    on_tile: Callable[[], None] | None = None,
) -> torch.Tensor:
    """g_s, tile by tile: the dequantized latent to the decoder's output, as floats or (`pixels`)
    as uint8 values, rounded tile by tile so a large image never exists as floats whole;
    `channels_last` for images over BATCH_PIXELS (tiling.run_tiled), `bf16` in bfloat16 (use_bf16)."""
    level = _level_tensor(level)
    cfg = w.model.config
    tile, _, latent_halo = tiling(cfg.stride, tile)
    fn = (
        (lambda part: _as_uint8(w.model.synthesis(part, level, bf16)))
        if pixels
        else (lambda part: w.model.synthesis(part, level, bf16))
    )
    dtype = torch.uint8 if pixels else torch.float32
    return run_tiled(fn, y_hat, 3, cfg.stride, tile // cfg.stride, latent_halo, dtype, channels_last, on_tile)


@torch.inference_mode()
def decode_latent(
    w: weights_mod.Weights, symbols: Symbols, level: float, tile: int | None = None
) -> torch.Tensor:
    """Integers back to the decoder's output tensor."""
    return synthesize(w, w.latent.dequantize(w, symbols, math.ceil(level)), level, tile)


Box = tuple[int, int, int, int]  # (top, left, bottom, right) in pixels of the padded image


def segment_side(w: weights_mod.Weights, width: int, height: int, side: int | None = None) -> int:
    """The segment side for an image (model.SEGMENT unless `side`), or 0 when one segment holds it."""
    cfg = w.model.config
    side = SEGMENT[cfg.stride] if side is None else side
    if isinstance(side, bool) or not isinstance(side, int) or side < 1 or side % cfg.pad_multiple:
        raise ValueError(f"segment side must be a positive multiple of {cfg.pad_multiple}, not {side!r}")
    return 0 if width <= side and height <= side else side


def segment_boxes(w: weights_mod.Weights, width: int, height: int, side: int) -> list[Box]:
    """The segments of an image, raster order, in pixels of the padded image (docs/format.md)."""
    m = w.model.config.pad_multiple
    padded_h, padded_w = -(-height // m) * m, -(-width // m) * m
    side = side or max(padded_h, padded_w)
    return [
        (top, left, min(top + side, padded_h), min(left + side, padded_w))
        for top in range(0, padded_h, side)
        for left in range(0, padded_w, side)
    ]


def latent_shape(w: weights_mod.Weights, height: int, width: int) -> tuple[int, int, int]:
    """Shape of y for an image; with a hyperprior the image is padded so z has whole pixels."""
    cfg = w.model.config
    m = cfg.pad_multiple
    return (cfg.M, -(-height // m) * m // cfg.stride, -(-width // m) * m // cfg.stride)


def fold_count(width: int, height: int, multiple: int) -> int:
    """How many strips to cut a thin image into (1: none). An image whose shorter side is under the
    pad multiple is folded when that at least halves the padded area the networks run on: with a
    pad multiple of 64, a 1,000,000 x 1 image would pad to 64 rows, but folds into 64 strips of
    15,625 pixels, exactly the rows the padding needs."""
    if min(width, height) >= multiple:
        return 1
    longer, shorter = max(width, height), min(width, height)

    def padded(k: int) -> int:
        w, h = folded_size(width, height, k)
        return -(-w // multiple) * multiple * (-(-h // multiple) * multiple)

    best, k = 1, 2
    while k <= longer and shorter * k <= -(-longer // k) + 2 * multiple:
        if -(-longer // -(-longer // k)) == k and padded(k) < padded(best):  # every strip non-empty
            best = k
        k += 1
    return best if 2 * padded(best) <= padded(1) else 1


def fold(rgb: np.ndarray, strips: int) -> np.ndarray:
    """Cut an image along its longer side into `strips` strips (the last edge-padded) and stack them."""
    if strips == 1:
        return rgb
    h, w = rgb.shape[:2]
    if w >= h:
        length = -(-w // strips)
        rgb = np.pad(rgb, ((0, 0), (0, strips * length - w), (0, 0)), mode="edge")
        return rgb.reshape(h, strips, length, 3).transpose(1, 0, 2, 3).reshape(strips * h, length, 3)
    length = -(-h // strips)
    rgb = np.pad(rgb, ((0, strips * length - h), (0, 0), (0, 0)), mode="edge")
    return rgb.reshape(strips, length, w, 3).transpose(1, 0, 2, 3).reshape(length, strips * w, 3)


def unfold(rgb: np.ndarray, width: int, height: int, strips: int) -> np.ndarray:
    """The inverse of `fold`: the strips side by side again, cut to width x height."""
    if strips == 1:
        return rgb
    if width >= height:
        length = rgb.shape[1]
        whole = rgb.reshape(strips, height, length, 3).transpose(1, 0, 2, 3).reshape(height, -1, 3)
        return whole[:, :width]
    length = rgb.shape[0]
    whole = rgb.reshape(length, strips, width, 3).transpose(1, 0, 2, 3).reshape(-1, width, 3)
    return whole[:height]


def _check_pixels(width: int, height: int, max_pixels: int, error: type[ValueError] = ValueError) -> None:
    """The pixel count against the limit, before any pixel or weight is loaded (the padded area,
    which depends on the model's pad multiple and on folding, is checked once the model is known)."""
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, (int, np.integer)):
        raise TypeError(f"max_pixels must be an integer, not {type(max_pixels).__name__}")
    if width * height > max_pixels:
        raise error(f"{width}x{height} is over the limit of {max_pixels} pixels (max_pixels, --max-pixels)")


# A zstd block holds at most 128 KiB and costs at least 4 bytes (an RLE block), so no zstd frame
# expands more than this.
ZSTD_MAX_RATIO = 1 << 15


def _check_justified(f: CaeFile, w: weights_mod.Weights) -> None:
    """A file whose latent sections are too short to hold the latent its header claims is refused at
    once (FormatError): each value costs at least the cheapest symbol of its coder's tables (the
    range coder), or one bit packed and expanded at zstd's best ratio. So a crafted header that
    claims a huge thin image, which folding makes cheap to pad, costs no work."""
    h = f.header
    cfg = w.model.config
    width, height = h.coded_size
    values = math.prod(latent_shape(w, height, width))
    payload = sum(len(s) for s in f.segments)
    if h.coder == "range":
        tables = w.scale_tables if cfg.hyper_N else w.range_tables[h.tables - 1]
        capacity = 8 * payload / tables.cheapest_bits
    else:
        capacity = 8 * payload * ZSTD_MAX_RATIO / (1 if cfg.hyper_N else 8)
    if values > 2 * capacity:  # twice: a coder's stream may end a few bits short of the ideal cost
        raise FormatError(
            f"{h.width}x{h.height} needs more latent than its {payload:,} bytes can hold (corrupt or forged)"
        )


def _check_padded(
    m: int, width: int, height: int, max_pixels: int, error: type[ValueError] = ValueError
) -> None:
    """The limit counts the padded area the networks run on (sides padded to a multiple of `m`): a
    16,777,216 x 1 image passes width x height but pads to 16 or 64 rows, hundreds of millions of
    pixels."""
    padded_w, padded_h = -(-width // m) * m, -(-height // m) * m
    if padded_w * padded_h > max_pixels:
        raise error(
            f"{width}x{height} pads to {padded_w}x{padded_h}, over the limit of {max_pixels} pixels "
            "(max_pixels, --max-pixels)"
        )


ImageArg = Image.Image | np.ndarray | str | os.PathLike | bytes | bytearray | memoryview | BinaryIO


def _as_image(image: ImageArg, max_pixels: int) -> Image.Image | np.ndarray:
    """What compress accepts: a PIL image, a uint8 array, or an image file's path, bytes or stream."""
    if isinstance(image, (Image.Image, np.ndarray)):
        return image
    if isinstance(image, (str, os.PathLike)):
        return read_image(image, max_pixels)
    if isinstance(image, (bytes, bytearray, memoryview)):
        return read_image(io.BytesIO(bytes(image)), max_pixels)
    if hasattr(image, "read"):
        return read_image(image, max_pixels)
    raise TypeError(
        "image must be a PIL image, a uint8 array, or an image file's path, bytes or open file, "
        f"not {type(image).__name__}"
    )


def _as_bytes(data: bytes | bytearray | memoryview | str | os.PathLike | BinaryIO) -> bytes:
    """What decompress accepts: .cae bytes, or a .cae file's path or open binary stream."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    if isinstance(data, (str, os.PathLike)):
        return Path(data).read_bytes()
    if hasattr(data, "read"):
        chunk = data.read()
        if not isinstance(chunk, bytes):
            raise TypeError("decompress needs a stream opened in binary mode ('rb')")
        return chunk
    raise TypeError(f"data must be .cae bytes, a path or an open binary file, not {type(data).__name__}")


def compress(
    image: ImageArg,
    quality: float | None = None,
    weights: WeightsArg = None,
    coder: str = AUTO,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    segment: int | None = None,
    metadata: str = "all",
    precision: str = "auto",
    progress: Progress | None = None,
) -> bytes:
    """Compress an image to .cae bytes: a PIL image, a uint8 array (HxW, HxWx3, HxWx4), or an image
    file's path, bytes or open stream. `quality` 0-100 (quality.py; default the bundle's); coder
    "auto" keeps the smaller file of the coders worth trying at the image's size (auto_coders);
    `metadata` which of a PIL image's ICC profile, EXIF and XMP to keep ("all", "none", "icc,exif");
    `precision` of g_a on large images ("auto", "bf16", "fp32": use_bf16); `progress` is told of
    each segment coded."""
    if coder not in CODER_CHOICES:
        raise ValueError(f"coder must be one of {', '.join(CODER_CHOICES)}, not {coder!r}")
    files = compress_each(
        image, quality, weights, (coder,), max_pixels, segment, metadata, precision, progress
    )
    return min(files.values(), key=len)  # ties go to the first coder (zstd)


def auto_coders(width: int, height: int, tables: int = 1) -> tuple[str, ...]:
    """The coders that `auto` tries on an image of this size at the level whose tables code it: zstd
    only above ZSTD_MIN_PIXELS and up to ZSTD_MAX_LEVEL, where it ever made the smaller file."""
    worth = width * height > ZSTD_MIN_PIXELS and tables <= ZSTD_MAX_LEVEL
    return CODERS if worth else ("range",)


def use_bf16(precision: str) -> bool:
    """Whether g_a and g_s run in bfloat16 for `precision`: "bf16", or "auto" on a CPU with bf16
    units. Only images over BATCH_PIXELS ever do (with channels-last), so a small image's file does
    not depend on whether it was coded alone or in a batch."""
    return cpu.bf16_for(precision)


def _resolve(coders: tuple[str, ...], width: int, height: int, tables: int) -> tuple[str, ...]:
    """("auto",) as the coders it tries at this size and level; any other tuple as it is."""
    return auto_coders(width, height, tables) if coders == (AUTO,) else coders


def compress_each(
    image: ImageArg,
    quality: float | None = None,
    weights: WeightsArg = None,
    coders: tuple[str, ...] = CODERS,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    segment: int | None = None,
    metadata: str = "all",
    precision: str = "auto",
    progress: Progress | None = None,
) -> dict[str, bytes]:
    """The .cae file that each coder makes of one image (coders ("auto",): those auto_coders names);
    the network runs once. Without `weights`, the shipped model for the image's size
    (weights.default_id); `segment` overrides the side in pixels of a large image's segments."""
    bf16 = use_bf16(precision)  # a bad choice is refused before the image is read
    source = prepare(image, weights, max_pixels, metadata)
    return compress_source(source, quality, weights, coders, segment, bf16, progress)


def compress_source(
    source: Source,
    quality: float | Position | None,
    weights: WeightsArg,
    coders: tuple[str, ...] = (AUTO,),
    segment: int | None = None,
    bf16: bool = False,
    progress: Progress | None = None,
) -> dict[str, bytes]:
    """A prepared image's file from each coder, at a quality (0-100) or a Position of the fine scale;
    `bf16`: g_a in bfloat16 if the image is large enough (use_bf16); `progress` per segment."""
    w, at = _model_for(source, weights, quality)
    coders = _resolve(coders, source.width, source.height, at.tables)
    rgb = source.coded
    height, width = rgb.shape[:2]
    side = segment_side(w, width, height, segment)
    pixels = to_pixel_tensor(rgb, w.model.config.pad_multiple)
    sections: dict[str, list[bytes]] = {coder: [] for coder in coders}
    alone = _alone(width, height)
    boxes = segment_boxes(w, width, height, side)
    step = _Steps(progress, len(boxes))

    def code(box: Box) -> list[bytes]:
        symbols = encode_segment(w, pixels, box, at.value, channels_last=alone, bf16=alone and bf16)
        return [encode_symbols(w, symbols, at.tables, coder) for coder in coders]

    for coded in _segment_map(code, boxes):
        for coder, section in zip(coders, coded, strict=True):
            sections[coder].append(section)
        step()
    return {
        coder: _pack(source, w, at, coder, join_segments(parts), side) for coder, parts in sections.items()
    }


class Source(NamedTuple):
    """An image ready for the network: its pixels, its alpha plane's zstd frame and stored mode."""

    rgb: np.ndarray
    coded: np.ndarray  # the pixels the network codes: rgb, or its strips stacked (fold), made once
    alpha: bytes | None  # packed once, whatever the number of coders tried
    mode: str
    weights_id: int | None  # the shipped model for its size, when no weights are given
    fold: int = 1  # strips a thin image is cut into (fold_count)
    metadata: dict[str, bytes] = {}  # noqa: RUF012 (never mutated)

    @property
    def height(self) -> int:
        return self.rgb.shape[0]

    @property
    def width(self) -> int:
        return self.rgb.shape[1]


def prepare(
    image: ImageArg, weights: WeightsArg = None, max_pixels: int = DEFAULT_MAX_PIXELS, metadata: str = "all"
) -> Source:
    """An image read, checked and split for the network once, to be coded at one or more qualities."""
    keep = metadata_mod.kinds(metadata)  # a bad choice is refused before the image is read
    image = _as_image(image, max_pixels)
    if isinstance(image, Image.Image):  # as read_image does for files, so every entry point agrees
        image = metadata_mod.upright(image)
    found = metadata_mod.from_image(image, keep) if isinstance(image, Image.Image) else {}
    sections = metadata_mod.pack_sections(found)
    rgb, alpha, mode = split_image(image, metadata)
    height, width = rgb.shape[:2]
    _check_pixels(width, height, max_pixels)
    weights_id = None if weights is not None else weights_mod.default_id(width, height)
    m = weights_mod.load(weights, weights_id).model.config.pad_multiple
    strips = fold_count(width, height, m)
    _check_padded(m, *folded_size(width, height, strips), max_pixels)
    alpha_frame = packing.zstd_pack(alpha.tobytes()) if alpha is not None else None
    return Source(rgb, fold(rgb, strips), alpha_frame, mode, weights_id, strips, sections)


def _model_for(
    source: Source, weights: WeightsArg, quality: float | Position | None
) -> tuple[weights_mod.Weights, Position]:
    w = weights_mod.load(weights, source.weights_id)
    if isinstance(quality, Position):
        if quality.value > w.levels:
            raise ValueError(f"level {quality.value:g} is above the {w.levels} levels of {w.name}")
        return w, quality
    return w, Position(w.default_quality) if quality is None else position(quality, w.levels)


def _pack(
    source: Source, w: weights_mod.Weights, at: Position, coder: str, color: bytes, side: int = 0
) -> bytes:
    header = Header(
        source.mode,
        coder,
        at.level,
        w.id,
        source.width,
        source.height,
        side,
        fraction=at.fraction,
        fold=source.fold,
        metadata=bool(source.metadata),
    )
    return pack(CaeFile(header, color, source.alpha, source.metadata))


def compress_many(
    images: Iterable[ImageArg],
    quality: float | None = None,
    weights: WeightsArg = None,
    coder: str = AUTO,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    batch_size: int = 64,
    return_errors: bool = False,
    metadata: str = "all",
    precision: str = "auto",
) -> list[bytes]:
    """Compress many images, in order, to the same files `compress` makes of each (up to float
    rounding): small images of one size share the network's forward passes, `batch_size` at a time.
    With `return_errors`, an image that cannot be read gets its exception in its place instead of
    stopping the others."""
    if coder not in CODER_CHOICES:
        raise ValueError(f"coder must be one of {', '.join(CODER_CHOICES)}, not {coder!r}")
    each = compress_many_each(
        images, quality, weights, (coder,), max_pixels, batch_size, return_errors, metadata, precision
    )
    # ties go to the first coder (zstd)
    return [f if isinstance(f, Exception) else min(f.values(), key=len) for f in each]


def compress_many_each(
    images: Iterable[ImageArg],
    quality: float | None = None,
    weights: WeightsArg = None,
    coders: tuple[str, ...] = CODERS,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    batch_size: int = 64,
    return_errors: bool = False,
    metadata: str = "all",
    precision: str = "auto",
) -> list[dict[str, bytes]]:
    """`compress_each` for many images, in order, with compress_many's shared forward passes."""
    bf16 = use_bf16(precision)
    files: list[dict[str, bytes] | Exception | None] = []
    waiting: dict[tuple, list[tuple[int, Source]]] = {}
    for image in images:
        files.append(None)
        try:
            source = prepare(image, weights, max_pixels, metadata)
        except Exception as e:
            if not return_errors:
                raise
            files[-1] = e
            continue
        if _alone(source.width, source.height) or source.fold > 1:
            files[-1] = compress_source(source, quality, weights, coders, None, bf16)
            continue
        key = (source.weights_id, source.height, source.width)
        waiting.setdefault(key, []).append((len(files) - 1, source))
        if len(waiting[key]) == batch_size:
            _compress_batch(waiting.pop(key), files, quality, weights, coders)
    for group in waiting.values():
        _compress_batch(group, files, quality, weights, coders)
    return files


def _compress_batch(group: list[tuple[int, Source]], files: list, quality, weights, coders) -> None:
    """Same-size images through one forward pass; each gets every coder's file."""
    w, at = _model_for(group[0][1], weights, quality)
    coders = _resolve(coders, group[0][1].width, group[0][1].height, at.tables)
    m = w.model.config.pad_multiple
    x = torch.cat([to_pixel_tensor(source.rgb, m) for _, source in group])
    y = analyse(w, x, at.value)
    for (i, source), symbols in zip(group, w.latent.quantize_many(w, y, at.tables), strict=True):
        files[i] = {c: _pack(source, w, at, c, encode_symbols(w, symbols, at.tables, c)) for c in coders}


def encode_symbols(w: weights_mod.Weights, symbols: Symbols, tables: int, coder: str) -> bytes:
    """The latent's integers to the colour section, by the chosen entropy coder with a level's tables."""
    return w.latent.write(w, symbols, tables, coder)


def decode_symbols(w: weights_mod.Weights, data: bytes, header: Header) -> Symbols:
    """The colour section back to the latent's integers (header: a segment's or the coded image's)."""
    shape = latent_shape(w, header.height, header.width)
    return w.latent.read(w, data, shape, header.tables, header.coder)


def dequantize_segments(
    w: weights_mod.Weights, f: CaeFile, on_segment: Callable[[], None] | None = None
) -> torch.Tensor:
    """Every segment's colour section decoded into one latent y_hat (1, M, h, w) for g_s."""
    h = f.header
    if h.segment % w.model.config.pad_multiple:
        raise FormatError(f"segment side {h.segment} is not a multiple of {w.model.config.pad_multiple}")
    stride = w.model.config.stride
    width, height = h.coded_size
    y_hat = torch.empty(1, *latent_shape(w, height, width))
    boxes = segment_boxes(w, width, height, h.segment)

    def decode(item: tuple[Box, bytes]) -> torch.Tensor:
        (top, left, bottom, right), data = item
        part = replace(h, width=right - left, height=bottom - top, segment=0, fold=1)
        return w.latent.dequantize(w, decode_symbols(w, data, part), h.tables)

    for (top, left, bottom, right), y in zip(
        boxes, _segment_map(decode, list(zip(boxes, f.segments, strict=True))), strict=True
    ):
        y_hat[:, :, top // stride : bottom // stride, left // stride : right // stride] = y
        if on_segment is not None:
            on_segment()
    return y_hat


def _segment_map(fn: Callable, items: list) -> Iterator:
    """fn over one image's segments, results in order: two at a time where there are two cores,
    since a segment's entropy coding holds one core (and Python's lock) while the other segment's
    networks run (a 14 MP decode's entropy and h_s: 7.2 -> 5.9 s). Segments are coded alone, so the
    bytes are the same either way. Leaving early (an error, Ctrl-C) waits for the running ones only."""
    if len(items) < 2 or (os.cpu_count() or 1) < 2:
        yield from map(fn, items)
        return
    pool = ThreadPoolExecutor(2)
    try:
        yield from pool.map(fn, items)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def read_header(data: bytes | bytearray | memoryview | str | os.PathLike | BinaryIO) -> Header:
    """The checked header of .cae bytes (or a file's path or stream), without decoding the image."""
    return unpack(_as_bytes(data)).header


def _weights_for(header: Header, weights: WeightsArg) -> weights_mod.Weights:
    if weights is None and header.weights_id not in weights_mod.REGISTRY:
        raise FormatError(f"file was {weights_mod.not_installed(header.weights_id)}")
    w = weights_mod.load(weights, header.weights_id)
    if w.id != header.weights_id:
        raise FormatError(f"file was made with weights id {header.weights_id}, not {w.name} (id {w.id})")
    if header.position > w.levels:
        raise FormatError(f"quality level {header.position:g} is above the {w.levels} levels of {w.name}")
    return w


def decompress(
    data: bytes | bytearray | memoryview | str | os.PathLike | BinaryIO,
    weights: WeightsArg = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    precision: str = "auto",
    progress: Progress | None = None,
) -> Image.Image:
    """Decode .cae bytes (or a .cae file's path or open stream) to a PIL image of the original size
    and mode (L, RGB or RGBA); `precision` of g_s on large images (use_bf16); `progress` is told of
    each segment entropy-decoded and each tile of g_s."""
    bf16 = use_bf16(precision)
    f = unpack(_as_bytes(data))
    return _finish(f.header, *_entropy_decode(f, weights, max_pixels, progress), bf16=bf16)


def check(
    data: bytes | bytearray | memoryview | str | os.PathLike | BinaryIO,
    weights: WeightsArg = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> CaeFile:
    """Every check decompress makes before it decodes the latent: the header, the weights and quality
    it names, the limits, whether the sections can hold what the header claims, the alpha plane and
    the metadata frames. Raises FormatError (or WeightsError); returns the parsed file."""
    f = unpack(_as_bytes(data))
    h = f.header
    w = _checked_weights(f, weights, max_pixels)
    if h.segment % w.model.config.pad_multiple:
        raise FormatError(f"segment side {h.segment} is not a multiple of {w.model.config.pad_multiple}")
    _side_sections(f)
    return f


def _checked_weights(f: CaeFile, weights: WeightsArg, max_pixels: int) -> weights_mod.Weights:
    """The weights a file names, after the checks that need no decoding: the pixel limit (before the
    weights load), the padded area for their pad multiple, and the sections' room for the latent."""
    h = f.header
    _check_pixels(h.width, h.height, max_pixels, FormatError)
    w = _weights_for(h, weights)
    _check_padded(w.model.config.pad_multiple, *h.coded_size, max_pixels, FormatError)
    _check_justified(f, w)
    return w


def _entropy_decode(
    f: CaeFile, weights: WeightsArg, max_pixels: int, progress: Progress | None = None
) -> tuple[weights_mod.Weights, torch.Tensor, np.ndarray | None, dict, _Steps]:
    """Everything before g_s, every section checked: the weights, y_hat, the alpha plane, the
    metadata as Image.info holds it, and the steps counted so far (of segments and g_s tiles)."""
    h = f.header
    w = _checked_weights(f, weights, max_pixels)
    width, height = h.coded_size
    m, stride = w.model.config.pad_multiple, w.model.config.stride
    latent = (
        -(-height // m) * m // stride,
        -(-width // m) * m // stride,
    )  # g_s's plane, as synthesize tiles it
    tiles = tile_count(*latent, tiling(stride)[0] // stride, stride)
    step = _Steps(progress, len(f.segments) + tiles)
    return w, dequantize_segments(w, f, step), *_side_sections(f), step


def _side_sections(f: CaeFile) -> tuple[np.ndarray | None, dict]:
    """The alpha plane (or None) and the metadata as Image.info holds it, both checked."""
    plane = _decode_alpha(f.alpha, f.header) if f.header.mode == "RGBA" else None
    return plane, metadata_mod.to_info(metadata_mod.unpack_sections(f.metadata))


def _synthesize_quietly(
    w: weights_mod.Weights,
    y_hat: torch.Tensor,
    level: float,
    channels_last: bool = False,
    bf16: bool = False,
    on_tile: Callable[[], None] | None = None,
) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a garbage latent may overflow float math; pixels are clamped
        return synthesize(
            w, y_hat, level, pixels=True, channels_last=channels_last, bf16=bf16, on_tile=on_tile
        )


def _finish(
    h: Header,
    w: weights_mod.Weights,
    y_hat: torch.Tensor,
    plane: np.ndarray | None,
    info: dict,
    step: Callable[[], None] | None = None,
    bf16: bool = False,
) -> Image.Image:
    """g_s on one image's latent, to a PIL image of its size and mode, with its metadata."""
    width, height = h.coded_size
    alone = _alone(width, height)
    pixels = _synthesize_quietly(w, y_hat, h.position, alone, alone and bf16, step)
    rgb = unfold(to_pixels(pixels, height, width), h.width, h.height, h.fold)
    return _to_image(h, rgb, plane, info)


def _alone(width: int, height: int) -> bool:
    """Whether an image is too large for the batch API, so always runs alone (and channels-last)."""
    return width * height > BATCH_PIXELS


def _to_image(h: Header, rgb: np.ndarray, plane: np.ndarray | None, info: dict) -> Image.Image:
    if h.mode == "L":
        image = Image.fromarray(np.round(rgb.mean(axis=2)).astype(np.uint8), "L")
    elif plane is None:
        image = Image.fromarray(rgb, "RGB")
    else:
        image = Image.fromarray(np.dstack([rgb, plane]), "RGBA")
    image.info.update(info)
    return image


def decompress_many(
    files: Iterable[bytes | bytearray | memoryview | str | os.PathLike | BinaryIO],
    weights: WeightsArg = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    batch_size: int = 64,
    return_errors: bool = False,
    precision: str = "auto",
) -> list[Image.Image]:
    """Decode many .cae files, in order, to the images `decompress` gives (a rare pixel one level
    apart: batched float kernels round differently): small images of one size, model and quality
    share h_s's and g_s's forward passes, `batch_size` at a time. With
    `return_errors`, a file that cannot be decoded gets its exception in its place instead of
    stopping the others. `precision` as for decompress."""
    bf16 = use_bf16(precision)
    images: list[Image.Image | Exception | None] = []
    waiting: dict[tuple, list[tuple[int, _Pending]]] = {}
    for data in files:
        images.append(None)
        try:
            pending = _start_decode(unpack(_as_bytes(data)), weights, max_pixels, bf16)
        except Exception as e:
            if not return_errors:
                raise
            images[-1] = e
            continue
        if isinstance(pending, Image.Image):
            images[-1] = pending
            continue
        h = pending.header
        key = (pending.weights.id, h.position, h.width, h.height)
        waiting.setdefault(key, []).append((len(images) - 1, pending))
        if len(waiting[key]) == batch_size:
            _decode_batch(waiting.pop(key), images, return_errors)
    for group in waiting.values():
        _decode_batch(group, images, return_errors)
    return images


class _Pending(NamedTuple):
    """A small file read up to its hyper-latent z (None without one), waiting for its batch."""

    header: Header
    weights: weights_mod.Weights
    file: CaeFile
    z: np.ndarray | None
    finish: Callable[[torch.Tensor], Symbols] | None  # reads y, given h_s's output on z


def _start_decode(f: CaeFile, weights: WeightsArg, max_pixels: int, bf16: bool) -> Image.Image | _Pending:
    """A large file decoded at once; a small one read as far as its batch's shared passes."""
    h = f.header
    if _alone(h.width, h.height) or h.segment or h.fold > 1:
        return _finish(h, *_entropy_decode(f, weights, max_pixels), bf16=bf16)
    w = _checked_weights(f, weights, max_pixels)
    start = getattr(w.latent, "start_read", None)
    if start is None:
        return _Pending(h, w, f, None, None)
    z, finish = start(w, f.segments[0], latent_shape(w, h.height, h.width), h.tables, h.coder)
    return _Pending(h, w, f, z, finish)


def _decode_batch(group: list[tuple[int, _Pending]], images: list, return_errors: bool) -> None:
    """h_s once for the group's z, then each file's y, then g_s once for all that decoded."""
    first = group[0][1]
    w, level = first.weights, first.header.tables
    hyper = None
    if first.z is not None:
        hyper = hyper_features(w, np.stack([p.z for _, p in group]), level)
    decoded = []
    for k, (i, p) in enumerate(group):
        try:
            if hyper is None:
                y_hat = dequantize_segments(w, p.file)
            else:
                y_hat = w.latent.dequantize(w, p.finish(hyper[k]), level)
            plane, info = _side_sections(p.file)
        except Exception as e:
            if not return_errors:
                raise
            images[i] = e
            continue
        decoded.append((i, p.header, y_hat, plane, info))
    if not decoded:
        return
    pixels = _synthesize_quietly(w, torch.cat([d[2] for d in decoded]), first.header.position)
    for b, (i, h, _, plane, info) in enumerate(decoded):
        images[i] = _to_image(h, to_pixels(pixels[b : b + 1], h.height, h.width), plane, info)


def _decode_alpha(section: bytes | None, h: Header) -> np.ndarray:
    pixels = h.width * h.height
    alpha = packing.zstd_unpack(section or b"", pixels, "alpha plane")
    if len(alpha) != pixels:
        raise FormatError(f"alpha plane holds {len(alpha)} values, expected {pixels}")
    return np.frombuffer(alpha, dtype=np.uint8).reshape(h.height, h.width)


def latent_bits(w: weights_mod.Weights, symbols: Symbols, level: int) -> float:
    """The model's own estimate of the bits needed for these symbols (its entropy model's -log2 p)."""
    return w.latent.bits(w, symbols, level)
