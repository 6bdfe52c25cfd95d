"""Two weight bundles on the same images: whole-file bpp and PSNR per level, and the BD-rate between.

    python benchmarks/weights_ab.py cae-msh8-photo-v5 cae-msh8-photo-v7 [--images validation|kodak]
        [--coder range] [--out benchmarks/results/v7-against-v5.md]

`validation` is the 16 held-out photos of photos-train (centre crops, as training validates on);
`kodak` the 24 Kodak images (a report only: nothing is tuned on them). Images run on a process per
core, through the same code as `cae-codec bench`.

    python benchmarks/weights_ab.py cae-msh8-photo-v5 cae-msh8-photo-v7 --speed mosaic.png

times instead one large image's encode and decode with each, in this process, interleaved, best of 2
(pause background work first).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from PIL import Image

from cae_codec import benchmark, cpu
from cae_codec.datasets import PhotoCrops, load_folder, locate_kodak

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", help="the reference bundle (a shipped name or a path)")
    parser.add_argument("b", help="the bundle measured against it")
    parser.add_argument("--images", choices=("validation", "kodak"), default="validation")
    parser.add_argument("--coder", default="range", choices=("range", "zstd", "auto"))
    parser.add_argument("--out", type=Path, help="also write the table here (Markdown)")
    parser.add_argument("--speed", type=Path, help="time encode and decode of this image instead")
    args = parser.parse_args()
    if args.speed:
        print(speed(args.speed, (args.a, args.b)))
        return
    if args.images == "kodak":
        images = load_folder(locate_kodak(str(SHARED)))
    else:
        images = list(PhotoCrops(SHARED / "photos-train", 128).validation)
    start = time.perf_counter()
    curves = [
        benchmark.measure_cae(images, weights=w, workers=0, coders=(args.coder,)) for w in (args.a, args.b)
    ]
    lines = [
        f"{len(images)} {args.images} images, {args.coder} coder, whole files; {cpu.describe()}; "
        f"{time.perf_counter() - start:.0f} s",
        "",
        f"| level | bpp: {args.a} / {args.b} | change | PSNR dB: {args.a} / {args.b} |",
        "| ---: | --- | ---: | --- |",
    ]
    for p, q in zip(*curves, strict=True):
        change = 100 * (q.bpp / p.bpp - 1)
        lines.append(
            f"| {p.level} | {p.bpp:.4f} / {q.bpp:.4f} | {change:+.2f} % | {p.psnr:.3f} / {q.psnr:.3f} |"
        )
    lines += [
        "",
        f"BD-rate of {args.b} against {args.a}: {benchmark.bd_rate(*curves):+.2f} %, "
        f"BD-PSNR {benchmark.bd_psnr(*curves):+.3f} dB",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


def speed(path: Path, bundles: tuple[str, str], rounds: int = 2) -> str:
    """Seconds to encode and decode one image with each bundle, interleaved, best of `rounds`."""
    import cae_codec

    image = Image.open(path)
    image.load()
    best: dict[str, list[float]] = {w: [float("inf")] * 2 for w in bundles}
    sizes = {}
    for _ in range(rounds):
        for w in bundles:
            start = time.perf_counter()
            data = cae_codec.compress(image, weights=w, max_pixels=2 * image.width * image.height)
            middle = time.perf_counter()
            cae_codec.decompress(data, weights=w, max_pixels=2 * image.width * image.height)
            end = time.perf_counter()
            best[w] = [min(best[w][0], middle - start), min(best[w][1], end - middle)]
            sizes[w] = len(data)
    lines = [f"{path.name} ({image.width}x{image.height}), best of {rounds}; {cpu.describe()}"]
    lines += [f"{w}: encode {e:.2f} s, decode {d:.2f} s, {sizes[w]:,} bytes" for w, (e, d) in best.items()]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
