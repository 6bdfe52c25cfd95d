"""How often each entropy coder makes the smaller file: the network runs once per image and both
coders pack its latent. Default weights for each image's size. config.ZSTD_MIN_PIXELS, the size
below which `--coder auto` no longer tries zstd, comes from these figures.

    python benchmarks/coders.py [--shared ../shared/data]

Writes benchmarks/results/coders.json and coders.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from crossover import SIDES, _shrunk, validation_photos

from cae_codec.codec import compress_many_each
from cae_codec.datasets import load_cifar10
from cae_codec.quality import of_level

RESULTS = Path(__file__).parent / "results"
LEVELS = range(1, 9)


def compare(images: list, quality: int) -> dict:
    """zstd's and range's file sizes for every image at one level, summarised."""
    files = compress_many_each(images, quality=of_level(quality, 8))  # the level, on the 0-100 scale
    zstd = np.array([len(f["zstd"]) for f in files])
    rng = np.array([len(f["range"]) for f in files])
    ratio = zstd / rng
    return {
        "images": len(files),
        "zstd_smaller": int((zstd < rng).sum()),
        "zstd_over_range_mean": float(ratio.mean()),
        "zstd_over_range_min": float(ratio.min()),
        "auto_over_range": float(np.minimum(zstd, rng).sum() / rng.sum()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    shared = Path(parser.parse_args().shared)
    sets = {
        "cifar10 (508 test rows)": list(load_cifar10("test", str(shared / "cifar10"))[:508]),
        "kodak (24)": sorted(str(p) for p in (shared / "kodak").glob("*.png")),
        "photos (5)": sorted(str(p) for p in (shared / "photos").iterdir()),
    }
    held_out = validation_photos(shared)  # photos-train's validation split, never Kodak
    for side in SIDES:
        sets[f"{len(held_out)} validation photos shrunk to {side}x{side}"] = [
            _shrunk(p, side) for p in held_out
        ]
    rows = [
        {"set": name, "quality": q, **compare(images, q)} for name, images in sets.items() for q in LEVELS
    ]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "coders.json").write_text(json.dumps(rows, indent=1) + "\n")
    lines = [
        "| images | quality | zstd smaller in | zstd / range, mean | zstd / range, best | auto / range |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['set']} | {r['quality']} | {r['zstd_smaller']} of {r['images']} | "
            f"{r['zstd_over_range_mean']:.3f} | {r['zstd_over_range_min']:.3f} | {r['auto_over_range']:.4f} |"
        )
    (RESULTS / "coders.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
