"""The codec: image <-> .cae bytes, one plain step at a time.

image -> (rgb, alpha, mode) -> tensor -> latent -> integers -> bytes, and back.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import BinaryIO, NamedTuple

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from . import packing
from . import weights as weights_mod
from .config import AUTO, BATCH_PIXELS, CODER_CHOICES, DEFAULT_MAX_PIXELS, STRIDES, ZSTD_MIN_PIXELS
from .container import CODERS, CaeFile, FormatError, Header, join_segments, pack, unpack
from .latent_codecs import Symbols, hyper_features
from .model import SEGMENT
from .tiling import run_tiled, tiling

WeightsArg = str | os.PathLike | None

# How Pillow modes reach the network: everything becomes L, RGB or RGBA first.
CONVERSIONS = {"1": "L", "F": "L", "LA": "RGBA", "PA": "RGBA"}
SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")


class InputWarning(UserWarning):
    """Something of the input that a .cae file does not keep."""


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


def warn_about_losses(image: Image.Image) -> None:
    """Say what the .cae file will not keep: a colour profile, a 1-bit image's compactness, and the
    low bits of 16-bit samples."""
    if _foreign_profile(image.info.get("icc_profile")):
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
    try:
        with warnings.catch_warnings():
            # Our own pixel limit is checked right after opening, before any pixel is decoded.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                _check_pixels(image.width, image.height, max_pixels)
                frames = getattr(image, "n_frames", 1)
                image.load()
                upright = ImageOps.exif_transpose(image)
    except Image.DecompressionBombError:
        raise ValueError(
            f"image is over the limit of {max_pixels} pixels (max_pixels, --max-pixels)"
        ) from None
    except UnidentifiedImageError:
        raise ValueError("not an image file, or a format Pillow cannot read") from None
    except (OSError, SyntaxError) as e:
        if isinstance(e, OSError) and e.errno is not None:
            raise  # a file-system error: missing, a directory, no permission
        raise ValueError(f"corrupt or truncated image ({e})") from None
    if frames > 1:
        warnings.warn(f"{frames} frames; only the first is kept", FrameWarning, stacklevel=2)
    return upright


def split_image(image: Image.Image | np.ndarray) -> tuple[np.ndarray, np.ndarray | None, str]:
    """An image as (rgb uint8 HxWx3, alpha uint8 HxW or None, stored mode)."""
    if isinstance(image, np.ndarray):
        image = _array_to_image(image)
    warn_about_losses(image)
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
        return torch.from_numpy(np.asarray(rgb, dtype=np.uint8)).permute(2, 0, 1)[None]


def _as_float(x: torch.Tensor) -> torch.Tensor:
    return x.float().div_(255) if x.dtype == torch.uint8 else x  # keeps x's memory format


def _as_uint8(x_hat: torch.Tensor) -> torch.Tensor:
    return x_hat.clamp(0, 1).mul(255).round().to(torch.uint8)


def to_pixels(x_hat: torch.Tensor, height: int, width: int) -> np.ndarray:
    """Decoder output to uint8 HxWx3, cropped to the original size."""
    x = x_hat if x_hat.dtype == torch.uint8 else _as_uint8(x_hat)
    return x[0, :, :height, :width].permute(1, 2, 0).numpy()


@torch.inference_mode()
def analyse(
    w: weights_mod.Weights,
    x: torch.Tensor,
    quality: int,
    tile: int | None = None,
    channels_last: bool = False,
) -> torch.Tensor:
    """g_a, tile by tile: an image tensor (float in [0,1], or uint8) to the unquantized latent y;
    `channels_last` for images over BATCH_PIXELS (tiling.run_tiled)."""
    level = torch.tensor([quality - 1])
    cfg = w.model.config
    tile, halo, _ = tiling(cfg.stride, tile)
    return run_tiled(
        lambda part: w.model.analysis(_as_float(part), level),
        x,
        cfg.M,
        1 / cfg.stride,
        tile,
        halo,
        torch.float32,
        channels_last,
    )


@torch.inference_mode()
def encode_latent(w: weights_mod.Weights, x: torch.Tensor, quality: int, tile: int | None = None) -> Symbols:
    """Image tensor to integers: g_a, then the latent codec of the model's prior."""
    return w.latent.quantize(w, analyse(w, x, quality, tile), quality, tile)


@torch.inference_mode()
def encode_segment(
    w: weights_mod.Weights,
    pixels: torch.Tensor,
    box: Box,
    quality: int,
    tile: int | None = None,
    channels_last: bool = False,
) -> Symbols:
    """One segment's integers: g_a sees a halo across the segment's edges (so the latent is continuous
    over them), the latent codec only the segment's own latent."""
    stride = w.model.config.stride
    top, left, bottom, right = box
    halo = tiling(stride, tile)[1]
    ctop, cleft = max(0, top - halo), max(0, left - halo)
    crop = pixels[:, :, ctop : bottom + halo, cleft : right + halo]
    y = analyse(w, crop, quality, tile, channels_last)
    core = y[:, :, (top - ctop) // stride : (bottom - ctop) // stride, (left - cleft) // stride :]
    return w.latent.quantize(w, core[:, :, :, : (right - left) // stride].contiguous(), quality, tile)


@torch.inference_mode()
def synthesize(
    w: weights_mod.Weights,
    y_hat: torch.Tensor,
    quality: int,
    tile: int | None = None,
    pixels: bool = False,
    channels_last: bool = False,
) -> torch.Tensor:
    """g_s, tile by tile: the dequantized latent to the decoder's output, as floats or (`pixels`)
    as uint8 values, rounded tile by tile so a large image never exists as floats whole;
    `channels_last` for images over BATCH_PIXELS (tiling.run_tiled)."""
    level = torch.tensor([quality - 1])
    cfg = w.model.config
    tile, _, latent_halo = tiling(cfg.stride, tile)
    fn = (
        (lambda part: _as_uint8(w.model.synthesis(part, level)))
        if pixels
        else (lambda part: w.model.synthesis(part, level))
    )
    dtype = torch.uint8 if pixels else torch.float32
    return run_tiled(fn, y_hat, 3, cfg.stride, tile // cfg.stride, latent_halo, dtype, channels_last)


@torch.inference_mode()
def decode_latent(
    w: weights_mod.Weights, symbols: Symbols, quality: int, tile: int | None = None
) -> torch.Tensor:
    """Integers back to the decoder's output tensor."""
    return synthesize(w, w.latent.dequantize(w, symbols, quality), quality, tile)


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


def _check_quality(w: weights_mod.Weights, quality: object) -> None:
    expected = f"quality must be an integer from 1 to {w.levels}"
    if isinstance(quality, bool) or not isinstance(quality, (int, np.integer)):
        raise TypeError(f"{expected}, not {quality!r} ({type(quality).__name__})")
    if not 1 <= quality <= w.levels:
        raise ValueError(f"{expected}, not {quality}")


def _check_pixels(width: int, height: int, max_pixels: int, error: type[ValueError] = ValueError) -> None:
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, (int, np.integer)):
        raise TypeError(f"max_pixels must be an integer, not {type(max_pixels).__name__}")
    if width * height > max_pixels:
        raise error(f"{width}x{height} is over the limit of {max_pixels} pixels (max_pixels, --max-pixels)")
    _check_padded(min(STRIDES), width, height, max_pixels, error)  # no model pads less: before any loads


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
    quality: int | None = None,
    weights: WeightsArg = None,
    coder: str = AUTO,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    segment: int | None = None,
) -> bytes:
    """Compress an image to .cae bytes: a PIL image, a uint8 array (HxW, HxWx3, HxWx4), or an image
    file's path, bytes or open stream. coder "auto" keeps the smaller file of the coders worth
    trying at the image's size (auto_coders)."""
    if coder not in CODER_CHOICES:
        raise ValueError(f"coder must be one of {', '.join(CODER_CHOICES)}, not {coder!r}")
    files = compress_each(image, quality, weights, (coder,), max_pixels, segment)
    return min(files.values(), key=len)  # ties go to the first coder (zstd)


def auto_coders(width: int, height: int) -> tuple[str, ...]:
    """The coders that `auto` tries on an image of this size: zstd only above ZSTD_MIN_PIXELS."""
    return CODERS if width * height > ZSTD_MIN_PIXELS else ("range",)


def _resolve(coders: tuple[str, ...], width: int, height: int) -> tuple[str, ...]:
    """("auto",) as the coders it tries at this size; any other tuple as it is."""
    return auto_coders(width, height) if coders == (AUTO,) else coders


def compress_each(
    image: ImageArg,
    quality: int | None = None,
    weights: WeightsArg = None,
    coders: tuple[str, ...] = CODERS,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    segment: int | None = None,
) -> dict[str, bytes]:
    """The .cae file that each coder makes of one image (coders ("auto",): those auto_coders names);
    the network runs once. Without `weights`, the shipped model for the image's size
    (weights.default_id); `segment` overrides the side in pixels of a large image's segments."""
    return _compress_source(_prepare(image, weights, max_pixels), quality, weights, coders, segment)


def _compress_source(
    source: _Source, quality: int | None, weights: WeightsArg, coders: tuple[str, ...], segment: int | None
) -> dict[str, bytes]:
    w, quality = _model_for(source, weights, quality)
    coders = _resolve(coders, source.width, source.height)
    side = segment_side(w, source.width, source.height, segment)
    pixels = to_pixel_tensor(source.rgb, w.model.config.pad_multiple)
    sections: dict[str, list[bytes]] = {coder: [] for coder in coders}
    for box in segment_boxes(w, source.width, source.height, side):
        symbols = encode_segment(w, pixels, box, quality, channels_last=_alone(source.width, source.height))
        for coder in coders:
            sections[coder].append(encode_symbols(w, symbols, quality, coder))
    return {
        coder: _pack(source, w, quality, coder, join_segments(parts), side)
        for coder, parts in sections.items()
    }


class _Source(NamedTuple):
    """An image ready for the network: its pixels, its alpha plane's zstd frame and stored mode."""

    rgb: np.ndarray
    alpha: bytes | None  # packed once, whatever the number of coders tried
    mode: str
    weights_id: int | None  # the shipped model for its size, when no weights are given

    @property
    def height(self) -> int:
        return self.rgb.shape[0]

    @property
    def width(self) -> int:
        return self.rgb.shape[1]


def _prepare(image: ImageArg, weights: WeightsArg, max_pixels: int) -> _Source:
    rgb, alpha, mode = split_image(_as_image(image, max_pixels))
    height, width = rgb.shape[:2]
    _check_pixels(width, height, max_pixels)
    weights_id = None if weights is not None else weights_mod.default_id(width, height)
    _check_padded(weights_mod.load(weights, weights_id).model.config.pad_multiple, width, height, max_pixels)
    alpha_frame = packing.zstd_pack(alpha.tobytes()) if alpha is not None else None
    return _Source(rgb, alpha_frame, mode, weights_id)


def _model_for(source: _Source, weights: WeightsArg, quality: int | None) -> tuple[weights_mod.Weights, int]:
    w = weights_mod.load(weights, source.weights_id)
    quality = w.default_quality if quality is None else quality
    _check_quality(w, quality)
    return w, quality


def _pack(
    source: _Source, w: weights_mod.Weights, quality: int, coder: str, color: bytes, side: int = 0
) -> bytes:
    header = Header(source.mode, coder, quality, w.id, source.width, source.height, side)
    return pack(CaeFile(header, color, source.alpha))


def compress_many(
    images: Iterable[ImageArg],
    quality: int | None = None,
    weights: WeightsArg = None,
    coder: str = AUTO,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    batch_size: int = 64,
    return_errors: bool = False,
) -> list[bytes]:
    """Compress many images, in order, to the same files `compress` makes of each (up to float
    rounding): small images of one size share the network's forward passes, `batch_size` at a time.
    With `return_errors`, an image that cannot be read gets its exception in its place instead of
    stopping the others."""
    if coder not in CODER_CHOICES:
        raise ValueError(f"coder must be one of {', '.join(CODER_CHOICES)}, not {coder!r}")
    each = compress_many_each(images, quality, weights, (coder,), max_pixels, batch_size, return_errors)
    # ties go to the first coder (zstd)
    return [f if isinstance(f, Exception) else min(f.values(), key=len) for f in each]


def compress_many_each(
    images: Iterable[ImageArg],
    quality: int | None = None,
    weights: WeightsArg = None,
    coders: tuple[str, ...] = CODERS,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    batch_size: int = 64,
    return_errors: bool = False,
) -> list[dict[str, bytes]]:
    """`compress_each` for many images, in order, with compress_many's shared forward passes."""
    files: list[dict[str, bytes] | Exception | None] = []
    waiting: dict[tuple, list[tuple[int, _Source]]] = {}
    for image in images:
        files.append(None)
        try:
            source = _prepare(image, weights, max_pixels)
        except Exception as e:
            if not return_errors:
                raise
            files[-1] = e
            continue
        if _alone(source.width, source.height):
            files[-1] = _compress_source(source, quality, weights, coders, None)
            continue
        key = (source.weights_id, source.height, source.width)
        waiting.setdefault(key, []).append((len(files) - 1, source))
        if len(waiting[key]) == batch_size:
            _compress_batch(waiting.pop(key), files, quality, weights, coders)
    for group in waiting.values():
        _compress_batch(group, files, quality, weights, coders)
    return files


def _compress_batch(group: list[tuple[int, _Source]], files: list, quality, weights, coders) -> None:
    """Same-size images through one forward pass; each gets every coder's file."""
    w, quality = _model_for(group[0][1], weights, quality)
    coders = _resolve(coders, group[0][1].width, group[0][1].height)
    m = w.model.config.pad_multiple
    x = torch.cat([to_pixel_tensor(source.rgb, m) for _, source in group])
    y = analyse(w, x, quality)
    for (i, source), symbols in zip(group, w.latent.quantize_many(w, y, quality), strict=True):
        files[i] = {c: _pack(source, w, quality, c, encode_symbols(w, symbols, quality, c)) for c in coders}


def encode_symbols(w: weights_mod.Weights, symbols: Symbols, quality: int, coder: str) -> bytes:
    """The latent's integers to the colour section, by the chosen entropy coder."""
    return w.latent.write(w, symbols, quality, coder)


def decode_symbols(w: weights_mod.Weights, data: bytes, header: Header) -> Symbols:
    """The colour section back to the latent's integers."""
    shape = latent_shape(w, header.height, header.width)
    return w.latent.read(w, data, shape, header.quality, header.coder)


def dequantize_segments(w: weights_mod.Weights, f: CaeFile) -> torch.Tensor:
    """Every segment's colour section decoded into one latent y_hat (1, M, h, w) for g_s."""
    h = f.header
    if h.segment % w.model.config.pad_multiple:
        raise FormatError(f"segment side {h.segment} is not a multiple of {w.model.config.pad_multiple}")
    stride = w.model.config.stride
    y_hat = torch.empty(1, *latent_shape(w, h.height, h.width))
    for (top, left, bottom, right), data in zip(
        segment_boxes(w, h.width, h.height, h.segment), f.segments, strict=True
    ):
        part = replace(h, width=right - left, height=bottom - top, segment=0)
        y_hat[:, :, top // stride : bottom // stride, left // stride : right // stride] = w.latent.dequantize(
            w, decode_symbols(w, data, part), h.quality
        )
    return y_hat


def read_header(data: bytes | bytearray | memoryview | str | os.PathLike | BinaryIO) -> Header:
    """The checked header of .cae bytes (or a file's path or stream), without decoding the image."""
    return unpack(_as_bytes(data)).header


def _weights_for(header: Header, weights: WeightsArg) -> weights_mod.Weights:
    if weights is None and header.weights_id not in weights_mod.REGISTRY:
        raise FormatError(f"file was {weights_mod.not_installed(header.weights_id)}")
    w = weights_mod.load(weights, header.weights_id)
    if w.id != header.weights_id:
        raise FormatError(f"file was made with weights id {header.weights_id}, not {w.name} (id {w.id})")
    if header.quality > w.levels:
        raise FormatError(f"quality {header.quality} is above the {w.levels} levels of {w.name}")
    return w


def decompress(
    data: bytes | bytearray | memoryview | str | os.PathLike | BinaryIO,
    weights: WeightsArg = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Image.Image:
    """Decode .cae bytes (or a .cae file's path or open stream) to a PIL image of the original size
    and mode (L, RGB or RGBA)."""
    f = unpack(_as_bytes(data))
    return _finish(f.header, *_entropy_decode(f, weights, max_pixels))


def _entropy_decode(
    f: CaeFile, weights: WeightsArg, max_pixels: int
) -> tuple[weights_mod.Weights, torch.Tensor, np.ndarray | None]:
    """Everything before g_s, every section checked: the weights, y_hat and the alpha plane."""
    h = f.header
    _check_pixels(h.width, h.height, max_pixels, FormatError)
    w = _weights_for(h, weights)
    _check_padded(w.model.config.pad_multiple, h.width, h.height, max_pixels, FormatError)
    return w, dequantize_segments(w, f), _decode_alpha(f.alpha, h) if h.mode == "RGBA" else None


def _synthesize_quietly(
    w: weights_mod.Weights, y_hat: torch.Tensor, quality: int, channels_last: bool = False
) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a garbage latent may overflow float math; pixels are clamped
        return synthesize(w, y_hat, quality, pixels=True, channels_last=channels_last)


def _finish(h: Header, w: weights_mod.Weights, y_hat: torch.Tensor, plane: np.ndarray | None) -> Image.Image:
    """g_s on one image's latent, to a PIL image of its size and mode."""
    pixels = _synthesize_quietly(w, y_hat, h.quality, _alone(h.width, h.height))
    return _to_image(h, to_pixels(pixels, h.height, h.width), plane)


def _alone(width: int, height: int) -> bool:
    """Whether an image is too large for the batch API, so always runs alone (and channels-last)."""
    return width * height > BATCH_PIXELS


def _to_image(h: Header, rgb: np.ndarray, plane: np.ndarray | None) -> Image.Image:
    if h.mode == "L":
        return Image.fromarray(np.round(rgb.mean(axis=2)).astype(np.uint8), "L")
    if plane is None:
        return Image.fromarray(rgb, "RGB")
    return Image.fromarray(np.dstack([rgb, plane]), "RGBA")


def decompress_many(
    files: Iterable[bytes | bytearray | memoryview | str | os.PathLike | BinaryIO],
    weights: WeightsArg = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    batch_size: int = 64,
    return_errors: bool = False,
) -> list[Image.Image]:
    """Decode many .cae files, in order, to the images `decompress` gives: small images of one
    size, model and quality share h_s's and g_s's forward passes, `batch_size` at a time. With
    `return_errors`, a file that cannot be decoded gets its exception in its place instead of
    stopping the others."""
    images: list[Image.Image | Exception | None] = []
    waiting: dict[tuple, list[tuple[int, _Pending]]] = {}
    for data in files:
        images.append(None)
        try:
            pending = _start_decode(unpack(_as_bytes(data)), weights, max_pixels)
        except Exception as e:
            if not return_errors:
                raise
            images[-1] = e
            continue
        if isinstance(pending, Image.Image):
            images[-1] = pending
            continue
        h = pending.header
        key = (pending.weights.id, h.quality, h.width, h.height)
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


def _start_decode(f: CaeFile, weights: WeightsArg, max_pixels: int) -> Image.Image | _Pending:
    """A large file decoded at once; a small one read as far as its batch's shared passes."""
    h = f.header
    if _alone(h.width, h.height) or h.segment:
        return _finish(h, *_entropy_decode(f, weights, max_pixels))
    _check_pixels(h.width, h.height, max_pixels, FormatError)
    w = _weights_for(h, weights)
    _check_padded(w.model.config.pad_multiple, h.width, h.height, max_pixels, FormatError)
    start = getattr(w.latent, "start_read", None)
    if start is None:
        return _Pending(h, w, f, None, None)
    z, finish = start(w, f.segments[0], latent_shape(w, h.height, h.width), h.quality, h.coder)
    return _Pending(h, w, f, z, finish)


def _decode_batch(group: list[tuple[int, _Pending]], images: list, return_errors: bool) -> None:
    """h_s once for the group's z, then each file's y, then g_s once for all that decoded."""
    first = group[0][1]
    w, quality = first.weights, first.header.quality
    hyper = None
    if first.z is not None:
        hyper = hyper_features(w, np.stack([p.z for _, p in group]), quality)
    decoded = []
    for k, (i, p) in enumerate(group):
        try:
            if hyper is None:
                y_hat = dequantize_segments(w, p.file)
            else:
                y_hat = w.latent.dequantize(w, p.finish(hyper[k]), quality)
            plane = _decode_alpha(p.file.alpha, p.header) if p.header.mode == "RGBA" else None
        except Exception as e:
            if not return_errors:
                raise
            images[i] = e
            continue
        decoded.append((i, p.header, y_hat, plane))
    if not decoded:
        return
    pixels = _synthesize_quietly(w, torch.cat([y_hat for _, _, y_hat, _ in decoded]), quality)
    for b, (i, h, _, plane) in enumerate(decoded):
        images[i] = _to_image(h, to_pixels(pixels[b : b + 1], h.height, h.width), plane)


def _decode_alpha(section: bytes | None, h: Header) -> np.ndarray:
    pixels = h.width * h.height
    alpha = packing.zstd_unpack(section or b"", pixels, "alpha plane")
    if len(alpha) != pixels:
        raise FormatError(f"alpha plane holds {len(alpha)} values, expected {pixels}")
    return np.frombuffer(alpha, dtype=np.uint8).reshape(h.height, h.width)


def latent_bits(w: weights_mod.Weights, symbols: Symbols, quality: int) -> float:
    """The model's own estimate of the bits needed for these symbols (its entropy model's -log2 p)."""
    return w.latent.bits(w, symbols, quality)
