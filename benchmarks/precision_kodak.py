"""bfloat16 against float32 on Kodak: file bytes and mean PSNR with either precision each way.

    python benchmarks/precision_kodak.py [--qualities 0,43,71,100]

Meaningful on a CPU with bfloat16 units (elsewhere `auto` is float32 and both columns agree). Kodak's
photos are small enough for the batch path, so every call forces one precision or the other through
the API's `precision`. Writes benchmarks/results/precision-kodak.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from cae_codec import codec, cpu
from cae_codec.datasets import load_folder, locate_kodak
from cae_codec.metrics import psnr

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--qualities", default="0,43,71,100")
    args = parser.parse_args()
    images = load_folder(locate_kodak(str(SHARED)))
    lines = [
        f"Kodak (24 images), {cpu.describe()}; encode / decode precision",
        "",
        "| quality | bytes fp32 / bf16 | PSNR fp32/fp32 | fp32/bf16 | bf16/fp32 | bf16/bf16 | change |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for q in map(int, args.qualities.split(",")):
        files = {p: [codec.compress(im, quality=q, precision=p) for im in images] for p in ("fp32", "bf16")}
        mean = {
            (e, d): float(
                np.mean(
                    [
                        psnr(im, np.asarray(codec.decompress(f, precision=d)))
                        for im, f in zip(images, files[e], strict=True)
                    ]
                )
            )
            for e in files
            for d in ("fp32", "bf16")
        }
        sizes = {p: sum(map(len, fs)) for p, fs in files.items()}
        change = 100 * (sizes["bf16"] / sizes["fp32"] - 1)
        lines.append(
            f"| {q} | {sizes['fp32']:,} / {sizes['bf16']:,} ({change:+.3f} %) | {mean['fp32', 'fp32']:.4f} | "
            f"{mean['fp32', 'bf16']:.4f} | {mean['bf16', 'fp32']:.4f} | {mean['bf16', 'bf16']:.4f} | "
            f"{mean['bf16', 'bf16'] - mean['fp32', 'fp32']:+.4f} dB |"
        )
        print(lines[-1], flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "precision-kodak.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
