"""Writing weight bundles: the network plus every table the codec needs, in one checked file.

A bundle holds, per quality level, the rounded medians and integer range tables of the tensor coded
first (y, or z with a hyperprior), its zstd channel order and a zstd dictionary trained on training
images, plus what the model's prior adds (latent_codecs.py). weights.py loads and checks it.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch

from . import integer_tables, packing
from .latent_codecs import LATENT_CODECS, pack_tables
from .model import CAE, HyperCAE
from .weights import BUNDLE_FORMAT, BUNDLE_VERSION, REGISTRY, SHARING_VERSION, Weights, sha256, tensor_digest


def export(
    model: CAE | HyperCAE,
    path: Path,
    lambdas: tuple[float, ...],
    weights_id: int,
    name: str,
    default_quality: int,
    dictionary_images: np.ndarray | None = None,
    base: Weights | None = None,
) -> str:
    """Write a bundle; returns the file's sha256 (what a registry entry records).

    `dictionary_images` (training images, uint8 NxHxWx3) train the zstd dictionaries; without
    them the bundle has none. With a shipped `base`, tensors equal to the base's are left out and
    taken from it when loading (a new h_s for an old g_a and g_s costs its own size only).
    """
    if base is not None and (base.id not in REGISTRY or base.path.name != REGISTRY[base.id].file):
        raise ValueError(f"a bundle can share tensors only with shipped weights, not {base.name}")
    model = model.eval()
    latent = LATENT_CODECS[model.config.prior]
    offsets = torch.stack([d.medians().round() for d in model.factorized]).long()
    half = integer_tables.RANGE_HALF_WIDTH
    tables = [
        integer_tables.quantize_pmf(d.pmf_grid(offsets[q], half).numpy(), half)
        for q, d in enumerate(model.factorized)
    ]
    orders = [np.argsort(integer_tables.table_entropy(t), kind="stable") for t in tables]
    entries, widths = latent.export_tables(model, tables)
    layouts = tuple(packing.ZstdLayout(o, None, wd) for o, wd in zip(orders, widths, strict=True))
    provisional = Weights(
        weights_id, name, path, model, tuple(lambdas), offsets, default_quality, tuple(tables), layouts,
        **latent.load_tables(model, entries),
    )  # fmt: skip
    dicts = _dictionaries(provisional, dictionary_images) if dictionary_images is not None else []
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if base is not None:
        shared = base.model.state_dict()
        state = {k: v for k, v in state.items() if k not in shared or not torch.equal(v, shared[k])}
    bundle = {
        "format": BUNDLE_FORMAT,
        "format_version": BUNDLE_VERSION if base is None else SHARING_VERSION,
        **({"base": {"id": base.id, "sha256": REGISTRY[base.id].sha256}} if base is not None else {}),
        "id": weights_id,
        "name": name,
        "config": model.config.to_dict(),
        "lambdas": list(lambdas),
        "default_quality": default_quality,
        "offsets": offsets,
        **pack_tables(tables),
        **entries,
        "zstd_order": torch.from_numpy(np.stack(orders)),
        "zstd_dicts": [torch.from_numpy(np.frombuffer(d, dtype=np.uint8).copy()) for d in dicts]
        or [torch.zeros(0, dtype=torch.uint8) for _ in orders],
        "state_dict": state,
        "tensor_sha256": tensor_digest(state),
    }
    buffer = io.BytesIO()
    torch.save(bundle, buffer)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(buffer.getvalue())
    tmp.replace(path)
    return sha256(buffer.getvalue())


@torch.no_grad()
def _dictionaries(w: Weights, images: np.ndarray) -> list[bytes]:
    """One zstd dictionary per level, trained on exactly the bytes the zstd coder will compress."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255)
    chunk = max(1, (256 * 32 * 32) // (x.shape[2] * x.shape[3]))  # bounded memory for any image size
    dicts = []
    for q in range(1, w.levels + 1):
        samples = []
        for i in range(0, len(x), chunk):
            y = w.model.analysis(x[i : i + chunk], torch.full((len(x[i : i + chunk]),), q - 1))
            for j in range(len(y)):
                samples.append(w.latent.zstd_bytes(w, w.latent.quantize(w, y[j : j + 1], q), q))
        dicts.append(packing.train_dictionary(samples))
    return dicts
