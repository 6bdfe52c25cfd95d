"""Regenerate the README's results from the shipped weights: CIFAR-10 test rows, the photos, Kodak.

    python benchmarks/readme_results.py [--shared ../shared/data] [--limit N] [--only kodak,...]
                                        [--reuse-peers] [--tables-only | --redraw]
                                        [--remeasure jpeg,jpeg2000,avif,heif]

Writes benchmarks/results/{cifar10,photos,kodak}.json, *-rd.png, *-grid.png and {name}.md (the
Markdown the README shows). Same library code as `cae-codec bench`; each data set runs the model
that compress chooses for its image size, and Kodak's plot and table add CompressAI's published
curves.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image

from cae_codec import benchmark, weights
from cae_codec.datasets import load_cifar10, load_folder, locate_kodak

RESULTS = Path(__file__).parent / "results"
PHOTOS = ("astronaut.png", "coffee.png", "chelsea.png")
COMPARED = ("jpeg", "jpeg-payload", "webp", "avif", "jpeg2000", "jpegxl", "heif")


def _num(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def markdown(points: list[benchmark.Point], title: str) -> str:
    zstd, ranged = benchmark.curve(points, "cae-codec/zstd"), benchmark.curve(points, "cae-codec/range")
    auto = benchmark.curve(points, "cae-codec/auto")
    names = [n for n in COMPARED if benchmark.curve(points, n)]
    names += [n for n in benchmark.labels(points, ours=False) if n.endswith(benchmark.PUBLISHED)]
    ms_ssim = all(p.ms_ssim == p.ms_ssim for p in zstd)  # runs before MS-SSIM was measured lack it
    columns = ["level (quality)", "bpp, zstd", "bpp, range", "model estimate", "PSNR (dB)", "SSIM"]
    columns += ["MS-SSIM"] * ms_ssim + [f"{n}: bpp at this PSNR" for n in names]
    lines = [f"#### {title}", "", "| " + " | ".join(columns) + " |", "|" + " ---: |" * len(columns)]
    for z, r in zip(zstd, ranged, strict=True):
        others = " | ".join(
            _num(benchmark.interpolate(benchmark.curve(points, n), "psnr", "bpp", z.psnr), ".2f")
            for n in names
        )
        cells = (
            f"{z.level:g} ({z.quality:.0f})",
            f"{z.bpp:.3f}",
            f"{r.bpp:.3f}",
            f"{z.entropy_bpp:.3f}",
            f"{z.psnr:.2f}",
            f"{z.ssim:.4f}",
            *([f"{z.ms_ssim:.4f}"] if ms_ssim else []),
        )
        lines.append("| " + " | ".join(map(str, cells)) + f" | {others} |")
    lines += [
        "",
        "| cae-codec against | BD-rate, auto (default) | BD-rate, zstd | BD-rate, range | BD-PSNR, auto |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for n in names:
        anchor = benchmark.curve(points, n)
        rates = [benchmark.bd_rate(anchor, c) for c in (auto, zstd, ranged)]
        gain = benchmark.bd_psnr(anchor, auto)
        lines.append(
            f"| {n} | " + " | ".join(f"{_num(r, '+.1f')} %" for r in rates) + f" | {_num(gain, '+.2f')} dB |"
        )
    return "\n".join(lines)


def _peers_from_last_run(name: str, title: str) -> list[benchmark.Point]:
    """The other codecs' points of the last run on the same images (their figures do not depend on
    our weights), so a new model needs only its own measurement."""
    last = json.loads((RESULTS / f"{name}.json").read_text())
    if last["data"] != title:
        raise SystemExit(f"--reuse-peers: the last {name} run measured {last['data']!r}, not {title!r}")
    return [benchmark.Point.from_dict(p) for p in last["points"] if not p["codec"].startswith("cae-codec")]


def _peer_source(name: str, title: str) -> str:
    last = json.loads((RESULTS / f"{name}.json").read_text())
    return last.get("peers_from") if last.get("peers_from") not in (None, "this run") else last["date"]


def run(name: str, images, title: str, published: bool = False, reuse_peers: bool = False) -> str:
    start = time.time()
    h, w_ = images[0].shape[:2]
    w = weights.load(weights_id=weights.default_id(w_, h))
    points = benchmark.measure_cae(images, weights=str(w.path))
    reused = _peers_from_last_run(name, title) if reuse_peers else []
    points += reused
    for codec_name in benchmark.CLASSICS:
        if benchmark.available(codec_name) and not any(p.codec == codec_name for p in reused):
            points += benchmark.measure_classic(images, codec_name)
    record = {
        **benchmark.run_info(w, title),
        "peers_from": _peer_source(name, title) if reused else "this run",
        "seconds": round(time.time() - start),
    }
    benchmark.grid(images[:8], points, w.default_quality, RESULTS / f"{name}-grid.png", str(w.path))
    return _publish(name, record, points, w, published)


def _publish(name: str, record: dict, points: list[benchmark.Point], w, published: bool) -> str:
    """{name}.json (the record and the points), {name}-rd.png and {name}.md; returns the tables."""
    record = {**record, "points": [p.to_dict() for p in points]}
    (RESULTS / f"{name}.json").write_text(json.dumps(record, indent=1) + "\n")
    shown = points + (benchmark.published_points() if published else [])
    benchmark.plot_rd(shown, RESULTS / f"{name}-rd.png", f"{record['data']}; weights {w.name}")
    table = markdown(shown, f"{record['data']}, weights {w.name} (id {w.id})")
    (RESULTS / f"{name}.md").write_text(table + "\n")
    return table


def remeasure(name: str, images, peers: list[str], published: bool) -> str:
    """Measure only `peers` again (after a change in how they are run or counted) and keep every
    other point of the last run, ours included (a whole level's files have not changed)."""
    start = time.time()
    record = json.loads((RESULTS / f"{name}.json").read_text())
    gone = set(peers) | ({"jpeg-payload"} if "jpeg" in peers else set())
    points = [benchmark.Point.from_dict(p) for p in record["points"] if p["codec"] not in gone]
    measured = [n for n in peers if benchmark.available(n)]
    points += benchmark.measure_classics(images, measured)
    w = weights.load(weights_id=record["weights"]["id"])
    record |= {
        **benchmark.run_info(w, record["data"]),
        "remeasured": {"peers": measured, "seconds": round(time.time() - start)},
    }
    return _publish(name, record, points, w, published)


def redraw(name: str, images, published: bool) -> str:
    """Rebuild the BD table of {name}.md, {name}-rd.png and {name}-grid.png from the last run's
    points, measuring nothing (after a change in how BD figures are computed or plots drawn); the
    per-level table stays as measured. The grid codes its few crops again."""
    record = json.loads((RESULTS / f"{name}.json").read_text())
    points = [benchmark.Point.from_dict(p) for p in record["points"]]
    shown = points + (benchmark.published_points() if published else [])
    w = weights.load(weights_id=record["weights"]["id"])
    benchmark.plot_rd(shown, RESULTS / f"{name}-rd.png", f"{record['data']}; weights {w.name}")
    benchmark.grid(images[:8], points, w.default_quality, RESULTS / f"{name}-grid.png", str(w.path))
    return tables_only(name, published)


def tables_only(name: str, published: bool) -> str:
    """Rebuild the BD table of {name}.md from the last run's points, measuring nothing (after a
    change in how BD figures are computed); the per-level table above it stays as measured."""
    stored = json.loads((RESULTS / f"{name}.json").read_text())["points"]
    points = [benchmark.Point.from_dict(p) for p in stored]
    shown = points + (benchmark.published_points() if published else [])
    old = (RESULTS / f"{name}.md").read_text().splitlines()
    new = markdown(shown, old[0].removeprefix("#### ")).splitlines()
    head = "| cae-codec against"
    start = next(i for i, line in enumerate(old) if line.startswith(head))
    table = "\n".join(old[:start] + new[next(i for i, line in enumerate(new) if line.startswith(head)) :])
    (RESULTS / f"{name}.md").write_text(table + "\n")
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--only", default="cifar10,photos,kodak", help="data sets to run, comma-separated")
    parser.add_argument(
        "--reuse-peers",
        action="store_true",
        help="take the other codecs' points from the last run on the same images; measure only ours",
    )
    parser.add_argument(
        "--tables-only", action="store_true", help="rebuild the Markdown tables from the last run's points"
    )
    parser.add_argument(
        "--remeasure",
        metavar="PEERS",
        help="measure only these peers again (e.g. jpeg,jpeg2000,avif,heif), keeping every other point",
    )
    parser.add_argument(
        "--redraw",
        action="store_true",
        help="rebuild the tables, rd.png and grid.png from the last run's points",
    )
    args = parser.parse_args()
    only = args.only.split(",")
    if args.tables_only:
        for name in only:
            print(tables_only(name, published=name == "kodak"))
        return
    shared = Path(args.shared)
    RESULTS.mkdir(exist_ok=True)
    if "cifar10" in only:
        cifar = list(load_cifar10("test", shared / "cifar10")[: args.limit])
        if args.remeasure:
            print(remeasure("cifar10", cifar, args.remeasure.split(","), published=False))
        elif args.redraw:
            print(redraw("cifar10", cifar, published=False))
        else:
            print(run("cifar10", cifar, f"CIFAR-10 test rows ({len(cifar)} images, 32x32)"))
    if "photos" in only:
        photos = [np.asarray(Image.open(shared / "photos" / name).convert("RGB")) for name in PHOTOS]
        title = "Photos (astronaut 512x512, coffee 600x400, chelsea 451x300)"
        if args.remeasure:
            print(remeasure("photos", photos, args.remeasure.split(","), published=False))
        else:
            print(
                redraw("photos", photos, False)
                if args.redraw
                else run("photos", photos, title, reuse_peers=args.reuse_peers)
            )
    if "kodak" in only:
        kodak = load_folder(locate_kodak(shared / "kodak"), args.limit)
        title = f"Kodak ({len(kodak)} images, 768x512)"
        if args.remeasure:
            print(remeasure("kodak", kodak, args.remeasure.split(","), published=len(kodak) == 24))
        elif args.redraw:
            print(redraw("kodak", kodak, published=len(kodak) == 24))
        else:
            print(run("kodak", kodak, title, published=len(kodak) == 24, reuse_peers=args.reuse_peers))


if __name__ == "__main__":
    main()
