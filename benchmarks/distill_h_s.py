"""How much of y's rate a narrower hyper-synthesis gives back: distil one against a photo model.

    python benchmarks/distill_h_s.py --hidden 48 --minutes 55 --out runs/h_s-distill/student48.pt

The photo model's g_a and h_a stay frozen: y and z of random 128 px crops of photos-train (each at a
random level) are made once, then a new h_s with `--hidden` channels (v5's has 96) learns to predict
y's means and scales, on y's rate alone (uniform noise, as in training; Adam, cosine decay). Every
2,000 steps and at the end it prints y's bits with rounding on the held-out validation crops at all
8 levels, against the photo model's own h_s. The student is not on the exact grid yet: shipping one
means rounding it (round_exact_parts), new tables and a new weights id. Issue 34 allows 0.5 %.

Shipping a saved student as a bundle that shares the photo model's other tensors (export.py):

    python benchmarks/distill_h_s.py --student runs/h_s-distill/student48.pt \
        --ship weights/cae-msh8-photo-v7.pt --id 7 --name cae-msh8-photo-v7
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cae_codec import datasets
from cae_codec import weights as weights_mod
from cae_codec.model import SCALE_MAX, SCALE_MIN, HyperCAE, ModelConfig, build, gaussian_likelihood

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "photos-train"


def latents(model, images: np.ndarray, levels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """y and rounded z of uint8 crops (B, H, W, 3) at each image's level, from the frozen g_a and h_a."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255)
    with torch.inference_mode():
        y = model.analysis(x.contiguous(memory_format=torch.channels_last), levels, bf16=True).float()
        z = torch.round(model.hyper_analysis(y, bf16=True).float())
    return y.contiguous(), z.contiguous()


def with_h_s(model: HyperCAE, hidden: int) -> HyperCAE:
    """The model's network with a fresh h_s of `hidden` channels, every other tensor the model's."""
    net = build(ModelConfig(**{**model.config.to_dict(), "hyper_s_N": hidden}))
    kept = {k: v for k, v in model.state_dict().items() if not k.startswith("h_s.")}
    net.load_state_dict(kept, strict=False)
    return net


def y_bits(h_s: nn.Module, y: torch.Tensor, z: torch.Tensor, noise: bool) -> torch.Tensor:
    """Bits of y under the Gaussian conditional h_s predicts from z (noise: training's proxy)."""
    mu, log_sigma = h_s(z).chunk(2, 1)
    sigma = log_sigma.exp().clamp(SCALE_MIN, SCALE_MAX)
    residual = y - mu
    residual = residual + torch.empty_like(residual).uniform_(-0.5, 0.5) if noise else torch.round(residual)
    return -torch.log2(gaussian_likelihood(residual, sigma)).sum()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default="cae-msh8-photo-v5")
    parser.add_argument("--photos", default=str(SHARED))
    parser.add_argument("--hidden", type=int, default=48)
    parser.add_argument("--minutes", type=float, default=25.0)
    parser.add_argument("--crops", type=int, default=2560, help="training crops of 128 px, made once")
    parser.add_argument("--out", type=Path, help="where to save the student's state_dict")
    parser.add_argument("--student", type=Path, help="ship this saved student instead of training one")
    parser.add_argument("--ship", type=Path, help="the bundle to write (with --student, --id, --name)")
    parser.add_argument("--id", type=int, help="the new bundle's weights id")
    parser.add_argument("--name", help="the new bundle's name")
    parser.add_argument("--seed", type=int, default=14, help="picks the crops the zstd dictionaries learn")
    args = parser.parse_args()
    if args.ship:
        ship(args)
        return
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = weights_mod.load(args.weights).model
    cfg = model.config
    crops = datasets.PhotoCrops(args.photos, 128)
    parts = [
        latents(model, crops.batch(rng, 64), torch.from_numpy(rng.integers(0, cfg.levels, 64)))
        for _ in range(args.crops // 64)
    ]
    y_train, z_train = (torch.cat(t) for t in zip(*parts, strict=True))
    held = crops.validation
    parts = [latents(model, held, torch.full((len(held),), level)) for level in range(cfg.levels)]
    y_val, z_val = (torch.cat(t) for t in zip(*parts, strict=True))
    with torch.no_grad():
        reference = float(y_bits(model.h_s, y_val, z_val, noise=False))
    student = with_h_s(model, args.hidden).h_s
    optimizer = torch.optim.Adam(student.parameters(), lr=1e-3)
    step, start, budget = 0, time.perf_counter(), args.minutes * 60

    def report(label: str) -> None:
        with torch.no_grad():
            bits = float(y_bits(student, y_val, z_val, noise=False))
        elapsed = time.perf_counter() - start
        change = 100 * (bits / reference - 1)
        print(f"{label} step {step}, {elapsed:.0f} s: y's bits {change:+.2f} % against {args.weights}'s h_s")

    while (elapsed := time.perf_counter() - start) < budget:
        for group in optimizer.param_groups:
            group["lr"] = 1e-3 * 0.5 * (1 + math.cos(math.pi * elapsed / budget))
        batch = torch.randint(0, len(y_train), (32,))
        optimizer.zero_grad()
        (y_bits(student, y_train[batch], z_train[batch], noise=True) / len(batch)).backward()
        optimizer.step()
        step += 1
        if step % 2000 == 0:
            report("at")
    report("final")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"hidden": args.hidden, "steps": step, "state_dict": student.state_dict()}, args.out)


def ship(args: argparse.Namespace) -> None:
    """The photo model with the saved student as its h_s, rounded onto the exact grid, as a bundle
    that stores only what differs from the photo model (and its own tables and dictionaries)."""
    if not (args.student and args.id and args.name):
        raise SystemExit("--ship needs --student, --id and --name")
    from cae_codec.export import export
    from cae_codec.training.sources import PhotoSource

    base = weights_mod.load(args.weights)
    saved = torch.load(args.student, weights_only=True)
    model = with_h_s(base.model, saved["hidden"])
    model.h_s.load_state_dict(saved["state_dict"])
    images = PhotoSource(args.photos, 128).dictionary_images(args.seed)
    digest = export(model, args.ship, base.lambdas, args.id, args.name, base.default_quality, images, base)
    print(f"{args.ship}: {args.ship.stat().st_size:,} bytes, sha256 {digest}")


if __name__ == "__main__":
    main()
