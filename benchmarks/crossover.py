"""Where the photo model starts to beat the CIFAR model: BD-rate of one against the other on the
held-out validation photos of photos-train (never Kodak), each cut to its centre square and shrunk
to a growing side. A small image in the wild is a thumbnail (a whole scene, shrunk, like CIFAR-10),
not a flat patch of a large photo.

    python benchmarks/crossover.py --photo WEIGHTS [--small WEIGHTS] [--shared ../shared/data]

Writes benchmarks/results/crossover.json; weights.PHOTO_MIN_PIXELS is set from it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from cae_codec import benchmark, weights
from cae_codec.datasets import centre_crop, read_rgb, split_photos

RESULTS = Path(__file__).parent / "results"
SIDES = (32, 64, 96, 128, 192, 256, 320)


def _shrunk(photo: np.ndarray, side: int) -> np.ndarray:
    square = centre_crop(photo, min(photo.shape[:2]))
    return np.asarray(Image.fromarray(square).resize((side, side), Image.Resampling.LANCZOS))


def validation_photos(shared: Path) -> list[np.ndarray]:
    return [read_rgb(p) for p in split_photos(shared / "photos-train")[1]]  # the split train.py holds out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photo", required=True, help="the photo model's weights (file or shipped name)")
    parser.add_argument("--small", default=weights.REGISTRY[weights.DEFAULT_ID].name)
    parser.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    args = parser.parse_args()
    photos = validation_photos(Path(args.shared))
    rows = []
    for side in SIDES:
        crops = [_shrunk(p, side) for p in photos]
        small = benchmark.curve(benchmark.measure_cae(crops, weights=args.small), "cae-codec/auto")
        photo = benchmark.curve(benchmark.measure_cae(crops, weights=args.photo), "cae-codec/auto")
        rate = benchmark.bd_rate(small, photo)
        rows.append({"side": side, "images": len(crops), "bd_rate_photo_vs_small": rate})
        print(f"{side}x{side}: photo model vs {args.small}: BD-rate {rate:+.1f} %", flush=True)
    RESULTS.mkdir(exist_ok=True)
    record = {"photo": args.photo, "small": args.small, "rows": rows}
    (RESULTS / "crossover.json").write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
