"""Measure how far 1 and 2 torch threads can disagree: latent integers and decoded pixels, on the
CIFAR-10 test rows (the small-image model) and five photos (the photo model).

    python benchmarks/determinism.py [--data-dir ../shared/data/cifar10]

Writes benchmarks/results/determinism.json. docs/format.md states the figures.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

import cae_codec
from cae_codec import codec, weights
from cae_codec.container import unpack
from cae_codec.datasets import load_cifar10
from cae_codec.quality import of_level

RESULTS = Path(__file__).parent / "results"


def encode_all(images, threads: int, quality: int, coder: str) -> list[bytes]:
    torch.set_num_threads(threads)
    return [cae_codec.compress(image, of_level(quality, 8), coder=coder) for image in images]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared/data/cifar10")
    )
    args = parser.parse_args()
    images = list(load_cifar10("test", args.data_dir))
    shared = Path(args.data_dir).parent
    photos = [shared / "photos" / "astronaut.png"] + [
        shared / "kodak" / f"kodim0{i}.png" for i in (1, 2, 3, 4)
    ]
    images += [np.asarray(codec.read_image(p).convert("RGB")) for p in photos if p.exists()]
    levels = weights.load().levels
    report = {"images": len(images), "torch": torch.__version__, "levels": {}}
    for quality in (1, 6, levels):
        files = {t: encode_all(images, t, quality, "zstd") for t in (1, 2)}
        differing_files = sum(a != b for a, b in zip(files[1], files[2], strict=True))
        latent_diffs = pixel_diffs = max_pixel = 0
        for a, b in zip(files[1], files[2], strict=True):
            fa, fb = unpack(a), unpack(b)
            w = weights.load(weights_id=fa.header.weights_id)  # each image's own model (by its size)
            sa, sb = (
                codec.decode_symbols(w, fa.color, fa.header),
                codec.decode_symbols(w, fb.color, fb.header),
            )
            latent_diffs += int((sa.y != sb.y).sum())
            if sa.z is not None:
                latent_diffs += int((sa.z != sb.z).sum())
            decoded = []
            for t in (1, 2):
                torch.set_num_threads(t)
                decoded.append(np.asarray(cae_codec.decompress(a), dtype=int))
            diff = np.abs(decoded[0] - decoded[1])
            pixel_diffs += int((diff > 0).sum())
            max_pixel = max(max_pixel, int(diff.max()))
        report["levels"][quality] = {
            "files_differing": differing_files,
            "latent_values_differing": latent_diffs,
            "decoded_pixels_differing": pixel_diffs,
            "largest_pixel_difference": max_pixel,
        }
        print(quality, report["levels"][quality])
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "determinism.json").write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
