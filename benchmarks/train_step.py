"""Throughput of one training step (forward, rate, backward, Adam) in Mpixel/s, on a given device.

    python benchmarks/train_step.py                     # the stride-16 network, 8 crops of 128 px, CPU
    python benchmarks/train_step.py --device cuda --batch 16 --crop 256

Batches are random images already on the device, so this measures the step, not the data. It runs
on older checkouts too (it imports what it needs from either layout), so a change can be timed
before and after on the same machine.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from cae_codec.model import ModelConfig, build

try:
    from cae_codec.training.losses import distortion
except ImportError:  # before cae_codec/training/
    from cae_codec.losses import distortion

LAMBDAS = (0.0018, 0.0035, 0.0067, 0.0130, 0.0250, 0.0483, 0.0932, 0.1800)
S16 = {"N": 128, "M": 192, "stride": 16, "hyper_N": 128, "hyper_M": 96}


def measure(device: str, batch: int, crop: int, steps: int, warmup: int) -> dict:
    torch.manual_seed(0)
    model = build(ModelConfig(levels=len(LAMBDAS), **S16)).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    lambdas = torch.tensor(LAMBDAS, device=device)
    x = torch.rand(batch, 3, crop, crop, device=device)
    level = torch.randint(0, len(LAMBDAS), (batch,), device=device)

    def step() -> None:
        x_hat, bits = model(x, level)
        loss = (lambdas[level] * distortion("mse", x_hat, x) + bits / (crop * crop)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    for _ in range(warmup):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / steps
    return {
        "device": device,
        "batch": batch,
        "crop": crop,
        "threads": torch.get_num_threads(),
        "ms_per_step": round(1000 * seconds, 1),
        "mpixel_per_s": round(batch * crop * crop / seconds / 1e6, 3),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()
    print(json.dumps(measure(args.device, args.batch, args.crop, args.steps, args.warmup)))
