"""Weight bundles: the registry of shipped weights, safe loading with hash checks, and export."""

from __future__ import annotations

import hashlib
import io
import os
import secrets
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from . import entropy
from .latent_codecs import LATENT_CODECS, Factorized, MeanScaleHyperprior
from .model import CAE, HyperCAE, ModelConfig, build, scale_table

BUNDLE_FORMAT = "cae-codec-weights"
BUNDLE_VERSION = 1
FIRST_USER_ID = 1 << 16  # ids below this are reserved for weights that ship with the package


class WeightsError(Exception):
    """A weight file is missing, damaged, tampered with, or not the one a .cae file needs."""


@dataclass(frozen=True)
class Shipped:
    """One entry of the registry: an id is bound to exactly one file, by hash, forever."""

    id: int
    name: str
    file: str
    sha256: str


# Ids are never reused: a new bundle gets a new id, and old entries stay so old files keep decoding.
# Id 1 (cae-fp8-v1) was superseded by id 2 before any release and never shipped; it is retired.
REGISTRY: dict[int, Shipped] = {
    entry.id: entry
    for entry in (
        Shipped(
            2,
            "cae-fp8-v2",
            "cae-fp8-v2.pt",
            "2f65b13fbc1d4078f67d3d688acd9bd9903c3c36e40d1e4acf5a4997375cfe59",
        ),
        Shipped(
            3,
            "cae-msh8-v3",
            "cae-msh8-v3.pt",
            "d5d4cd7b44e357cd7ac7fc9840d15a67ecf96be8cedaff4f31af7af2630702e4",
        ),
    )
}
RETIRED_IDS = frozenset({1})
DEFAULT_ID = 3


@dataclass(frozen=True)
class Weights:
    """A loaded bundle: the network plus what the codec needs to use it."""

    id: int
    name: str
    path: Path
    model: CAE | HyperCAE
    lambdas: tuple[float, ...]
    # Per level, for the factorized tensor (y, or z with a hyperprior): each channel's rounded median
    # (levels, C) int64, subtracted before packing; its range tables; its zstd order and dictionary.
    offsets: torch.Tensor
    default_quality: int
    range_tables: tuple[entropy.RangeTables, ...]
    zstd_layouts: tuple[entropy.ZstdLayout, ...]
    # With a hyperprior: one table per scale of the Gaussian conditional, and the log-scale bounds
    # between neighbouring scales that pick a table for each symbol of y.
    scale_tables: entropy.RangeTables | None = None
    scale_bounds: np.ndarray | None = None
    scale_widths: np.ndarray | None = None  # zstd packing width of a y value, per scale table

    @property
    def levels(self) -> int:
        return self.model.config.levels

    @property
    def hyper(self) -> bool:
        return isinstance(self.model, HyperCAE)

    @property
    def latent(self) -> Factorized | MeanScaleHyperprior:
        """The latent codec of this model's prior: integers, coders and bit estimates."""
        return LATENT_CODECS[self.model.config.prior]


def shipped_dir() -> Path:
    """Where the shipped weights live: inside the installed package, or `weights/` in a checkout."""
    installed = Path(__file__).parent / "weights"
    return installed if installed.is_dir() else Path(__file__).parent.parent / "weights"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _tensor_digest(state: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for key in sorted(state):
        digest.update(key.encode())
        digest.update(state[key].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def not_installed(weights_id: int) -> str:
    """The message for a weights id that no installed bundle has."""
    kind = "shipped" if weights_id < FIRST_USER_ID else "user-trained"
    return (
        f"made with {kind} weights id {weights_id}, which are not installed; "
        "pass its weight file with --weights"
    )


def resolve(weights: str | os.PathLike | None = None, weights_id: int | None = None) -> Path:
    """The file for a user's choice: an explicit path, else the shipped file for `weights_id`."""
    if weights is not None:
        return Path(weights)
    wid = DEFAULT_ID if weights_id is None else weights_id
    if wid not in REGISTRY:
        raise WeightsError(not_installed(wid))
    return shipped_dir() / REGISTRY[wid].file


def load(weights: str | os.PathLike | None = None, weights_id: int | None = None) -> Weights:
    """Load and verify a bundle (no code is executed: torch.load with weights_only=True)."""
    path = resolve(weights, weights_id).resolve()
    try:
        stat = path.stat()
    except OSError as e:
        raise WeightsError(f"cannot read weights {path}: {e.strerror}") from None
    return _load_cached(path, stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=4)
def _load_cached(path: Path, mtime_ns: int, size: int) -> Weights:
    raw = path.read_bytes()
    try:
        bundle = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many kinds for a damaged or foreign file
        raise WeightsError(f"{path} is not a cae-codec weight file ({type(e).__name__})") from None
    if not isinstance(bundle, dict) or bundle.get("format") != BUNDLE_FORMAT:
        raise WeightsError(f"{path} is not a cae-codec weight file")
    if bundle.get("format_version") != BUNDLE_VERSION:
        raise WeightsError(
            f"{path} has weight format {bundle.get('format_version')}, expected {BUNDLE_VERSION}"
        )
    wid = bundle["id"]
    if wid in REGISTRY and _sha256(raw) != REGISTRY[wid].sha256:
        raise WeightsError(f"{path} claims shipped id {wid} ({REGISTRY[wid].name}) but its hash differs")
    state = bundle["state_dict"]
    if _tensor_digest(state) != bundle["tensor_sha256"]:
        raise WeightsError(f"{path} is damaged or tampered with: its tensors do not match their hash")
    model = build(ModelConfig(**bundle["config"]))
    try:
        model.load_state_dict(state)
    except RuntimeError:
        raise WeightsError(f"{path} does not fit the network its config describes") from None
    model.eval().requires_grad_(False)
    tables = _unpack_tables(bundle["range_lo"], bundle["range_freqs"], bundle["range_len"])
    if len(tables) != model.config.levels:
        raise WeightsError(f"{path} has range tables for {len(tables)} levels, not {model.config.levels}")
    hyper = {}
    widths = bundle.get("zstd_widths")
    if isinstance(model, HyperCAE):
        hyper = _hyper_parts(path, model, bundle)
    return Weights(
        id=wid,
        name=bundle["name"],
        path=path,
        model=model,
        lambdas=tuple(bundle["lambdas"]),
        offsets=bundle["offsets"],
        default_quality=bundle["default_quality"],
        range_tables=tables,
        zstd_layouts=tuple(
            entropy.ZstdLayout(
                order.numpy().astype(np.int64),
                bytes(d.numpy().tobytes()) or None,
                widths[q].numpy().astype(np.int64) if widths is not None else None,
            )
            for q, (order, d) in enumerate(zip(bundle["zstd_order"], bundle["zstd_dicts"], strict=True))
        ),
        **hyper,
    )


def _hyper_parts(path: Path, model: HyperCAE, bundle: dict) -> dict:
    """The scale tables and bounds of a hyperprior bundle, after checking that h_s is exact."""
    unit = 2.0**model.config.fraction_bits
    for p in model.h_s.parameters():
        scaled = p.double() * unit
        if not torch.equal(scaled, scaled.round()) or p.abs().max() > 8:
            raise WeightsError(f"{path} has an h_s that is not on its {unit:g}-step grid")
    (tables,) = _unpack_tables(bundle["scale_lo"], bundle["scale_freqs"], bundle["scale_len"])
    bounds = bundle["scale_bounds"].numpy().astype(np.float64)
    widths = bundle["scale_widths"].numpy().astype(np.int64)
    if len(bounds) + 1 != len(tables.freqs) or not (np.diff(bounds) > 0).all():
        raise WeightsError(f"{path} has scale bounds that do not fit its {len(tables.freqs)} scale tables")
    z_widths = bundle["zstd_widths"]
    if len(widths) != len(tables.freqs) or z_widths.shape != (model.config.levels, model.config.hyper_M):
        raise WeightsError(f"{path} has zstd widths that do not fit its tables")
    if not all(((v >= 1) & (v <= 8)).all() for v in (widths, z_widths.numpy())):
        raise WeightsError(f"{path} has zstd widths outside 1..8 bits")
    return {"scale_tables": tables, "scale_bounds": bounds, "scale_widths": widths}


def _pack_tables(tables: list[entropy.RangeTables], prefix: str = "range") -> dict[str, torch.Tensor]:
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


def _unpack_tables(
    lows: torch.Tensor, freqs: torch.Tensor, lengths: torch.Tensor
) -> tuple[entropy.RangeTables, ...]:
    return tuple(
        entropy.RangeTables(
            lows[q].numpy().astype(np.int64),
            tuple(freqs[q, c, : lengths[q, c]].numpy().astype(np.int64) for c in range(freqs.shape[1])),
        )
        for q in range(freqs.shape[0])
    )


def new_user_id() -> int:
    """A fresh id for user-trained weights, above the shipped range (4 bytes as a varint)."""
    return FIRST_USER_ID + secrets.randbelow(1 << 21)


@torch.no_grad()
def _dictionaries(
    model: CAE | HyperCAE,
    offsets: torch.Tensor,
    layouts: list[entropy.ZstdLayout],
    images: np.ndarray,
    scales: tuple | None,
) -> list[bytes]:
    """One zstd dictionary per level, trained on the zstd-ordered bytes of training images."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255)
    chunk = max(1, (256 * 32 * 32) // (x.shape[2] * x.shape[3]))  # bounded memory for any image size
    dicts = []
    for q, layout in enumerate(layouts):
        samples = []
        for i in range(0, len(x), chunk):
            level = torch.full((len(x[i : i + chunk]),), q)
            y = model.analysis(x[i : i + chunk], level)
            if isinstance(model, HyperCAE):
                z = torch.round(model.hyper_analysis(y))
                mu, log_sigma = model.exact_hyper_synthesis(z)
                y_sym = torch.round(y.double() - mu).long().numpy()
                z_sym = (z.long() - offsets[q][None, :, None, None]).numpy()
                index = entropy.scale_index(log_sigma.numpy(), scales[1])
                samples += [
                    entropy.hyper_raw(*entropy.hyper_layout(z_sym[j], y_sym[j], index[j], layout, scales[2]))
                    for j in range(len(y))
                ]
            else:
                symbols = (torch.round(y).long() - offsets[q][None, :, None, None]).numpy()
                samples += [entropy.symbol_bytes(s, layout.order) for s in symbols]
        dicts.append(entropy.train_dictionary(samples))
    return dicts


def _scales() -> tuple[entropy.RangeTables, np.ndarray, np.ndarray]:
    """The Gaussian conditional's integer tables, the log-scale bounds between them, their widths."""
    scales = scale_table()
    tables = entropy.gaussian_tables(scales)
    log_scales = np.log(scales)
    bounds = (log_scales[1:] + log_scales[:-1]) / 2
    return tables, bounds, entropy.width_for(entropy.table_entropy(tables))


def export(
    model: CAE | HyperCAE,
    path: Path,
    lambdas: tuple[float, ...],
    weights_id: int,
    name: str,
    default_quality: int,
    dictionary_images: np.ndarray | None = None,
) -> str:
    """Write a bundle; returns the file's sha256 (what a registry entry records).

    `dictionary_images` (training images, uint8 NxHxWx3) train the zstd dictionaries; without
    them the bundle has none.
    """
    model = model.eval()
    densities = model.z_densities if isinstance(model, HyperCAE) else model.densities
    offsets = torch.stack([d.medians().round() for d in densities]).long()
    half = entropy.RANGE_HALF_WIDTH
    tables = [
        entropy.quantize_pmf(d.pmf_grid(offsets[q], half).numpy(), half) for q, d in enumerate(densities)
    ]
    orders = [np.argsort(entropy.table_entropy(t), kind="stable") for t in tables]
    layouts = [entropy.ZstdLayout(order) for order in orders]
    hyper: dict[str, torch.Tensor] = {}
    scales = None
    if isinstance(model, HyperCAE):
        model.round_hyper_synthesis()
        scales = _scales()
        z_widths = np.stack([entropy.width_for(entropy.table_entropy(t)) for t in tables])
        layouts = [entropy.ZstdLayout(o, None, z) for o, z in zip(orders, z_widths, strict=True)]
        hyper = {
            **_pack_tables([scales[0]], "scale"),
            "scale_bounds": torch.from_numpy(scales[1]),
            "scale_widths": torch.from_numpy(scales[2]),
            "zstd_widths": torch.from_numpy(z_widths),
        }
    dicts = (
        _dictionaries(model, offsets, layouts, dictionary_images, scales)
        if dictionary_images is not None
        else []
    )
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    bundle = {
        "format": BUNDLE_FORMAT,
        "format_version": BUNDLE_VERSION,
        "id": weights_id,
        "name": name,
        "config": model.config.to_dict(),
        "lambdas": list(lambdas),
        "default_quality": default_quality,
        "offsets": offsets,
        **_pack_tables(tables),
        **hyper,
        "zstd_order": torch.from_numpy(np.stack(orders)),
        "zstd_dicts": [torch.from_numpy(np.frombuffer(d, dtype=np.uint8).copy()) for d in dicts]
        or [torch.zeros(0, dtype=torch.uint8) for _ in orders],
        "state_dict": state,
        "tensor_sha256": _tensor_digest(state),
    }
    buffer = io.BytesIO()
    torch.save(bundle, buffer)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(buffer.getvalue())
    tmp.replace(path)
    return _sha256(buffer.getvalue())
