"""Weight bundles: the registry of shipped weights and safe loading with hash checks (export.py writes
them)."""

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

from . import packing, range_coder
from .config import FIRST_USER_ID, shipped_dir
from .latent_codecs import LATENT_CODECS, Factorized, MeanScaleHyperprior, unpack_tables
from .model import CAE, HyperCAE, ModelConfig, build

BUNDLE_FORMAT = "cae-codec-weights"
BUNDLE_VERSION = 1  # a whole network
SHARING_VERSION = 2  # a bundle that takes the tensors it lacks from a shipped one, named by id and hash


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
        Shipped(
            4,
            "cae-msh8-photo-v4",
            "cae-msh8-photo-v4.pt",
            "eec8d0089c644d1b9b091039ad2048abd0992f91f9aa713d17df93540e2f2169",
        ),
        Shipped(
            5,
            "cae-msh8-photo-v5",
            "cae-msh8-photo-v5.pt",
            "9d0d47c0cb2ce7daea40cd13512bba701eb52ce9e646c8cf58156d02d54790a4",
        ),
        Shipped(
            6,
            "cae-msh8-photo-denoise-v1",
            "cae-msh8-photo-denoise-v1.pt",
            "20d226abd1bd7581d60fe8c2de4def2aa4f79aba55cb172132c3c494c128fdce",
        ),
        Shipped(
            7,
            "cae-msh8-photo-v7",
            "cae-msh8-photo-v7.pt",
            "1a99dc038c6cdc37ef049d0e0037538bb39c74e90572a88861000018238fdfb7",
        ),
    )
}
RETIRED_IDS = frozenset({1})
DEFAULT_ID = 3  # the CIFAR-trained model: the default for small images, and for all before a photo model
PHOTO_ID: int | None = 7  # the photo model: the default for images of PHOTO_MIN_PIXELS or more
PHOTO_MIN_PIXELS = 48 * 48  # the crossover measured by benchmarks/crossover.py (weights/README.md)


def default_id(width: int, height: int) -> int:
    """The shipped weights the codec uses for an image of this size when none are named."""
    if PHOTO_ID is not None and width * height >= PHOTO_MIN_PIXELS:
        return PHOTO_ID
    return DEFAULT_ID


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
    range_tables: tuple[range_coder.RangeTables, ...]
    zstd_layouts: tuple[packing.ZstdLayout, ...]
    # With a hyperprior: one table per scale of the Gaussian conditional, and the log-scale bounds
    # between neighbouring scales that pick a table for each symbol of y.
    scale_tables: range_coder.RangeTables | None = None
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


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tensor_digest(state: dict[str, torch.Tensor]) -> str:
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


def by_name(name: str) -> Shipped | None:
    """The registry entry with this name (for example "cae-msh8-v3"), if any."""
    return next((entry for entry in REGISTRY.values() if entry.name == name), None)


def resolve(weights: str | os.PathLike | None = None, weights_id: int | None = None) -> Path:
    """The file for a user's choice: a path, a shipped name, else the shipped file for `weights_id`."""
    if weights is not None and not isinstance(weights, (str, os.PathLike)):
        raise TypeError(f"weights must be a path or a shipped name, not {type(weights).__name__}")
    if isinstance(weights, str) and not Path(weights).exists() and (entry := by_name(weights)):
        return shipped_dir() / entry.file
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
    if bundle.get("format_version") not in (BUNDLE_VERSION, SHARING_VERSION):
        raise WeightsError(
            f"{path} has weight format {bundle.get('format_version')}, expected {BUNDLE_VERSION} or "
            f"{SHARING_VERSION}"
        )
    wid = bundle["id"]
    if wid in REGISTRY and sha256(raw) != REGISTRY[wid].sha256:
        raise WeightsError(f"{path} claims shipped id {wid} ({REGISTRY[wid].name}) but its hash differs")
    state = bundle["state_dict"]
    if tensor_digest(state) != bundle["tensor_sha256"]:
        raise WeightsError(f"{path} is damaged or tampered with: its tensors do not match their hash")
    try:
        model = build(ModelConfig(**bundle["config"]))
    except (TypeError, ValueError):
        raise WeightsError(f"{path} describes a network this version cannot build") from None
    if bundle["format_version"] == SHARING_VERSION:
        state = {**_shared_state(path, bundle.get("base")), **state}
    try:
        model.load_state_dict(state)
    except RuntimeError:
        raise WeightsError(f"{path} does not fit the network its config describes") from None
    model.eval().requires_grad_(False)
    tables = unpack_tables(bundle["range_lo"], bundle["range_freqs"], bundle["range_len"])
    if len(tables) != model.config.levels:
        raise WeightsError(f"{path} has range tables for {len(tables)} levels, not {model.config.levels}")
    widths = bundle.get("zstd_widths")
    try:
        prior_tables = LATENT_CODECS[model.config.prior].load_tables(model, bundle)
    except ValueError as e:
        raise WeightsError(f"{path} has {e}") from None
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
            packing.ZstdLayout(
                order.numpy().astype(np.int64),
                bytes(d.numpy().tobytes()) or None,
                widths[q].numpy().astype(np.int64) if widths is not None else None,
            )
            for q, (order, d) in enumerate(zip(bundle["zstd_order"], bundle["zstd_dicts"], strict=True))
        ),
        **prior_tables,
    )


def _shared_state(path: Path, base: object) -> dict[str, torch.Tensor]:
    """The tensors of the shipped bundle that a sharing bundle names, once its id and hash check out."""
    if not isinstance(base, dict) or base.get("id") not in REGISTRY:
        raise WeightsError(f"{path} builds on weights that this version does not ship")
    entry = REGISTRY[base["id"]]
    if base.get("sha256") != entry.sha256:
        raise WeightsError(f"{path} builds on a {entry.name} other than the shipped one")
    return load(weights_id=entry.id).model.state_dict()


def new_user_id() -> int:
    """A fresh id for user-trained weights, above the shipped range (4 bytes as a varint)."""
    return FIRST_USER_ID + secrets.randbelow(1 << 21)
