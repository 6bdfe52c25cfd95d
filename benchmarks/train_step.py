"""Throughput of one training step (forward, rate, backward, Adam) in Mpixel/s, on a given device.

    python benchmarks/train_step.py                     # the stride-16 network, 8 crops of 128 px, CPU
    python benchmarks/train_step.py --fp32              # the same in float32 (what --precision fp32 trains)
    python benchmarks/train_step.py --model cifar --batch 64 --crop 32   # the CIFAR model's step
    python benchmarks/train_step.py --device cuda --batch 64 --crop 256 --channels-last --bf16 --compile

Batches are random images already on the device, so this measures the step, not the data. By
default the step is the trainer's (`--precision auto`: the transforms in bfloat16, channels-last,
on a CPU with bf16 units). With --fp32 it runs on older checkouts too (it imports what it needs from
either layout), so a change can be timed before and after on the same machine.
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
MODELS = {"s16": S16, "cifar": {"N": 128, "M": 64, "stride": 4, "hyper_N": 96, "hyper_M": 32}}


def measure(
    device: str,
    batch: int,
    crop: int,
    steps: int,
    warmup: int,
    channels_last: bool = False,
    bf16: bool = False,
    compile_model: bool = False,
    trainer_bf16: bool = False,
    network: str = "s16",
) -> dict:
    """Milliseconds a step and Mpixel/s. The options are the candidates for a faster GPU step:
    channels-last tensors, bf16 autocast over the whole forward pass, and torch.compile;
    `trainer_bf16` is the trainer's own bfloat16 step (model._run: transforms in bfloat16,
    latents, densities and rate in float32; channels-last)."""
    torch.manual_seed(0)
    model = build(ModelConfig(levels=len(LAMBDAS), **MODELS[network])).to(device)
    channels_last = channels_last or trainer_bf16
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
            x_hat, bits = forward(x, level, bf16=True) if trainer_bf16 else forward(x, level)
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
        "network": network,
        "trainer_bf16": trainer_bf16,
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
    parser.add_argument("--fp32", action="store_true", help="float32, not the trainer's precision (auto)")
    parser.add_argument("--model", choices=sorted(MODELS), default="s16")
    args = parser.parse_args()
    trainer_bf16 = False
    if not args.fp32 and not args.bf16:
        from cae_codec.training.loop import use_bf16

        trainer_bf16 = use_bf16("auto", torch.device(args.device))
    options = (args.channels_last, args.bf16, args.compile, trainer_bf16, args.model)
    result = measure(args.device, args.batch, args.crop, args.steps, args.warmup, *options)
    try:
        from cae_codec.cpu import describe

        result["cpu"] = describe()
    except ImportError:  # an older checkout
        pass
    print(json.dumps(result))
