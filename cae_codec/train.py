"""Training: rate-distortion optimisation of a model on CIFAR-10's training rows or on crops of photos."""

from __future__ import annotations

import csv
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from . import weights as weights_mod
from .config import DEFAULT_LAMBDAS, TrainConfig  # noqa: F401  (DEFAULT_LAMBDAS: part of train's API)
from .curves import plot_log
from .datasets import VAL_CROP, PhotoCrops, load_cifar10
from .export import export
from .losses import distortion
from .model import CAE, HyperCAE, ModelConfig, build

FRESH_LR_SCALE = 5  # parts that --init-from did not fill learn this much faster, to catch up
DICTIONARY_ROWS = 3000  # training rows whose latents train each level's zstd dictionary
DICTIONARY_CROPS = 96  # or, for photos, training crops (VAL_CROP pixels a side)
VAL_BATCH = 4  # validation rows come from the start of data_batch_5 (training rows 40000..)


@dataclass
class Progress:
    step: int
    steps: int
    loss: float
    metrics: dict[str, float] | None = None  # set after a validation pass
    exporting: bool = False  # set once, after the last step: the bundle is being written


def split_rows(
    train: np.ndarray, val_rows: int, first_rows: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Hold out `val_rows` rows of the training batches (never the test batch) for validation.

    With `first_rows`, training keeps only the first that many rows of each 10,000-row batch.
    """
    start = VAL_BATCH * 10000 if len(train) >= 50000 else 0
    index = np.arange(len(train))
    keep = (index < start) | (index >= start + val_rows)
    if first_rows is not None:
        keep &= index % 10000 < first_rows
    return train[keep], train[start : start + val_rows]


def sample_batch(
    rng: np.random.Generator, pools: tuple[np.ndarray, np.ndarray], share: float, size: int
) -> np.ndarray:
    """A batch with about `share` of its rows from pools[0] (the exact rows) and the rest from pools[1]."""
    from_first = rng.random(size) < share
    rows = [pool[rng.integers(0, len(pool), size)] for pool in pools]
    return np.where(from_first[:, None, None, None], rows[0], rows[1])


class CifarRows:
    """Training batches of CIFAR-10 rows (optionally mixing in only the exact first rows), with flips."""

    def __init__(self, cfg: TrainConfig) -> None:
        all_rows = load_cifar10("train", cfg.data_dir)
        self.rows, self.validation = split_rows(all_rows, cfg.val_rows, cfg.first_rows)
        self.pools = (self.rows, split_rows(all_rows, cfg.val_rows)[0])
        self.share = cfg.first_rows_share if cfg.first_rows is not None else 1.0

    def batch(self, rng: np.random.Generator, size: int) -> np.ndarray:
        batch = sample_batch(rng, self.pools, self.share, size)
        flip = rng.random(size) < 0.5
        batch[flip] = batch[flip, :, ::-1]
        return np.ascontiguousarray(batch)

    def dictionary_images(self, seed: int) -> np.ndarray:
        return self.rows[np.random.default_rng(seed).permutation(len(self.rows))[:DICTIONARY_ROWS]]


class PhotoSource(PhotoCrops):
    """Random crops of a photo folder (datasets.PhotoCrops) as a training source."""

    def dictionary_images(self, seed: int) -> np.ndarray:
        side = min(VAL_CROP, *(min(im.shape[:2]) for im in self.images))
        return self.batch(np.random.default_rng(seed), DICTIONARY_CROPS, side - side % 64)


def make_source(cfg: TrainConfig) -> CifarRows | PhotoSource:
    """The training data a config names: a photo folder, else CIFAR-10's training batches."""
    if cfg.photos is None:
        return CifarRows(cfg)
    if cfg.crop % 64:
        raise ValueError(f"crop must be a multiple of 64, not {cfg.crop}")
    return PhotoSource(cfg.photos, cfg.crop)


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (B,H,W,3) to float (B,3,H,W) in [0,1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255)


def rd_loss(
    model: torch.nn.Module,
    x: torch.Tensor,
    level: torch.Tensor,
    lambdas: torch.Tensor,
    loss: str = "mse",
    target: torch.Tensor | None = None,
) -> torch.Tensor:
    """lambda * D + bpp of each image (B,), D the scaled distortion term (losses.py; 255^2 * MSE by
    default) at the image's level. `target` (default x) is what x_hat should be: the clean image when
    x is noisy."""
    x_hat, bits = model(x, level)
    target = x if target is None else target
    bpp = bits / (x.shape[2] * x.shape[3])
    return lambdas[level] * distortion(loss, x_hat, target) + bpp


class LevelBalance:
    """Weighs each image's loss by the inverse of its level's running mean loss.

    Unweighted, the high levels' losses (several times the low ones') dominate the gradients of the
    shared transforms. Weighted, a 1 % gain counts alike at every level, as it does in a BD-rate.
    """

    def __init__(self, levels: int, decay: float = 0.98) -> None:
        self.mean = torch.zeros(levels)
        self.decay = decay

    def __call__(self, losses: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        level = level.cpu()  # the running means live on the CPU, wherever training runs
        with torch.no_grad():
            values = losses.detach().cpu()
            for q in level.unique():
                batch_mean = values[level == q].mean()
                old = self.mean[q]
                self.mean[q] = batch_mean if old == 0 else self.decay * old + (1 - self.decay) * batch_mean
            inverse = 1 / self.mean[self.mean > 0]
            weight = (1 / self.mean[level]) / inverse.mean()  # weights average 1 over the levels
        return (losses * weight.to(losses.device)).mean()


def add_noise(x: torch.Tensor, sigma: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """x plus Gaussian noise of std `sigma` 8-bit levels, kept in [0, 1]."""
    if sigma <= 0:
        return x
    noise = torch.randn(x.shape, generator=generator).to(x.device) * (sigma / 255)
    return (x + noise).clamp(0, 1)


@torch.no_grad()
def evaluate(
    model: CAE | HyperCAE,
    images: np.ndarray,
    lambdas: tuple[float, ...],
    loss: str = "mse",
    noise: float = 0.0,
) -> dict[str, float]:
    """Held-out loss, entropy bpp and 8-bit PSNR (against the clean image) per level, with real
    rounding. With `noise`, the inputs get the same noise on every call (a fixed seed)."""
    model.eval()
    clean = to_tensor(images).to(next(model.parameters()).device)
    x = add_noise(clean, noise, torch.Generator().manual_seed(0))
    out: dict[str, float] = {}
    for q in range(model.config.levels):
        level = torch.full((len(x),), q, device=x.device)
        parts = [model(x[i : i + 16], level[i : i + 16], noise=False) for i in range(0, len(x), 16)]
        x_hat, bits = (torch.cat(t) for t in zip(*parts, strict=True))
        x_hat = x_hat.clamp(0, 1).mul(255).round().div(255)
        mse = (x_hat - clean).square().mean(dim=(1, 2, 3))
        bpp = (bits / (x.shape[2] * x.shape[3])).mean().item()
        out[f"bpp_q{q + 1}"] = bpp
        out[f"psnr_q{q + 1}"] = (10 * torch.log10(1 / mse.clamp_min(1e-10))).mean().item()
        out[f"loss_q{q + 1}"] = lambdas[q] * distortion(loss, x_hat, clean).mean().item() + bpp
    model.train()
    return out


def init_network(model: CAE | HyperCAE, path: Path) -> set[str]:
    """Copy in the tensors of a checkpoint or weight bundle that fit `model`; the rest start fresh.

    This lets a hyperprior model start from a factorized model's g_a, g_s and gains. Returns the
    names of the parameters it filled.
    """
    saved = torch.load(path, map_location="cpu", weights_only=True)
    state = saved.get("model") or saved.get("state_dict")
    if state is None:
        raise ValueError(f"{path} holds neither a checkpoint nor a weight bundle")
    own = model.state_dict()
    state = _align_synthesis(state, own)
    fitting = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not fitting:
        raise ValueError(f"nothing in {path} fits this network")
    model.load_state_dict(fitting, strict=False)
    return set(fitting)


def _align_synthesis(state: dict, own: dict) -> dict:
    """Renumber g_s's layers so that both networks' g_s line up at the output end.

    A stride-16 g_s has two more stages than a stride-4 one; its last stages, nearest the pixels,
    have the stride-4 model's shapes.
    """

    def depth(keys) -> int:
        return 1 + max((int(k.split(".")[1]) for k in keys if k.startswith("g_s.")), default=-1)

    shift = depth(own) - depth(state)
    if shift == 0:
        return state
    renamed = {}
    for key, value in state.items():
        if key.startswith("g_s."):
            _, index, rest = key.split(".", 2)
            key = f"g_s.{int(index) + shift}.{rest}"
        renamed[key] = value
    return renamed


def _param_groups(model: CAE | HyperCAE, filled: set[str]) -> list[dict]:
    """Pretrained parameters at the base rate, fresh ones at FRESH_LR_SCALE times it."""
    named = list(model.named_parameters())
    groups = [
        {"params": [p for n, p in named if n in filled], "scale": 1.0},
        {"params": [p for n, p in named if n not in filled], "scale": float(FRESH_LR_SCALE)},
    ]
    return [g for g in groups if g["params"]]


def _lr_at(step: int, cfg: TrainConfig) -> float:
    """Cosine decay from lr to lr/20 over the run."""
    return cfg.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * step / cfg.steps)))


def _save_checkpoint(
    path: Path,
    model,
    opt,
    step: int,
    rng: np.random.Generator,
    cfg: TrainConfig,
    balance: LevelBalance | None,
):
    state = {
        "model": model.state_dict(),
        "opt": opt.state_dict(),
        "step": step,
        "rng": rng.bit_generator.state,
        "torch_rng": torch.get_rng_state(),
        "config": {
            "N": cfg.N,
            "M": cfg.M,
            "hyper_N": cfg.hyper_N,
            "prior": model.config.prior,
            "stride": cfg.stride,
            "lambdas": list(cfg.lambdas),
        },
    }
    if balance:
        state["balance"] = balance.mean
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def curves_path(log_csv: Path) -> Path:
    """Where the curves of a CSV log are drawn: beside it, as a PNG."""
    return log_csv.with_suffix(".png")


def _write_log(path: Path | None, step: int, split: str, metrics: dict[str, float]) -> None:
    if path is None:
        return
    new = not path.exists()
    with path.open("a", newline="") as f:
        writer = csv.writer(f)
        if new:
            writer.writerow(["step", "split", "metric", "value", "time"])
        for key, value in metrics.items():
            writer.writerow([step, split, key, f"{value:.6g}", f"{time.time():.0f}"])


def process_rank() -> int:
    """This process's rank under torchrun (its RANK variable), else 0."""
    return int(os.environ.get("RANK", "0"))


def training_device(name: str, world: int = 1) -> torch.device:
    """The device a run trains on. Under torchrun, `cuda` gives each process its own GPU (LOCAL_RANK)."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}: use cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name}: this PyTorch sees no CUDA GPU (a CPU-only build, or no driver)")
        if device.index is None:
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) if world > 1 else 0)
        if device.index >= torch.cuda.device_count():
            raise ValueError(f"device {name}: there are only {torch.cuda.device_count()} CUDA GPUs")
    elif device.type != "cpu":
        raise ValueError(f"unsupported device {name!r}: use cpu, cuda or cuda:N")
    return device


def _start_processes(device: str) -> tuple[int, int]:
    """(rank, world size): under torchrun, joins its process group (NCCL on CUDA, else gloo)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.device(device).type == "cuda" else "gloo")
    return process_rank(), world


def train(cfg: TrainConfig, on_progress: Callable[[Progress], None] | None = None) -> str:
    """Train (resuming from cfg.checkpoint if it exists) and export the bundle; returns its sha256.

    Under torchrun, each of the N processes trains on its 1/N of every batch with
    DistributedDataParallel; only rank 0 validates, checkpoints, logs and exports (others return "").
    """
    rank, world = _start_processes(cfg.device)
    try:
        return _train(cfg, rank, world, on_progress if rank == 0 else None)
    finally:
        if world > 1:
            dist.destroy_process_group()


def _train(cfg: TrainConfig, rank: int, world: int, on_progress: Callable[[Progress], None] | None) -> str:
    if cfg.batch_size % world:
        raise ValueError(f"batch size {cfg.batch_size} does not split evenly over {world} processes")
    levels = len(cfg.lambdas)
    default_quality = cfg.default_quality or max(1, round(0.75 * levels))
    if not 1 <= default_quality <= levels:
        raise ValueError(f"default quality {default_quality} is outside the {levels} levels")
    device = training_device(cfg.device, world)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    source = make_source(cfg)
    hyper = {"hyper_N": cfg.hyper_N, "hyper_M": cfg.hyper_M} if cfg.hyper_N else {}
    config = ModelConfig(
        N=cfg.N, M=cfg.M, levels=len(cfg.lambdas), stride=cfg.stride, prior=cfg.prior, **hyper
    )
    model = build(config)
    filled = init_network(model, cfg.init_from) if cfg.init_from else {n for n, _ in model.named_parameters()}
    model.to(device)
    opt = torch.optim.Adam(_param_groups(model, filled), lr=cfg.lr)
    lambdas = torch.tensor(cfg.lambdas, device=device)
    balance = LevelBalance(levels) if cfg.balance_levels else None
    step = 0
    if cfg.checkpoint and cfg.checkpoint.exists():
        state = torch.load(cfg.checkpoint, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])  # moves its moments to the parameters' device
        step = state["step"]
        rng.bit_generator.state = state["rng"]
        torch.set_rng_state(state["torch_rng"])
        if balance and "balance" in state:
            balance.mean = state["balance"]
    model.train()
    # Levels absent from a batch leave their densities unused, hence find_unused_parameters.
    ids = [device.index] if device.type == "cuda" else None
    net = DistributedDataParallel(model, ids, find_unused_parameters=True) if world > 1 else model
    mine = slice(rank, None, world)  # every process draws the same batch and keeps its rows
    running = 0.0
    saved_at = time.monotonic()
    while step < cfg.steps:
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, cfg) * group["scale"]
        batch = source.batch(rng, cfg.batch_size)
        level = torch.from_numpy(rng.integers(0, config.levels, cfg.batch_size)).to(device)
        clean = to_tensor(batch[mine]).to(device)
        losses = rd_loss(net, add_noise(clean, cfg.noise), level[mine], lambdas, cfg.loss, clean)
        loss = balance(losses, level[mine]) if balance else losses.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        plain = losses.mean().item()  # unweighted, so that runs with and without balance compare
        running = plain if step == 1 else 0.98 * running + 0.02 * plain
        metrics = None
        evaluate_now = rank == 0 and (step % cfg.eval_every == 0 or step == cfg.steps)
        if evaluate_now:
            metrics = evaluate(model, source.validation, cfg.lambdas, cfg.loss, cfg.noise)
            _write_log(cfg.log_csv, step, "train", {"loss": running})
            _write_log(cfg.log_csv, step, "val", metrics)
            if cfg.log_csv:
                plot_log(cfg.log_csv, curves_path(cfg.log_csv))
        due = evaluate_now or time.monotonic() - saved_at > 60 * cfg.checkpoint_minutes
        if cfg.checkpoint and rank == 0 and due:
            _save_checkpoint(cfg.checkpoint, model, opt, step, rng, cfg, balance)
            saved_at = time.monotonic()
        if on_progress:
            on_progress(Progress(step, cfg.steps, running, metrics))
    if rank != 0:
        return ""
    if on_progress:
        on_progress(Progress(step, cfg.steps, running, exporting=True))
    wid = cfg.weights_id if cfg.weights_id is not None else weights_mod.new_user_id()
    name = cfg.name or cfg.out.stem
    dictionary_images = source.dictionary_images(cfg.seed)
    model.cpu()  # the exact parts are rounded and the tables built on the CPU, wherever training ran
    return export(model, cfg.out, cfg.lambdas, wid, name, default_quality, dictionary_images)


if (
    __name__ == "__main__"
):  # torchrun --nproc_per_node=N -m cae_codec.train --out ... (cae-codec train's options)
    from .cli import train as command

    command()
