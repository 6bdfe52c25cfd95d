"""The codec: image <-> .cae bytes, one plain step at a time.

image -> (rgb, alpha, mode) -> tensor -> latent -> integers -> bytes, and back.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from . import entropy
from . import weights as weights_mod
from .container import CODERS, CaeFile, FormatError, Header, pack, unpack
from .model import HYPER_STRIDE, SCALE_MAX, SCALE_MIN, TILING, gaussian_likelihood

AUTO = "auto"  # not a coder: compress tries each coder and keeps the smaller file
CODER_CHOICES = (AUTO, *CODERS)
DEFAULT_MAX_PIXELS = 4096 * 4096  # 16.8 megapixels; the network's activations grow with the area
WeightsArg = str | os.PathLike | None

# How Pillow modes reach the network: everything becomes L, RGB or RGBA first.
CONVERSIONS = {"1": "L", "F": "L", "LA": "RGBA", "PA": "RGBA"}
SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")


class FrameWarning(UserWarning):
    """An input had several frames or pages and only the first was kept."""


def read_image(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open an image file fully, turned upright by its EXIF orientation; first frame only."""
    if os.path.isfile(path) and os.path.getsize(path) == 0:
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
        raise ValueError(f"image is over the limit of {max_pixels} pixels (see max_pixels)") from None
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
    x = torch.from_numpy(np.array(rgb, dtype=np.uint8)).permute(2, 0, 1)[None].float().div_(255)
    h, w = rgb.shape[:2]
    pad_h, pad_w = -h % stride, -w % stride
    # Replicate padding needs at least one pixel to copy; reflect would fail on 1-pixel sides.
    return F.pad(x, (0, pad_w, 0, pad_h), mode="replicate") if pad_h or pad_w else x


def to_pixels(x_hat: torch.Tensor, height: int, width: int) -> np.ndarray:
    """Decoder output to uint8 HxWx3, cropped to the original size."""
    x = x_hat[0, :, :height, :width].clamp(0, 1).mul(255).round()
    return x.to(torch.uint8).permute(1, 2, 0).numpy()


# Large images go through the network in tiles (model.TILING) so memory stays bounded.
HYPER = HYPER_STRIDE  # z has 1/4 of y's side
HYPER_HALO = 16  # latent px around an h_a tile (receptive field 15); 4 z px around an h_s tile


def _tiles(height: int, width: int, tile: int, halo: int):
    """(core, padded) boxes as (top, left, bottom, right) covering a height x width plane."""
    for top in range(0, height, tile):
        for left in range(0, width, tile):
            core = (top, left, min(top + tile, height), min(left + tile, width))
            padded = (
                max(0, top - halo),
                max(0, left - halo),
                min(height, core[2] + halo),
                min(width, core[3] + halo),
            )
            yield core, padded


def _run_tiled(fn, x: torch.Tensor, out_channels: int, scale: float, tile: int, halo: int) -> torch.Tensor:
    """Apply a convolutional `fn` that maps an HxW input to (H*scale)x(W*scale), tile by tile."""
    h, w = x.shape[2:]
    out = torch.empty(1, out_channels, int(h * scale), int(w * scale), dtype=x.dtype)
    for core, padded in _tiles(h, w, tile, halo):
        top, left, bottom, right = (int(v * scale) for v in core)
        ptop, pleft = int(padded[0] * scale), int(padded[1] * scale)
        y = fn(x[:, :, padded[0] : padded[2], padded[1] : padded[3]])
        out[:, :, top:bottom, left:right] = y[:, :, top - ptop : bottom - ptop, left - pleft : right - pleft]
    return out


@dataclass(frozen=True)
class Symbols:
    """One image's integers: y (M, h, w); with a hyperprior also z (Z, h/4, w/4), which comes first.

    `params` keeps what h_s derived from z (y's means and table indexes) so it runs once per image.
    """

    y: np.ndarray
    z: np.ndarray | None = None
    params: tuple[torch.Tensor, np.ndarray] | None = field(default=None, repr=False, compare=False)


def _params(w: weights_mod.Weights, symbols: Symbols, quality: int) -> tuple[torch.Tensor, np.ndarray]:
    return symbols.params if symbols.params is not None else hyper_params(w, symbols.z, quality)


@torch.inference_mode()
def encode_latent(w: weights_mod.Weights, x: torch.Tensor, quality: int, tile: int | None = None) -> Symbols:
    """Image tensor to integers: y centred on each channel's median, or with a hyperprior, z centred
    on its medians and y on the means that h_s predicts from z."""
    level = torch.tensor([quality - 1])
    cfg = w.model.config
    tile, halo, _ = _tiling(cfg.stride, tile)
    y = _run_tiled(lambda part: w.model.analysis(part, level), x, cfg.M, 1 / cfg.stride, tile, halo)
    offsets = w.offsets[quality - 1][:, None, None]
    if not w.hyper:
        return Symbols((torch.round(y)[0].long() - offsets).numpy())
    z = _run_tiled(w.model.hyper_analysis, y, cfg.hyper_M, 1 / HYPER, tile // cfg.stride, HYPER_HALO)
    z_symbols = (torch.round(z)[0].long() - offsets).numpy()
    mu, index = hyper_params(w, z_symbols, quality)
    return Symbols(torch.round(y[0].double() - mu).long().numpy(), z_symbols, (mu, index))


def _tiling(stride: int, tile: int | None) -> tuple[int, int, int]:
    default, halo, latent_halo = TILING[stride]
    return tile or default, halo, latent_halo


def hyper_params(
    w: weights_mod.Weights, z_symbols: np.ndarray, quality: int, tile: int | None = None
) -> tuple[torch.Tensor, np.ndarray]:
    """From z's integers: y's means (float64, exact on every machine) and each symbol's table index."""
    cfg = w.model.config
    tile, _, _ = _tiling(cfg.stride, tile)
    z_hat = torch.from_numpy(z_symbols + w.offsets[quality - 1].numpy()[:, None, None])[None].double()
    params = _run_tiled(
        lambda part: torch.cat(w.model.exact_hyper_synthesis(part), dim=1),
        z_hat,
        2 * cfg.M,
        HYPER,
        tile // cfg.stride // HYPER,
        HYPER_HALO // HYPER,
    )[0]
    index = entropy.scale_index(params[cfg.M :].numpy(), w.scale_bounds)
    return params[: cfg.M].clone(), index  # a copy, so the log-scales can be freed


@torch.inference_mode()
def decode_latent(
    w: weights_mod.Weights, symbols: Symbols, quality: int, tile: int | None = None
) -> torch.Tensor:
    """Integers back to the decoder's output tensor."""
    level = torch.tensor([quality - 1])
    cfg = w.model.config
    tile, _, latent_halo = _tiling(cfg.stride, tile)
    if w.hyper:
        mu, _ = _params(w, symbols, quality)
        y_hat = (torch.from_numpy(symbols.y) + mu)[None].float()
    else:
        y_hat = (torch.from_numpy(symbols.y) + w.offsets[quality - 1][:, None, None])[None].float()
    return _run_tiled(
        lambda part: w.model.synthesis(part, level), y_hat, 3, cfg.stride, tile // cfg.stride, latent_halo
    )


def latent_shape(w: weights_mod.Weights, height: int, width: int) -> tuple[int, int, int]:
    """Shape of y for an image; with a hyperprior the image is padded so z has whole pixels."""
    cfg = w.model.config
    m = cfg.pad_multiple
    return (cfg.M, -(-height // m) * m // cfg.stride, -(-width // m) * m // cfg.stride)


def hyper_shape(w: weights_mod.Weights, height: int, width: int) -> tuple[int, int, int]:
    _, h, w_ = latent_shape(w, height, width)
    return (w.model.config.hyper_M, h // HYPER, w_ // HYPER)


def _check_quality(w: weights_mod.Weights, quality: int) -> None:
    if not 1 <= quality <= w.levels:
        raise ValueError(f"quality must be an integer from 1 to {w.levels}, not {quality}")


def _check_pixels(width: int, height: int, max_pixels: int, error: type[ValueError] = ValueError) -> None:
    if width * height > max_pixels:
        raise error(f"{width}x{height} is over the limit of {max_pixels} pixels (see max_pixels)")


def compress(
    image: Image.Image | np.ndarray,
    quality: int | None = None,
    weights: WeightsArg = None,
    coder: str = AUTO,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> bytes:
    """Compress a PIL image or uint8 array (HxW, HxWx3, HxWx4) to .cae bytes.

    coder "auto" codes the latent both ways and keeps the smaller file; the header says which.
    """
    if coder not in CODER_CHOICES:
        raise ValueError(f"coder must be one of {', '.join(CODER_CHOICES)}, not {coder!r}")
    files = compress_each(image, quality, weights, CODERS if coder == AUTO else (coder,), max_pixels)
    return min(files.values(), key=len)  # ties go to the first coder (zstd)


def compress_each(
    image: Image.Image | np.ndarray,
    quality: int | None = None,
    weights: WeightsArg = None,
    coders: tuple[str, ...] = CODERS,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> dict[str, bytes]:
    """The .cae file that each coder makes of one image; the network runs once."""
    w = weights_mod.load(weights)
    quality = w.default_quality if quality is None else quality
    _check_quality(w, quality)
    rgb, alpha, mode = split_image(image)
    height, width = rgb.shape[:2]
    _check_pixels(width, height, max_pixels)
    symbols = encode_latent(w, to_tensor(rgb, w.model.config.pad_multiple), quality)
    alpha_bytes = entropy.zstd_pack(alpha.tobytes()) if alpha is not None else None
    return {
        coder: pack(
            CaeFile(
                Header(mode, coder, quality, w.id, width, height),
                encode_symbols(w, symbols, quality, coder),
                alpha_bytes,
            )
        )
        for coder in coders
    }


def encode_symbols(w: weights_mod.Weights, symbols: Symbols, quality: int, coder: str) -> bytes:
    """The latent's integers to the colour section, by the chosen entropy coder."""
    tables, layout = w.range_tables[quality - 1], w.zstd_layouts[quality - 1]
    if not w.hyper:
        if coder == "range":
            return entropy.range_encode(symbols.y, tables)
        return entropy.encode_symbols(symbols.y, layout)
    _, index = _params(w, symbols, quality)
    if coder == "zstd":
        parts = entropy.hyper_layout(symbols.z, symbols.y, index, layout, w.scale_widths)
        return entropy.zstd_pack(entropy.hyper_raw(*parts), layout.dictionary)
    z_groups = list(symbols.z.reshape(len(symbols.z), -1))
    used, counts = np.unique(index, return_counts=True)
    y_groups = np.split(symbols.y.ravel()[entropy.scale_order(index)], np.cumsum(counts)[:-1])
    return entropy.range_encode_parts(
        [(z_groups, tables, range(len(z_groups))), (y_groups, w.scale_tables, used)]
    )


def decode_symbols(w: weights_mod.Weights, data: bytes, header: Header) -> Symbols:
    """The colour section back to the latent's integers."""
    shape = latent_shape(w, header.height, header.width)
    q = header.quality
    tables, layout = w.range_tables[q - 1], w.zstd_layouts[q - 1]
    if not w.hyper:
        if header.coder == "range":
            return Symbols(entropy.range_decode(data, tables, shape))
        return Symbols(entropy.decode_symbols(data, shape, layout))
    z_shape = hyper_shape(w, header.height, header.width)
    z_count, count = int(np.prod(z_shape)), int(np.prod(shape))
    if header.coder == "zstd":
        return _decode_hyper_zstd(w, data, q, z_shape, shape)
    reader = entropy.RangeReader(data)
    z = np.stack(reader.read([z_count // z_shape[0]] * z_shape[0], tables)).reshape(z_shape)
    params = hyper_params(w, z, q)
    used, counts = np.unique(params[1], return_counts=True)
    y = np.empty(count, dtype=np.int64)
    y[entropy.scale_order(params[1])] = np.concatenate(reader.read(counts, w.scale_tables, used))
    return Symbols(y.reshape(shape), z, params)


def _decode_hyper_zstd(
    w: weights_mod.Weights, data: bytes, quality: int, z_shape: tuple, shape: tuple
) -> Symbols:
    layout = w.zstd_layouts[quality - 1]
    z_count, count = int(np.prod(z_shape)), int(np.prod(shape))
    # 1 byte of bits and 5 of escape at most per value, so expansion is bounded before it happens.
    raw = entropy.zstd_unpack(data, 6 * (z_count + count) + 2, "latent payload", layout.dictionary)
    z_widths = np.repeat(layout.widths[layout.order], z_count // z_shape[0])
    z_values, offset = entropy.read_packed(raw, 0, z_widths)
    z = np.empty(z_shape, dtype=np.int64)
    z[layout.order] = z_values.reshape(z_shape)
    params = hyper_params(w, z, quality)
    order = entropy.scale_order(params[1])
    y_values, offset = entropy.read_packed(raw, offset, w.scale_widths[params[1].ravel()[order]])
    if offset != len(raw):
        raise FormatError(f"latent payload has {len(raw) - offset} bytes past its values")
    y = np.empty(count, dtype=np.int64)
    y[order] = y_values
    return Symbols(y.reshape(shape), z, params)


def read_header(data: bytes) -> Header:
    """The checked header of .cae bytes, without decoding the image."""
    return unpack(data).header


def _weights_for(header: Header, weights: WeightsArg) -> weights_mod.Weights:
    if weights is None and header.weights_id not in weights_mod.REGISTRY:
        raise FormatError(f"file was {weights_mod.not_installed(header.weights_id)}")
    w = weights_mod.load(weights, header.weights_id)
    if w.id != header.weights_id:
        raise FormatError(f"file was made with weights id {header.weights_id}, not {w.name} (id {w.id})")
    if header.quality > w.levels:
        raise FormatError(f"quality {header.quality} is above the {w.levels} levels of {w.name}")
    return w


def decompress(data: bytes, weights: WeightsArg = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode .cae bytes to a PIL image of the original size and mode (L, RGB or RGBA)."""
    f = unpack(bytes(data))
    h = f.header
    _check_pixels(h.width, h.height, max_pixels, FormatError)
    w = _weights_for(h, weights)
    symbols = decode_symbols(w, f.color, h)
    plane = (
        _decode_alpha(f.alpha, h) if h.mode == "RGBA" else None
    )  # every section checked before the network runs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a garbage latent may overflow float math; pixels are clamped
        rgb = to_pixels(decode_latent(w, symbols, h.quality), h.height, h.width)
    if h.mode == "L":
        return Image.fromarray(np.round(rgb.mean(axis=2)).astype(np.uint8), "L")
    if plane is None:
        return Image.fromarray(rgb, "RGB")
    return Image.fromarray(np.dstack([rgb, plane]), "RGBA")


def _decode_alpha(section: bytes | None, h: Header) -> np.ndarray:
    pixels = h.width * h.height
    alpha = entropy.zstd_unpack(section or b"", pixels, "alpha plane")
    if len(alpha) != pixels:
        raise FormatError(f"alpha plane holds {len(alpha)} values, expected {pixels}")
    return np.frombuffer(alpha, dtype=np.uint8).reshape(h.height, h.width)


@torch.inference_mode()
def latent_bits(w: weights_mod.Weights, symbols: Symbols, quality: int) -> float:
    """The model's own estimate of the bits needed for these symbols (its entropy model's -log2 p)."""
    offsets = w.offsets[quality - 1][:, None, None]
    if not w.hyper:
        p = w.model.densities[quality - 1].likelihood((torch.from_numpy(symbols.y) + offsets)[None].float())
        return float(-torch.log2(p).sum())
    z_hat = (torch.from_numpy(symbols.z) + offsets)[None].float()
    bits = -torch.log2(w.model.z_densities[quality - 1].likelihood(z_hat)).sum()
    _, log_sigma = w.model.exact_hyper_synthesis(z_hat.double())
    sigma = log_sigma.exp().clamp(SCALE_MIN, SCALE_MAX)
    bits -= torch.log2(gaussian_likelihood(torch.from_numpy(symbols.y)[None].double(), sigma)).sum()
    return float(bits)
