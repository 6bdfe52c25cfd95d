"""Regenerate the README's CIFAR-10 table: cae-codec at every level against JPEG, on the test batch.

    python benchmarks/cifar10.py [--data-dir ../shared/data/cifar10] [--limit N]

Writes benchmarks/results/cifar10.json and prints the Markdown table the README shows.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch

from cae_codec import benchmark, weights
from cae_codec.datasets import load_cifar10

RESULTS = Path(__file__).parent / "results"


def table(cae: list[benchmark.Point], jpeg: list[benchmark.Point], payload: list[benchmark.Point]) -> str:
    def fmt(value: float | None, unit: str) -> str:
        return "n/a" if value is None else f"{value:.2f}{unit}"

    lines = [
        "| quality | bpp (whole file) | PSNR | MSE | JPEG bpp at this PSNR | JPEG payload bpp at this PSNR |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for p in cae:
        lines.append(
            f"| {p.quality} | {p.bpp:.3f} | {p.psnr:.2f} dB | {p.mse:.1f} "
            f"| {fmt(benchmark.interpolate(jpeg, 'psnr', 'bpp', p.psnr), '')} "
            f"| {fmt(benchmark.interpolate(payload, 'psnr', 'bpp', p.psnr), '')} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared/data/cifar10")
    )
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args()
    images = list(load_cifar10("test", args.data_dir)[: args.limit])
    w = weights.load()
    cae = benchmark.measure_cae(images)
    jpeg = benchmark.measure_pillow(images, "JPEG", benchmark.JPEG_QUALITIES)
    payload = benchmark.measure_pillow(images, "JPEG", benchmark.JPEG_QUALITIES, payload_only=True)
    RESULTS.mkdir(exist_ok=True)
    record = {
        "images": len(images),
        "weights": {"id": w.id, "name": w.name},
        "machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads",
        "points": [p.to_dict() for p in cae + jpeg + payload],
    }
    (RESULTS / "cifar10.json").write_text(json.dumps(record, indent=1) + "\n")
    print(table(cae, jpeg, payload))


if __name__ == "__main__":
    main()
