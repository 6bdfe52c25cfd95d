"""Qualities between levels on Kodak: rate and PSNR at every eighth of a level, and --target-size.

    python benchmarks/fine_quality.py [--kodak ../shared/data/kodak] [--limit N] [--targets 30000,60000]

For each of the 57 eighths from level 1 to 8 (quality 0 to 100) it codes every Kodak image with the
default model and coder, and records the mean bpp, PSNR and MS-SSIM, and how often a single image's
rate or PSNR fell from one eighth to the next. Then, for each target size, what --target-size gave
each image. Writes benchmarks/results/fine-quality.{json,md,png}.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

import cae_codec
from cae_codec import metrics, quality, targets
from cae_codec.datasets import load_folder

RESULTS = Path(__file__).parent / "results"
POSITIONS = [1 + i / 8 for i in range(57)]  # level 1 to 8 in eighths


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kodak", default="../shared/data/kodak")
    parser.add_argument("--limit", type=int)
    parser.add_argument("--targets", default="30000,60000", help="target sizes in bytes")
    args = parser.parse_args()
    images = load_folder(args.kodak)[: args.limit]
    started = time.time()
    rows = []
    for level in POSITIONS:
        q = quality.of_level(level, 8)
        sizes, psnrs, ssims = [], [], []
        for image in images:
            data = cae_codec.compress(image, quality=q)
            decoded = np.asarray(cae_codec.decompress(data).convert("RGB"))
            sizes.append(len(data))
            psnrs.append(metrics.psnr(image, decoded))
            ssims.append(metrics.ms_ssim(image, decoded))
        pixels = [im.shape[0] * im.shape[1] for im in images]
        rows.append(
            {
                "level": level,
                "quality": round(q, 2),
                "sizes": sizes,
                "psnrs": [round(p, 4) for p in psnrs],
                "bpp": float(np.mean([8 * s / n for s, n in zip(sizes, pixels, strict=True)])),
                "psnr": float(np.mean(psnrs)),
                "ms_ssim": float(np.mean(ssims)),
            }
        )
        print(
            f"level {level:.3f} quality {q:6.2f}: {rows[-1]['bpp']:.4f} bpp {rows[-1]['psnr']:.3f} dB",
            flush=True,
        )
    sizes = np.array([r["sizes"] for r in rows])
    psnrs = np.array([r["psnrs"] for r in rows])
    bpp = np.array([r["bpp"] for r in rows])
    psnr = np.array([r["psnr"] for r in rows])
    summary = {
        "images": len(images),
        "positions": len(rows),
        "distinct_mean_rates": len(set(bpp.round(8))),
        "mean_rate_rises_every_step": bool(np.all(np.diff(bpp) > 0)),
        "mean_psnr_rises_every_step": bool(np.all(np.diff(psnr) > 0)),
        "single_image_rate_falls": int((np.diff(sizes, axis=0) < 0).sum()),
        "single_image_psnr_falls": int((np.diff(psnrs, axis=0) < 0).sum()),
        "single_image_steps": int(sizes.shape[1] * (sizes.shape[0] - 1)),
        "rate_step_ratio_min_max": [float((bpp[1:] / bpp[:-1]).min()), float((bpp[1:] / bpp[:-1]).max())],
    }
    print(summary, flush=True)
    hits = {}
    for target in (int(t) for t in args.targets.split(",")):
        got = []
        for image in images:
            data, reached = targets.compress_to(image, targets.Target("size", target))
            got.append({"bytes": len(data), "quality": reached.quality, "tries": reached.tries})
        under = [1 - g["bytes"] / target for g in got]
        hits[target] = {"files": got, "max_under": max(under), "min_under": min(under)}
        print(f"target {target}: {min(under):.2%} .. {max(under):.2%} under", flush=True)
    record = {"rows": rows, "summary": summary, "targets": hits, "seconds": round(time.time() - started)}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "fine-quality.json").write_text(json.dumps(record, indent=1))
    (RESULTS / "fine-quality.md").write_text(_markdown(record))
    _plot(rows, RESULTS / "fine-quality.png")


def _markdown(record: dict) -> str:
    s = record["summary"]
    lines = [
        f"Kodak ({s['images']} images), default model and coder, every eighth of a level from "
        "quality 0 to 100:",
        f"{s['distinct_mean_rates']} distinct mean rates; the mean rate rose at every step: "
        f"{s['mean_rate_rises_every_step']}; the mean PSNR too: {s['mean_psnr_rises_every_step']}. "
        f"A single image's file got smaller from one eighth to the next {s['single_image_rate_falls']} times "
        f"and its PSNR fell {s['single_image_psnr_falls']} times, of {s['single_image_steps']} steps. "
        f"Each eighth added {100 * (s['rate_step_ratio_min_max'][0] - 1):.1f}-"
        f"{100 * (s['rate_step_ratio_min_max'][1] - 1):.1f}% to the mean rate.",
        "",
        "| level | quality | bpp | PSNR (dB) | MS-SSIM |",
        "| --- | --- | --- | --- | --- |",
    ]
    lines += [
        f"| {r['level']:.3f} | {r['quality']:.2f} | {r['bpp']:.4f} | {r['psnr']:.3f} | {r['ms_ssim']:.5f} |"
        for r in record["rows"]
    ]
    lines += ["", "| --target-size | files under it by | tries per image |", "| --- | --- | --- |"]
    for target, hit in record["targets"].items():
        tries = [f["tries"] for f in hit["files"]]
        lines.append(
            f"| {int(target):,} bytes | {100 * hit['min_under']:.2f}-{100 * hit['max_under']:.2f}% "
            f"| {min(tries)}-{max(tries)} |"
        )
    return "\n".join(lines) + "\n"


def _plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    whole = [r for r in rows if float(r["level"]).is_integer()]
    ax.plot([r["bpp"] for r in rows], [r["psnr"] for r in rows], ".-", color="tab:blue", label="every eighth")
    ax.plot(
        [r["bpp"] for r in whole], [r["psnr"] for r in whole], "o", color="tab:red", label="trained levels"
    )
    for r in whole:
        ax.annotate(
            f"q{r['quality']:.0f}", (r["bpp"], r["psnr"]), textcoords="offset points", xytext=(4, -10)
        )
    ax.set_xlabel("bits per pixel (whole file)")
    ax.set_ylabel("PSNR (dB)")
    ax.set_title("cae-codec on Kodak: qualities between the trained levels")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
