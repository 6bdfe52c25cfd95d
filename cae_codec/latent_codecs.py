"""Latent codecs: one per kind of prior (ModelConfig.prior), in the spirit of CompressAI's latent_codecs.

Each turns g_a's output y into integers (`quantize`) and back (`dequantize`), writes and reads them
with an entropy coder of container.CODERS, and estimates their bits. codec.py runs g_a and g_s and
leaves everything between them to the latent codec of the model's prior.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch

from . import integer_tables, packing, range_coder
from .container import FormatError
from .integer_tables import scale_index
from .model import HYPER_STRIDE, SCALE_MAX, SCALE_MIN, anchors, gaussian_likelihood, scale_table
from .tiling import run_tiled, tiling

if TYPE_CHECKING:
    from .weights import Weights

HYPER_HALO = 16  # latent px around an h_a tile (receptive field 15)
# z px around an h_s tile: its receptive field reaches 1 + 1/2 + 1/4 z px (two 5x5/2 transposed
# convolutions, then a 3x3), so 2 give the same integers as one pass (tested); 4 were 12 % slower.
SYNTHESIS_HALO = 2
CONTEXT_HALO = 2  # latent px around a tile of the checkerboard's 5x5 context model


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

    def quantize(
        self, w: Weights, y: torch.Tensor, quality: int, tile: int | None = None, bf16: bool = False
    ) -> Symbols:
        return self.quantize_many(w, y, quality, tile, bf16)[0]

    def quantize_many(
        self, w: Weights, y: torch.Tensor, quality: int, tile: int | None = None, bf16: bool = False
    ) -> list[Symbols]:
        """The integers of each latent in a batch y (B, M, h, w)."""
        return [Symbols(v) for v in (torch.round(y).long() - _offsets(w, quality)).numpy()]

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


class Part(NamedTuple):
    """One coding pass over y: its flat positions and, for each, mu, log sigma and the table index."""

    positions: np.ndarray | slice  # a slice where a pass takes all of y, in order: no gather then
    mu: torch.Tensor
    log_sigma: torch.Tensor
    index: np.ndarray


class MeanScaleHyperprior:
    """z (factorized, per channel) first; y as round(y - mu), coded with the Gaussian table of its
    predicted scale. h_s runs in exact arithmetic, so both sides derive the same mu and tables."""

    name = "mean-scale"

    def passes(self, shape: tuple[int, int, int]) -> list[np.ndarray | slice]:
        """Flat positions of y, pass by pass in coding order: here all of y in one pass."""
        return [slice(None)]

    def pass_params(
        self, w: Weights, hyper: torch.Tensor, y_hat: torch.Tensor, p: int, tile: int | None = None
    ) -> torch.Tensor:
        """(mu, log sigma) stacked, (2M, h, w) float64, for pass `p` given y_hat decoded so far."""
        return hyper

    def walk(
        self, w: Weights, hyper: torch.Tensor, take: Callable[[Part], np.ndarray], tile: int | None = None
    ) -> Symbols:
        """Run the passes in coding order. `take` gives a pass's integers (the encoder rounds y, a decoder
        reads them); returns y's integers with their (mu, table index)."""
        M = w.model.config.M
        shape = (M, *hyper.shape[1:])
        passes = self.passes(shape)
        if len(passes) == 1 and passes[0] == slice(None):  # all of y at once: nothing to gather
            params = self.pass_params(w, hyper, None, 0, tile).reshape(2, -1)
            part = Part(passes[0], params[0], params[1], scale_index(params[1], w.scale_bounds))
            values = take(part).reshape(shape)
            return Symbols(values, None, (params[0].view(shape), part.index.reshape(shape)))
        count = int(np.prod(shape))
        y, index = np.zeros(count, np.int64), np.zeros(count, np.int64)
        mu, y_hat = torch.zeros(count, dtype=torch.float64), torch.zeros(count, dtype=torch.float64)
        for p, positions in enumerate(passes):
            params = self.pass_params(w, hyper, y_hat.view(shape), p, tile).reshape(2, -1)
            log_sigma = params[1, positions]
            part = Part(positions, params[0, positions], log_sigma, scale_index(log_sigma, w.scale_bounds))
            values = take(part)
            y[positions], mu[positions], index[positions] = values, part.mu, part.index
            y_hat[positions] = torch.from_numpy(values).double() + part.mu
        return Symbols(y.reshape(shape), None, (mu.view(shape), index.reshape(shape)))

    def quantize(
        self, w: Weights, y: torch.Tensor, quality: int, tile: int | None = None, bf16: bool = False
    ) -> Symbols:
        return self.quantize_many(w, y, quality, tile, bf16)[0]

    def quantize_many(
        self, w: Weights, y: torch.Tensor, quality: int, tile: int | None = None, bf16: bool = False
    ) -> list[Symbols]:
        """The integers of each latent in a batch y (B, M, h, w); h_a and h_s run on the whole batch;
        `bf16`: h_a in bfloat16, channels-last (codec.use_bf16)."""
        cfg = w.model.config
        tile, _, _ = tiling(cfg.stride, tile)
        z = run_tiled(
            lambda part: w.model.hyper_analysis(part, bf16),
            y,
            cfg.hyper_M,
            1 / HYPER_STRIDE,
            tile // cfg.stride,
            HYPER_HALO,
            channels_last=bf16,
        )
        z_symbols = (torch.round(z).long() - _offsets(w, quality)).numpy()
        hyper = hyper_features(w, z_symbols, quality, tile)
        out = []
        for b in range(len(y)):
            flat = y[b].reshape(-1)  # float32: the subtraction promotes it to float64 exactly
            walked = self.walk(
                w,
                hyper[b],
                lambda part, flat=flat: torch.sub(flat[part.positions], part.mu).round_().long().numpy(),
                tile,
            )
            out.append(Symbols(walked.y, z_symbols[b], walked.params))
        return out

    def dequantize(self, w: Weights, symbols: Symbols, quality: int) -> torch.Tensor:
        mu, _ = self._params(w, symbols, quality)
        return (torch.from_numpy(symbols.y) + mu)[None].float()

    def _params(self, w: Weights, symbols: Symbols, quality: int) -> tuple[torch.Tensor, np.ndarray]:
        if symbols.params is not None:
            return symbols.params
        flat = symbols.y.ravel()
        return self.walk(w, hyper_features(w, symbols.z, quality), lambda part: flat[part.positions]).params

    def zstd_bytes(self, w: Weights, symbols: Symbols, quality: int) -> bytes:
        """What the zstd coder compresses: z, then each pass's y sorted by scale, each bit-packed."""
        _, index = self._params(w, symbols, quality)
        y, index = symbols.y.ravel(), index.ravel()
        parts = [
            packing.scale_part(y[pos], index[pos], w.scale_widths, _scale_order(symbols, p, index[pos]))
            for p, pos in enumerate(self.passes(symbols.y.shape))
        ]
        return packing.hyper_raw(packing.channel_part(symbols.z, w.zstd_layouts[quality - 1]), *parts)

    def write(self, w: Weights, symbols: Symbols, quality: int, coder: str) -> bytes:
        if coder == "zstd":
            return packing.zstd_pack(
                self.zstd_bytes(w, symbols, quality), w.zstd_layouts[quality - 1].dictionary
            )
        _, index = self._params(w, symbols, quality)
        y, index = symbols.y.ravel(), index.ravel()
        z_groups = list(symbols.z.reshape(len(symbols.z), -1))
        parts = [(z_groups, w.range_tables[quality - 1], range(len(z_groups)))]
        for p, pos in enumerate(self.passes(symbols.y.shape)):
            used, counts = packing.scale_counts(index[pos])
            groups = np.split(y[pos][_scale_order(symbols, p, index[pos])], np.cumsum(counts)[:-1])
            parts.append((groups, w.scale_tables, used))
        return range_coder.range_encode_parts(parts)

    def read(self, w: Weights, data: bytes, shape: tuple[int, int, int], quality: int, coder: str) -> Symbols:
        z, finish = self.start_read(w, data, shape, quality, coder)
        return finish(hyper_features(w, z, quality))

    def start_read(
        self, w: Weights, data: bytes, shape: tuple[int, int, int], quality: int, coder: str
    ) -> tuple[np.ndarray, Callable[[torch.Tensor], Symbols]]:
        """z's integers, and what reads y from the rest given h_s's output on them: so that a batch
        of files reads every z first and runs h_s once for all."""
        z_shape = (w.model.config.hyper_M, shape[1] // HYPER_STRIDE, shape[2] // HYPER_STRIDE)
        if coder == "zstd":
            return self._start_zstd(w, data, quality, z_shape, shape)
        reader = range_coder.RangeReader(data)
        z_count = int(np.prod(z_shape))
        z = reader.read_flat([z_count // z_shape[0]] * z_shape[0], w.range_tables[quality - 1]).reshape(
            z_shape
        )

        def take(part: Part) -> np.ndarray:
            used, counts = packing.scale_counts(part.index)
            values = np.empty(len(part.index), dtype=np.int64)
            if len(values):
                values[packing.scale_order(part.index)] = reader.read_flat(counts, w.scale_tables, used)
            return values

        def finish(hyper: torch.Tensor) -> Symbols:
            walked = self.walk(w, hyper, take)
            return Symbols(walked.y, z, walked.params)

        return z, finish

    def _start_zstd(self, w: Weights, data: bytes, quality: int, z_shape: tuple, shape: tuple):
        layout = w.zstd_layouts[quality - 1]
        z_count, count = int(np.prod(z_shape)), int(np.prod(shape))
        # 1 byte of bits and 5 of escape at most per value, so expansion is bounded before it happens.
        raw = packing.zstd_unpack(data, 6 * (z_count + count) + 2, "latent payload", layout.dictionary)
        z_widths = np.repeat(layout.widths[layout.order], z_count // z_shape[0])
        z_values, offset = packing.read_packed(raw, 0, z_widths)
        z = np.empty(z_shape, dtype=np.int64)
        z[layout.order] = z_values.reshape(z_shape)

        def take(part: Part) -> np.ndarray:
            nonlocal offset
            order = packing.scale_order(part.index)
            values = np.empty(len(part.index), dtype=np.int64)
            values[order], offset = packing.read_packed(raw, offset, w.scale_widths[part.index[order]])
            return values

        def finish(hyper: torch.Tensor) -> Symbols:
            walked = self.walk(w, hyper, take)
            if offset != len(raw):
                raise FormatError(f"latent payload has {len(raw) - offset} bytes past its values")
            return Symbols(walked.y, z, walked.params)

        return z, finish

    def export_tables(
        self, model, tables: list[range_coder.RangeTables]
    ) -> tuple[dict, list[np.ndarray | None]]:
        """The Gaussian conditional's scale tables, bounds and widths, and z's zstd widths per level.

        Rounds h_s (and any context model) onto its exact grid first: what is exported is what runs.
        """
        model.round_exact_parts()
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
        """Scale tables and bounds, after checking that h_s (and any context model) is on its exact grid."""
        unit = 2.0**model.config.fraction_bits
        for part in model.exact_parts:
            if (fan_in := max_fan_in(part)) >= EXACT_FAN_IN:
                raise ValueError(f"an exact layer whose fan-in {fan_in} is too large to compute exactly")
            for p in part.parameters():
                scaled = p.double() * unit
                if not torch.equal(scaled, scaled.round()) or p.abs().max() > 8:
                    raise ValueError(f"an h_s or context model not on its {unit:g}-step grid")
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
        bits = [float(-torch.log2(w.model.z_densities[quality - 1].likelihood(z_hat)).sum())]
        flat = symbols.y.ravel()

        def take(part: Part) -> np.ndarray:
            sigma = part.log_sigma.exp().clamp(SCALE_MIN, SCALE_MAX)
            values = flat[part.positions]
            bits.append(
                float(-torch.log2(gaussian_likelihood(torch.from_numpy(values).double(), sigma)).sum())
            )
            return values

        self.walk(w, hyper_features(w, symbols.z, quality), take)
        return sum(bits)


class Checkerboard(MeanScaleHyperprior):
    """The mean-scale hyperprior's coding with two passes over y (He et al. 2021): the anchors (row +
    column even) with parameters from z alone, then the others with the anchors' context too."""

    name = "checkerboard"

    def passes(self, shape: tuple[int, int, int]) -> list[np.ndarray]:
        anchor = anchors(*shape[1:])[0].expand(shape).reshape(-1).numpy()
        return [np.flatnonzero(anchor), np.flatnonzero(~anchor)]

    def pass_params(
        self, w: Weights, hyper: torch.Tensor, y_hat: torch.Tensor, p: int, tile: int | None = None
    ) -> torch.Tensor:
        cfg = w.model.config
        M2 = 2 * cfg.M
        if p == 0:
            x, fn = hyper, lambda part: w.model.exact_entropy_parameters(part, None)
        else:
            x = torch.cat([hyper, y_hat])
            fn = lambda part: w.model.exact_entropy_parameters(part[:, :M2], part[:, M2:])  # noqa: E731
        latent_tile = tiling(cfg.stride, tile)[0] // cfg.stride
        return run_tiled(fn, x[None], M2, 1, latent_tile, CONTEXT_HALO)[0]


LATENT_CODECS: dict[str, Factorized | MeanScaleHyperprior] = {
    codec.name: codec for codec in (Factorized(), MeanScaleHyperprior(), Checkerboard())
}


EXACT_FAN_IN = 1 << 15  # products summed per output of an exact layer, at most (docs/format.md)


def max_fan_in(layers: torch.nn.Module) -> int:
    """The most products any output of these (transposed) convolutions sums."""
    most = 0
    for layer in layers.modules():
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


def _scale_order(symbols: Symbols, p: int, index: np.ndarray) -> np.ndarray:
    """packing.scale_order of pass p's table indexes, sorted once per Symbols: auto's two coders
    both need it (a 1-megapixel segment's sort costs about 30 ms)."""
    cache = symbols.__dict__.setdefault("_scale_orders", {})  # a cache beside the frozen fields
    if p not in cache:
        cache[p] = packing.scale_order(index)
    return cache[p]


def hyper_features(w: Weights, z_symbols: np.ndarray, quality: int, tile: int | None = None) -> torch.Tensor:
    """From z's integers (Z, h, w): h_s's output (2M, h, w), float64 and exact on every machine.
    A batch of z (B, Z, h, w) gives a batch (B, 2M, h, w)."""
    if z_symbols.ndim == 3:
        return hyper_features(w, z_symbols[None], quality, tile)[0]
    cfg = w.model.config
    tile, _, _ = tiling(cfg.stride, tile)
    z_hat = torch.from_numpy(z_symbols + w.offsets[quality - 1].numpy()[:, None, None]).double()
    return run_tiled(
        w.model.exact_hyper_synthesis,
        z_hat,
        2 * cfg.M,
        HYPER_STRIDE,
        tile // cfg.stride // HYPER_STRIDE,
        SYNTHESIS_HALO,
    )
