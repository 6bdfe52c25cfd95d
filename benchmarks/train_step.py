"""Throughput of one training step (forward, rate, backward, Adam) in Mpixel/s, on a given device.

    python benchmarks/train_step.py                     # the stride-16 network, 8 crops of 128 px, CPU
    python benchmarks/train_step.py --device cuda --batch 16 --crop 256
    python benchmarks/train_step.py --device cuda --batch 64 --crop 256 --channels-last --bf16 --compile

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


def measure(
    device: str,
    batch: int,
    crop: int,
    steps: int,
    warmup: int,
    channels_last: bool = False,
    bf16: bool = False,
    compile_model: bool = False,
) -> dict:
    """Milliseconds a step and Mpixel/s. The options are the candidates for a faster GPU step:
    channels-last tensors, bf16 autocast over the whole forward pass (a first measure: a trainer
    that adopts it should keep the entropy model in float32), and torch.compile."""
    torch.manual_seed(0)
    model = build(ModelConfig(levels=len(LAMBDAS), **S16)).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, fused=device.startswith("cuda"))
    lambdas = torch.tensor(LAMBDAS, device=device)
    x = torch.rand(batch, 3, crop, crop, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    level = torch.randint(0, len(LAMBDAS), (batch,), device=device)
    forward = torch.compile(model) if compile_model else model
    autocast = torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=bf16)

    def step() -> None:
        with autocast:
            x_hat, bits = forward(x, level)
        loss = (lambdas[level] * distortion("mse", x_hat.float(), x) + bits.float() / (crop * crop)).mean()
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
        "channels_last": channels_last,
        "bf16": bf16,
        "compile": compile_model,
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
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--bf16", action="store_true", help="autocast the forward pass to bfloat16")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    args = parser.parse_args()
    options = (args.channels_last, args.bf16, args.compile)
    print(json.dumps(measure(args.device, args.batch, args.crop, args.steps, args.warmup, *options)))
