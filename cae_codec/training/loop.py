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

from ..config import DEFAULT_LAMBDAS, TrainConfig  # noqa: F401  (DEFAULT_LAMBDAS: part of train's API)
from ..model import CAE, HyperCAE, ModelConfig, build
from . import state as state_mod
from .curves import plot_log
from .losses import distortion
from .sources import CifarRows, PhotoSource, make_source, to_device, to_tensor

FRESH_LR_SCALE = 5  # parts that --init-from did not fill learn this much faster, to catch up
REPORT_EVERY = 20  # steps between reading the running loss back from the device (each read waits for it)


@dataclass
class Progress:
    step: int
    steps: int
    loss: float
    done: float = 0.0  # the share of the run behind us: of its steps, or of its --minutes
    metrics: dict[str, float] | None = None  # set after a validation pass
    exporting: bool = False  # set once, after the last step: the bundle is being written


def rd_loss(
    model: torch.nn.Module,
    x: torch.Tensor,
    level: torch.Tensor,
    lambdas: torch.Tensor,
    loss: str = "mse",
    target: torch.Tensor | None = None,
    bf16: bool = False,
) -> torch.Tensor:
    """lambda * D + bpp of each image (B,), D the scaled distortion term (losses.py; 255^2 * MSE by
    default) at the image's level. `target` (default x) is what x_hat should be: the clean image when
    x is noisy. `bf16`: the transforms in bfloat16 (model._run), all else in float32."""
    x_hat, bits = model(x, level, bf16=bf16) if bf16 else model(x, level)
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
        """The weighted mean loss; the running means stay on the losses' device, so no step waits."""
        with torch.no_grad():
            mean = self.mean.to(losses.device)
            sums = torch.zeros_like(mean).index_add_(0, level, losses.detach().to(mean.dtype))
            counts = torch.zeros_like(mean).index_add_(0, level, torch.ones_like(sums[level]))
            batch_mean = sums / counts.clamp_min(1)
            moved = torch.where(mean == 0, batch_mean, self.decay * mean + (1 - self.decay) * batch_mean)
            self.mean = mean = torch.where(counts > 0, moved, mean)
            seen = mean > 0
            inverse_mean = torch.where(seen, 1 / mean.clamp_min(1e-12), 0).sum() / seen.sum()
            weight = (1 / mean[level]) / inverse_mean  # weights average 1 over the levels
        return (losses * weight).mean()


def add_noise(x: torch.Tensor, sigma: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """x plus Gaussian noise of std `sigma` 8-bit levels, kept in [0, 1]."""
    if sigma <= 0:
        return x
    noise = to_device(torch.randn(x.shape, generator=generator), x.device) * (sigma / 255)
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
    saved = state_mod.load(path)  # a checkpoint file, a folder of parts, or a weight bundle
    state = saved.get("model") or saved.get("state_dict")
    if saved.get("base") is not None:  # a bundle that shares a shipped one's tensors: those too
        from .. import weights as weights_mod

        state = weights_mod.load(path).model.state_dict()
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


def _lr_at(done: float, cfg: TrainConfig) -> float:
    """Cosine decay from lr to lr/20 over the run, `done` being the share of it behind us."""
    return cfg.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(done, 1.0))))


def _run_state(model, opt, step: int, seconds: float, rng: np.random.Generator, cfg: TrainConfig, balance):
    """What a checkpoint holds: enough to resume the run exactly where it stopped."""
    state = {
        "model": model.state_dict(),
        "opt": opt.state_dict(),
        "step": step,
        "seconds": seconds,  # training time so far, which a --minutes schedule runs on
        "rng": rng.bit_generator.state,
        "torch_rng": torch.get_rng_state(),
        "config": {
            "N": cfg.N,
            "M": cfg.M,
            "hyper_N": cfg.hyper_N,
            "hyper_M": cfg.hyper_M,
            "prior": model.config.prior,
            "stride": cfg.stride,
            "lambdas": list(cfg.lambdas),
        },
    }
    if balance:
        state["balance"] = balance.mean.cpu()
    return state


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


def use_bf16(precision: str, device: torch.device) -> bool:
    """Whether a run trains its transforms in bfloat16: "bf16", or "auto" on a CPU with bf16 units."""
    from .. import cpu

    return cpu.bf16_for(precision, device.type == "cpu")


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


def train(
    cfg: TrainConfig,
    on_progress: Callable[[Progress], None] | None = None,
    source: CifarRows | PhotoSource | None = None,
) -> str:
    """Train (resuming from cfg.checkpoint if it exists) and export the bundle to cfg.out (none if
    None); returns its sha256. `source` replaces the data the config names.

    Under torchrun, each of the N processes trains on its 1/N of every batch with
    DistributedDataParallel; only rank 0 validates, checkpoints, logs and exports (others return "").
    """
    rank, world = _start_processes(cfg.device)
    try:
        sha = _train(cfg, rank, world, on_progress if rank == 0 else None, source)
        if world > 1:  # the others wait for rank 0's export: gloo aborted a process leaving first
            dist.barrier()
        return sha
    finally:
        if world > 1:
            dist.destroy_process_group()


def _train(cfg: TrainConfig, rank: int, world: int, on_progress, source) -> str:
    if cfg.minutes and world > 1:  # each process's clock would end the run at its own step
        raise ValueError("--minutes trains in one process; under torchrun give --steps")
    if cfg.batch_size % world:
        raise ValueError(f"batch size {cfg.batch_size} does not split evenly over {world} processes")
    levels = len(cfg.lambdas)
    default_quality = cfg.default_quality or max(1, round(0.75 * levels))
    if not 1 <= default_quality <= levels:
        raise ValueError(f"default quality {default_quality} is outside the {levels} levels")
    device = training_device(cfg.device, world)
    bf16 = use_bf16(cfg.precision, device)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    source = source or make_source(cfg)
    hyper = {"hyper_N": cfg.hyper_N, "hyper_M": cfg.hyper_M} if cfg.hyper_N else {}
    config = ModelConfig(
        N=cfg.N, M=cfg.M, levels=len(cfg.lambdas), stride=cfg.stride, prior=cfg.prior, **hyper
    )
    model = build(config)
    filled = init_network(model, cfg.init_from) if cfg.init_from else {n for n, _ in model.named_parameters()}
    model.to(device)
    if bf16:  # bfloat16 convolutions run fastest channels-last
        model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(_param_groups(model, filled), lr=cfg.lr, fused=device.type == "cuda")
    lambdas = torch.tensor(cfg.lambdas, device=device)
    balance = LevelBalance(levels) if cfg.balance_levels else None
    step, seconds = 0, 0.0
    if cfg.checkpoint and state_mod.exists(cfg.checkpoint):
        state = state_mod.load(cfg.checkpoint)
        model.load_state_dict(state["model"])
        if "opt" in state:  # a committed state may hold the network alone: then Adam starts afresh
            opt.load_state_dict(state["opt"])  # moves its moments to the parameters' device
        step, seconds = state["step"], state.get("seconds", 0.0)
        rng.bit_generator.state = state["rng"]
        torch.set_rng_state(state["torch_rng"])
        if balance and "balance" in state:
            balance.mean = state["balance"]
    model.train()
    # Levels absent from a batch leave their densities unused, hence find_unused_parameters.
    ids = [device.index] if device.type == "cuda" else None
    net = DistributedDataParallel(model, ids, find_unused_parameters=True) if world > 1 else model
    mine = slice(rank, None, world)  # every process draws the same batch and keeps its rows
    on_device = source.on(device) if device.type == "cuda" else None  # crops cut on the GPU
    running = torch.zeros((), device=device)
    reported = math.nan
    started, saved_at = time.monotonic(), time.monotonic()

    def done() -> float:
        if cfg.minutes:
            return (seconds + time.monotonic() - started) / (60 * cfg.minutes)
        return step / cfg.steps

    last = step >= cfg.steps or done() >= 1  # decided once a step, so the last one always validates
    while not last:
        for group in opt.param_groups:
            group["lr"] = _lr_at(done(), cfg) * group["scale"]
        level = to_device(torch.from_numpy(rng.integers(0, config.levels, cfg.batch_size)), device)
        if on_device is not None:
            clean = on_device.batch(rng, cfg.batch_size)[mine]
        else:
            clean = to_device(to_tensor(source.batch(rng, cfg.batch_size)[mine]), device)
        if bf16:
            clean = clean.contiguous(memory_format=torch.channels_last)
        losses = rd_loss(net, add_noise(clean, cfg.noise), level[mine], lambdas, cfg.loss, clean, bf16)
        loss = balance(losses, level[mine]) if balance else losses.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        with torch.no_grad():  # unweighted, so that runs with and without balance compare
            plain = losses.detach().mean()
            running = plain if step == 1 else 0.98 * running + 0.02 * plain
        fraction = done()
        last = step >= cfg.steps or fraction >= 1
        evaluate_now = rank == 0 and (step % cfg.eval_every == 0 or last)
        if step % REPORT_EVERY == 0 or evaluate_now or step == 1:
            reported = running.item()
        metrics = None
        if evaluate_now:
            metrics = evaluate(model, source.validation, cfg.lambdas, cfg.loss, cfg.noise)
            _write_log(cfg.log_csv, step, "train", {"loss": reported})
            _write_log(cfg.log_csv, step, "val", metrics)
            if cfg.log_csv:
                plot_log(cfg.log_csv, curves_path(cfg.log_csv))
        due = evaluate_now or time.monotonic() - saved_at > 60 * cfg.checkpoint_minutes
        if cfg.checkpoint and rank == 0 and due:
            elapsed = seconds + time.monotonic() - started
            saved = _run_state(model, opt, step, elapsed, rng, cfg, balance)
            if not cfg.checkpoint_optimizer:
                del saved["opt"]
            state_mod.save(cfg.checkpoint, saved)
            saved_at = time.monotonic()
        if on_progress:
            on_progress(Progress(step, cfg.steps, reported, done=min(fraction, 1.0), metrics=metrics))
    if rank != 0 or cfg.out is None:
        return ""
    if on_progress:
        on_progress(Progress(step, cfg.steps, reported, done=1.0, exporting=True))
    # The entropy coders (zstandard, constriction) are needed only here: training runs without them.
    from .. import weights as weights_mod
    from ..export import export

    wid = cfg.weights_id if cfg.weights_id is not None else weights_mod.new_user_id()
    name = cfg.name or cfg.out.stem
    dictionary_images = source.dictionary_images(cfg.seed)
    model.cpu()  # the exact parts are rounded and the tables built on the CPU, wherever training ran
    return export(model, cfg.out, cfg.lambdas, wid, name, default_quality, dictionary_images)
