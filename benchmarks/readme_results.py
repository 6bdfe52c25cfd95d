"""Regenerate the README's results from the shipped weights: CIFAR-10 test rows and the photos.

    python benchmarks/readme_results.py [--shared ../shared/data] [--limit N]

Writes benchmarks/results/{cifar10,photos}.json, *-rd.png, *-grid.png and tables.md (the Markdown
the README shows). Same library code as `cae-codec bench`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image

from cae_codec import benchmark, weights
from cae_codec.datasets import load_cifar10

RESULTS = Path(__file__).parent / "results"
PHOTOS = ("astronaut.png", "coffee.png", "chelsea.png")
COMPARED = ("jpeg", "jpeg-payload", "webp", "avif", "jpeg2000")


def _num(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def markdown(points: list[benchmark.Point], title: str) -> str:
    zstd, ranged = benchmark.curve(points, "cae-codec/zstd"), benchmark.curve(points, "cae-codec/range")
    names = [n for n in COMPARED if benchmark.curve(points, n)]
    lines = [
        f"#### {title}",
        "",
        "| quality | bpp, zstd | bpp, range | model estimate | PSNR (dB) | SSIM | "
        + " | ".join(f"{n}: bpp at this PSNR" for n in names)
        + " |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | " + " | ".join("---:" for _ in names) + " |",
    ]
    for z, r in zip(zstd, ranged, strict=True):
        others = " | ".join(
            _num(benchmark.interpolate(benchmark.curve(points, n), "psnr", "bpp", z.psnr), ".2f")
            for n in names
        )
        cells = (
            z.quality,
            f"{z.bpp:.3f}",
            f"{r.bpp:.3f}",
            f"{z.entropy_bpp:.3f}",
            f"{z.psnr:.2f}",
            f"{z.ssim:.4f}",
        )
        lines.append("| " + " | ".join(map(str, cells)) + f" | {others} |")
    lines += [
        "",
        "| cae-codec against | BD-rate, zstd | BD-rate, range | BD-PSNR, range |",
        "| --- | ---: | ---: | ---: |",
    ]
    for n in names:
        anchor = benchmark.curve(points, n)
        rate_z, rate_r = benchmark.bd_rate(anchor, zstd), benchmark.bd_rate(anchor, ranged)
        gain = benchmark.bd_psnr(anchor, ranged)
        lines.append(
            f"| {n} | {_num(rate_z, '+.1f')} % | {_num(rate_r, '+.1f')} % | {_num(gain, '+.2f')} dB |"
        )
    return "\n".join(lines)


def run(name: str, images, title: str) -> str:
    start = time.time()
    points = benchmark.measure_cae(images)
    for codec_name in benchmark.CLASSICS:
        if benchmark.available(codec_name):
            points += benchmark.measure_classic(images, codec_name)
    w = weights.load()
    record = {
        **benchmark.run_info(w, title),
        "seconds": round(time.time() - start),
        "points": [p.to_dict() for p in points],
    }
    (RESULTS / f"{name}.json").write_text(json.dumps(record, indent=1) + "\n")
    benchmark.plot_rd(points, RESULTS / f"{name}-rd.png", title)
    benchmark.grid(images[:8], points, w.default_quality, RESULTS / f"{name}-grid.png")
    return markdown(points, title)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args()
    shared = Path(args.shared)
    RESULTS.mkdir(exist_ok=True)
    cifar = list(load_cifar10("test", shared / "cifar10")[: args.limit])
    photos = [np.asarray(Image.open(shared / "photos" / name).convert("RGB")) for name in PHOTOS]
    tables = [
        run("cifar10", cifar, f"CIFAR-10 test rows ({len(cifar)} images, 32x32)"),
        run("photos", photos, "Photos (astronaut 512x512, coffee 600x400, chelsea 451x300)"),
    ]
    (RESULTS / "tables.md").write_text("\n\n".join(tables) + "\n")
    print("\n\n".join(tables))


if __name__ == "__main__":
    main()
