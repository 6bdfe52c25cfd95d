"""What a denoising codec does to a noisy photo, against the standard photo weights.

    python benchmarks/denoise.py WEIGHTS [--sigma 25] [--shared ../shared/data]

Adds Gaussian noise (8-bit levels, fixed seed) to the photos the training never saw, compresses the
noisy image with the standard photo weights and with WEIGHTS (trained with `train --noise`) at every
quality, and reports the file's bpp and the decode's PSNR against the clean photo. Writes
benchmarks/results/denoise.{json,md} and denoise.png (clean, noisy, both decodes at one quality).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

import cae_codec
from cae_codec import metrics, weights
from cae_codec.quality import of_level

RESULTS = Path(__file__).parent / "results"
PHOTOS = ("astronaut.png", "coffee.png", "chelsea.png")


def noisy(clean: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    """The photo as an 8-bit file with Gaussian noise of std `sigma` levels."""
    noise = np.random.default_rng(seed).normal(0, sigma, clean.shape)
    return np.clip(np.round(clean + noise), 0, 255).astype(np.uint8)


def measure(cleans: list[np.ndarray], inputs: list[np.ndarray], source: str) -> list[dict]:
    """Mean bpp and PSNR against the clean photos, per quality, of `source`'s weights."""
    rows = []
    levels = weights.load(source).levels
    for quality in range(1, levels + 1):
        bpp, psnr = [], []
        for clean, x in zip(cleans, inputs, strict=True):
            data = cae_codec.compress(x, of_level(quality, levels), weights=source)
            decoded = np.asarray(cae_codec.decompress(data, weights=source))
            bpp.append(metrics.bpp(len(data), x.shape[1], x.shape[0]))
            psnr.append(metrics.psnr(clean, decoded))
        rows.append({"quality": quality, "bpp": float(np.mean(bpp)), "psnr": float(np.mean(psnr))})
    return rows


def picture(clean: np.ndarray, x: np.ndarray, sources: dict[str, str], quality: int, path: Path) -> None:
    """A centre crop: clean, noisy, and each weights' decode of the noisy file, labelled."""
    h, w = clean.shape[:2]
    top, left, side = h // 2 - 96, w // 2 - 96, 192
    tiles = [("clean", clean), ("noisy input", x)]
    for name, source in sources.items():
        data = cae_codec.compress(x, of_level(quality, weights.load(source).levels), weights=source)
        decoded = np.asarray(cae_codec.decompress(data, weights=source))
        bpp = metrics.bpp(len(data), w, h)
        tiles.append((f"{name} q{quality}, {bpp:.2f} bpp, {metrics.psnr(clean, decoded):.1f} dB", decoded))
    canvas = Image.new("RGB", (len(tiles) * (2 * side + 8), 2 * side + 24), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (label, image) in enumerate(tiles):
        crop = Image.fromarray(image[top : top + side, left : left + side]).resize(
            (2 * side, 2 * side), Image.NEAREST
        )
        canvas.paste(crop, (i * (2 * side + 8), 24))
        draw.text((i * (2 * side + 8) + 4, 5), label, fill="black")
    canvas.save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weights", help="denoising weights (a file from `cae-codec train --noise`)")
    parser.add_argument("--sigma", type=float, default=25.0)
    parser.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    args = parser.parse_args()
    cleans = [np.asarray(Image.open(Path(args.shared) / "photos" / n).convert("RGB")) for n in PHOTOS]
    inputs = [noisy(c, args.sigma, seed) for seed, c in enumerate(cleans)]
    standard = str(weights.resolve(weights_id=weights.PHOTO_ID))
    sources = {weights.load(standard).name: standard, weights.load(args.weights).name: args.weights}
    record = {
        "photos": list(PHOTOS),
        "sigma": args.sigma,
        "noisy_input_psnr": float(np.mean([metrics.psnr(c, x) for c, x in zip(cleans, inputs, strict=True)])),
        "curves": {name: measure(cleans, inputs, source) for name, source in sources.items()},
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "denoise.json").write_text(json.dumps(record, indent=1) + "\n")
    names = list(sources)
    lines = [
        f"#### Noisy photos (Gaussian, sigma {args.sigma:g}), PSNR against the clean photo",
        "",
        f"The noisy inputs themselves: {record['noisy_input_psnr']:.2f} dB (mean of {len(PHOTOS)} photos).",
        "",
        "| quality | " + " | ".join(f"{n}: bpp / PSNR" for n in names) + " |",
        "| ---: | " + " | ".join("---:" for _ in names) + " |",
    ]
    for q in range(len(record["curves"][names[0]])):
        cells = [
            f"{record['curves'][n][q]['bpp']:.3f} / {record['curves'][n][q]['psnr']:.2f} dB" for n in names
        ]
        lines.append(f"| {q + 1} | " + " | ".join(cells) + " |")
    (RESULTS / "denoise.md").write_text("\n".join(lines) + "\n")
    picture(cleans[0], inputs[0], sources, 4, RESULTS / "denoise.png")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
