"""Latent codecs: one per kind of prior (ModelConfig.prior), in the spirit of CompressAI's latent_codecs.

Each turns g_a's output y into integers (`quantize`) and back (`dequantize`), writes and reads them
with an entropy coder of container.CODERS, and estimates their bits. codec.py runs g_a and g_s and
leaves everything between them to the latent codec of the model's prior.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from . import integer_tables, packing, range_coder
from .container import FormatError
from .model import HYPER_STRIDE, SCALE_MAX, SCALE_MIN, gaussian_likelihood, scale_table
from .tiling import run_tiled, tiling

if TYPE_CHECKING:
    from .weights import Weights

HYPER_HALO = 16  # latent px around an h_a tile (receptive field 15); 4 z px around an h_s tile


@dataclass(frozen=True)
class Symbols:
    """One image's integers: y (M, h, w); with a hyperprior also z (Z, h/4, w/4), which comes first.

    `params` keeps what h_s derived from z (y's means and table indexes) so it runs once per image.
    """

    y: np.ndarray
    z: np.ndarray | None = None
    params: tuple[torch.Tensor, np.ndarray] | None = field(default=None, repr=False, compare=False)


class Factorized:
    """y centred on each channel's rounded median, coded with one learned table per channel."""

    name = "factorized"

    def quantize(self, w: Weights, y: torch.Tensor, quality: int, tile: int | None = None) -> Symbols:
        return Symbols((torch.round(y)[0].long() - _offsets(w, quality)).numpy())

    def dequantize(self, w: Weights, symbols: Symbols, quality: int) -> torch.Tensor:
        return (torch.from_numpy(symbols.y) + _offsets(w, quality))[None].float()

    def zstd_bytes(self, w: Weights, symbols: Symbols, quality: int) -> bytes:
        """What the zstd coder compresses: a byte per value, channels cheapest first."""
        return packing.symbol_bytes(symbols.y, w.zstd_layouts[quality - 1].order)

    def write(self, w: Weights, symbols: Symbols, quality: int, coder: str) -> bytes:
        if coder == "range":
            return range_coder.range_encode(symbols.y, w.range_tables[quality - 1])
        return packing.zstd_pack(self.zstd_bytes(w, symbols, quality), w.zstd_layouts[quality - 1].dictionary)

    def export_tables(
        self, model, tables: list[range_coder.RangeTables]
    ) -> tuple[dict, list[np.ndarray | None]]:
        """Bundle entries of this prior beyond the per-channel tables, and each level's zstd widths."""
        return {}, [None] * len(tables)

    def load_tables(self, model, bundle: dict) -> dict:
        """The Weights fields this prior adds, checked (raises ValueError on a bad bundle)."""
        return {}

    def read(self, w: Weights, data: bytes, shape: tuple[int, int, int], quality: int, coder: str) -> Symbols:
        if coder == "range":
            return Symbols(range_coder.range_decode(data, w.range_tables[quality - 1], shape))
        return Symbols(packing.decode_symbols(data, shape, w.zstd_layouts[quality - 1]))

    @torch.inference_mode()
    def bits(self, w: Weights, symbols: Symbols, quality: int) -> float:
        y = self.dequantize(w, symbols, quality)
        return float(-torch.log2(w.model.densities[quality - 1].likelihood(y)).sum())


class MeanScaleHyperprior:
    """z (factorized, per channel) first; y as round(y - mu), coded with the Gaussian table of its
    predicted scale. h_s runs in exact arithmetic, so both sides derive the same mu and tables."""

    name = "mean-scale"

    def quantize(self, w: Weights, y: torch.Tensor, quality: int, tile: int | None = None) -> Symbols:
        cfg = w.model.config
        tile, _, _ = tiling(cfg.stride, tile)
        z = run_tiled(
            w.model.hyper_analysis, y, cfg.hyper_M, 1 / HYPER_STRIDE, tile // cfg.stride, HYPER_HALO
        )
        z_symbols = (torch.round(z)[0].long() - _offsets(w, quality)).numpy()
        mu, index = hyper_params(w, z_symbols, quality)
        return Symbols(torch.round(y[0].double() - mu).long().numpy(), z_symbols, (mu, index))

    def dequantize(self, w: Weights, symbols: Symbols, quality: int) -> torch.Tensor:
        mu, _ = _params(w, symbols, quality)
        return (torch.from_numpy(symbols.y) + mu)[None].float()

    def zstd_bytes(self, w: Weights, symbols: Symbols, quality: int) -> bytes:
        """What the zstd coder compresses: z, then y sorted by scale, each bit-packed."""
        _, index = _params(w, symbols, quality)
        parts = packing.hyper_layout(symbols.z, symbols.y, index, w.zstd_layouts[quality - 1], w.scale_widths)
        return packing.hyper_raw(*parts)

    def write(self, w: Weights, symbols: Symbols, quality: int, coder: str) -> bytes:
        if coder == "zstd":
            return packing.zstd_pack(
                self.zstd_bytes(w, symbols, quality), w.zstd_layouts[quality - 1].dictionary
            )
        _, index = _params(w, symbols, quality)
        z_groups = list(symbols.z.reshape(len(symbols.z), -1))
        used, counts = np.unique(index, return_counts=True)
        y_groups = np.split(symbols.y.ravel()[packing.scale_order(index)], np.cumsum(counts)[:-1])
        return range_coder.range_encode_parts(
            [(z_groups, w.range_tables[quality - 1], range(len(z_groups))), (y_groups, w.scale_tables, used)]
        )

    def read(self, w: Weights, data: bytes, shape: tuple[int, int, int], quality: int, coder: str) -> Symbols:
        z_shape = (w.model.config.hyper_M, shape[1] // HYPER_STRIDE, shape[2] // HYPER_STRIDE)
        if coder == "zstd":
            return self._read_zstd(w, data, quality, z_shape, shape)
        reader = range_coder.RangeReader(data)
        z_count = int(np.prod(z_shape))
        z = np.stack(reader.read([z_count // z_shape[0]] * z_shape[0], w.range_tables[quality - 1]))
        z = z.reshape(z_shape)
        params = hyper_params(w, z, quality)
        used, counts = np.unique(params[1], return_counts=True)
        y = np.empty(int(np.prod(shape)), dtype=np.int64)
        y[packing.scale_order(params[1])] = np.concatenate(reader.read(counts, w.scale_tables, used))
        return Symbols(y.reshape(shape), z, params)

    def _read_zstd(self, w: Weights, data: bytes, quality: int, z_shape: tuple, shape: tuple) -> Symbols:
        layout = w.zstd_layouts[quality - 1]
        z_count, count = int(np.prod(z_shape)), int(np.prod(shape))
        # 1 byte of bits and 5 of escape at most per value, so expansion is bounded before it happens.
        raw = packing.zstd_unpack(data, 6 * (z_count + count) + 2, "latent payload", layout.dictionary)
        z_widths = np.repeat(layout.widths[layout.order], z_count // z_shape[0])
        z_values, offset = packing.read_packed(raw, 0, z_widths)
        z = np.empty(z_shape, dtype=np.int64)
        z[layout.order] = z_values.reshape(z_shape)
        params = hyper_params(w, z, quality)
        order = packing.scale_order(params[1])
        y_values, offset = packing.read_packed(raw, offset, w.scale_widths[params[1].ravel()[order]])
        if offset != len(raw):
            raise FormatError(f"latent payload has {len(raw) - offset} bytes past its values")
        y = np.empty(count, dtype=np.int64)
        y[order] = y_values
        return Symbols(y.reshape(shape), z, params)

    def export_tables(
        self, model, tables: list[range_coder.RangeTables]
    ) -> tuple[dict, list[np.ndarray | None]]:
        """The Gaussian conditional's scale tables, bounds and widths, and z's zstd widths per level.

        Rounds h_s onto its exact grid first: what is exported is what the codec will run.
        """
        model.round_hyper_synthesis()
        scales = scale_table()
        scale_tables = integer_tables.gaussian_tables(scales)
        log_scales = np.log(scales)
        bounds = (log_scales[1:] + log_scales[:-1]) / 2
        z_widths = np.stack([packing.width_for(integer_tables.table_entropy(t)) for t in tables])
        entries = {
            **pack_tables([scale_tables], "scale"),
            "scale_bounds": torch.from_numpy(bounds),
            "scale_widths": torch.from_numpy(packing.width_for(integer_tables.table_entropy(scale_tables))),
            "zstd_widths": torch.from_numpy(z_widths),
        }
        return entries, list(z_widths)

    def load_tables(self, model, bundle: dict) -> dict:
        """Scale tables and bounds, after checking that h_s is on its exact grid."""
        unit = 2.0**model.config.fraction_bits
        if (fan_in := max_fan_in(model.h_s)) >= EXACT_FAN_IN:
            raise ValueError(f"an h_s whose fan-in {fan_in} is too large to compute exactly")
        for p in model.h_s.parameters():
            scaled = p.double() * unit
            if not torch.equal(scaled, scaled.round()) or p.abs().max() > 8:
                raise ValueError(f"an h_s that is not on its {unit:g}-step grid")
        (tables,) = unpack_tables(bundle["scale_lo"], bundle["scale_freqs"], bundle["scale_len"])
        bounds = bundle["scale_bounds"].numpy().astype(np.float64)
        widths = bundle["scale_widths"].numpy().astype(np.int64)
        if len(bounds) + 1 != len(tables.freqs) or not (np.diff(bounds) > 0).all():
            raise ValueError(f"scale bounds that do not fit its {len(tables.freqs)} scale tables")
        z_widths = bundle["zstd_widths"]
        if len(widths) != len(tables.freqs) or z_widths.shape != (model.config.levels, model.config.hyper_M):
            raise ValueError("zstd widths that do not fit its tables")
        if not all(((v >= 1) & (v <= 8)).all() for v in (widths, z_widths.numpy())):
            raise ValueError("zstd widths outside 1..8 bits")
        return {"scale_tables": tables, "scale_bounds": bounds, "scale_widths": widths}

    @torch.inference_mode()
    def bits(self, w: Weights, symbols: Symbols, quality: int) -> float:
        z_hat = (torch.from_numpy(symbols.z) + _offsets(w, quality))[None].float()
        bits = -torch.log2(w.model.z_densities[quality - 1].likelihood(z_hat)).sum()
        _, log_sigma = w.model.exact_hyper_synthesis(z_hat.double())
        sigma = log_sigma.exp().clamp(SCALE_MIN, SCALE_MAX)
        bits -= torch.log2(gaussian_likelihood(torch.from_numpy(symbols.y)[None].double(), sigma)).sum()
        return float(bits)


LATENT_CODECS: dict[str, Factorized | MeanScaleHyperprior] = {
    codec.name: codec for codec in (Factorized(), MeanScaleHyperprior())
}


EXACT_FAN_IN = 1 << 15  # products summed per output of h_s, at most (docs/format.md)


def max_fan_in(layers: torch.nn.Sequential) -> int:
    """The most products any output of these (transposed) convolutions sums."""
    most = 0
    for layer in layers:
        if isinstance(layer, torch.nn.ConvTranspose2d):
            taps = [-(-k // s) for k, s in zip(layer.kernel_size, layer.stride, strict=True)]
            most = max(most, layer.in_channels * taps[0] * taps[1])
        elif isinstance(layer, torch.nn.Conv2d):
            most = max(most, layer.in_channels * layer.kernel_size[0] * layer.kernel_size[1])
    return most


def pack_tables(tables: list[range_coder.RangeTables], prefix: str = "range") -> dict[str, torch.Tensor]:
    """Integer tables as three tensors: lows, zero-padded frequencies and table lengths."""
    width = max(len(f) for t in tables for f in t.freqs)
    freqs = torch.zeros(len(tables), len(tables[0].freqs), width, dtype=torch.int32)
    lengths = torch.zeros(len(tables), len(tables[0].freqs), dtype=torch.int64)
    for q, t in enumerate(tables):
        for c, f in enumerate(t.freqs):
            freqs[q, c, : len(f)] = torch.from_numpy(f.astype(np.int32))
            lengths[q, c] = len(f)
    lows = torch.stack([torch.from_numpy(t.lo) for t in tables])
    return {f"{prefix}_lo": lows, f"{prefix}_freqs": freqs, f"{prefix}_len": lengths}


def unpack_tables(
    lows: torch.Tensor, freqs: torch.Tensor, lengths: torch.Tensor
) -> tuple[range_coder.RangeTables, ...]:
    """The inverse of `pack_tables`."""
    return tuple(
        range_coder.RangeTables(
            lows[q].numpy().astype(np.int64),
            tuple(freqs[q, c, : lengths[q, c]].numpy().astype(np.int64) for c in range(freqs.shape[1])),
        )
        for q in range(freqs.shape[0])
    )


def _offsets(w: Weights, quality: int) -> torch.Tensor:
    """Each channel's rounded median of the factorized tensor (y, or z), shaped (C, 1, 1)."""
    return w.offsets[quality - 1][:, None, None]


def _params(w: Weights, symbols: Symbols, quality: int) -> tuple[torch.Tensor, np.ndarray]:
    return symbols.params if symbols.params is not None else hyper_params(w, symbols.z, quality)


def hyper_params(
    w: Weights, z_symbols: np.ndarray, quality: int, tile: int | None = None
) -> tuple[torch.Tensor, np.ndarray]:
    """From z's integers: y's means (float64, exact on every machine) and each symbol's table index."""
    cfg = w.model.config
    tile, _, _ = tiling(cfg.stride, tile)
    z_hat = torch.from_numpy(z_symbols + w.offsets[quality - 1].numpy()[:, None, None])[None].double()
    params = run_tiled(
        lambda part: torch.cat(w.model.exact_hyper_synthesis(part), dim=1),
        z_hat,
        2 * cfg.M,
        HYPER_STRIDE,
        tile // cfg.stride // HYPER_STRIDE,
        HYPER_HALO // HYPER_STRIDE,
    )[0]
    index = integer_tables.scale_index(params[cfg.M :].numpy(), w.scale_bounds)
    return params[: cfg.M].clone(), index  # a copy, so the log-scales can be freed
