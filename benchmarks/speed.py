"""Speed, side by side with Pillow's WebP (method 6) and JPEG, on this machine.

    python benchmarks/speed.py [--shared ../shared/data] [--skip-16mp]
    python benchmarks/speed.py --sizes 0.4,3,12,24,45    # the per-megapixel table alone

--sizes: seconds per megapixel each way on mosaics of the Kodak photos at each size (cae-codec in a
fresh process each way, with its peak RSS; its default precision, bf16 where the CPU has it), against
WebP method 6, AVIF and JPEG XL at their default and strongest effort, all in one run. The strongest
efforts (AVIF speed 0, JPEG XL effort 9) run up to 3 MP only: a minute or more a megapixel. Writes
benchmarks/results/speed-sizes.json and speed-sizes.md.

Times (best of 3 unless said): a 768x512 Kodak photo at the default quality, in-process; 2- and
16-megapixel photos (kodim01 enlarged with Lanczos), each in a fresh process so its peak RSS is its
own; 32x32 images (a CIFAR-10 test row) in a loop; one CLI call on 1,000 small PNGs; `cae-codec bench
cifar10` on the shared rows; `cae-codec --help`.
Writes benchmarks/results/speed.json and speed.md.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import cae_codec
from cae_codec.benchmark import best_of
from cae_codec.datasets import load_cifar10

RESULTS = Path(__file__).parent / "results"
PEERS = {"webp": ("WEBP", {"quality": 75, "method": 6}), "jpeg": ("JPEG", {"quality": 75})}

# Run in a fresh process, so each peak RSS is its own: compress an image file, or decompress a .cae.
_CHILD = """
import sys, time, resource, cae_codec
import numpy as np
from pathlib import Path
from PIL import Image
source, target = sys.argv[1:]
cae_codec.decompress(cae_codec.compress(np.zeros((320, 320, 3), np.uint8)))  # import, load the photo model
start = time.perf_counter()
if source.endswith(".cae"):
    decoded = cae_codec.decompress(source); seconds = time.perf_counter() - start
    decoded.save(target)
else:
    image = Image.open(source); image.load(); start = time.perf_counter()
    data = cae_codec.compress(image); seconds = time.perf_counter() - start
    Path(target).write_bytes(data)
print(seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def _child(source: Path, target: Path) -> tuple[float, float]:
    """(seconds, peak RSS in MiB) of one compress or decompress in a fresh process."""
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(source), str(target)], capture_output=True, text=True, check=True
    )
    seconds, rss = done.stdout.split()
    return float(seconds), int(rss) / 1024


def peer_times(image: Image.Image) -> dict[str, dict[str, float]]:
    out = {}
    for name, (fmt, options) in PEERS.items():

        def encode(fmt=fmt, options=options) -> bytes:
            buffer = io.BytesIO()
            image.save(buffer, format=fmt, **options)
            return buffer.getvalue()

        data = encode()
        out[name] = {
            "encode_s": best_of(encode),
            "decode_s": best_of(lambda data=data: Image.open(io.BytesIO(data)).load()),
        }
    return out


def photo(image: Image.Image) -> dict:
    cae_codec.compress(image)  # load the weights once, outside the timing
    data = cae_codec.compress(image)
    return {
        "cae-codec": {
            "encode_s": best_of(lambda: cae_codec.compress(image)),
            "decode_s": best_of(lambda: cae_codec.decompress(data)),
        },
        **peer_times(image),
    }


def large(image: Image.Image, side: tuple[int, int]) -> dict:
    big = image.resize(side, Image.Resampling.LANCZOS)
    with tempfile.TemporaryDirectory() as tmp:
        path, packed = Path(tmp) / "big.png", Path(tmp) / "big.cae"
        big.save(path)
        enc, rss_enc = _child(path, packed)
        dec, rss_dec = _child(packed, Path(tmp) / "decoded.png")
        size = packed.stat().st_size
        decoded = np.asarray(Image.open(Path(tmp) / "decoded.png").convert("RGB"))
    return {
        **edge_psnr(np.asarray(big.convert("RGB")), decoded),
        "pixels": side[0] * side[1],
        "cae-codec": {"encode_s": enc, "decode_s": dec},
        "peak_rss_mib_encode": rss_enc,
        "peak_rss_mib_decode": rss_dec,
        "bpp": 8 * size / (side[0] * side[1]),
        **peer_times(big),
    }


def edge_psnr(original: np.ndarray, decoded: np.ndarray, grid: int = 512, reach: int = 4) -> dict:
    """PSNR within `reach` px of the 512-px grid, where tiles (512 px) and segments (1024 px) meet,
    and on the rest: a seam would show as a lower PSNR on the edges."""
    rows, cols = np.arange(original.shape[0])[:, None], np.arange(original.shape[1])[None, :]

    def near(v):
        return (np.abs((v + grid // 2) % grid - grid // 2) < reach) & (v >= reach)

    edges = near(rows) | near(cols)
    error = ((decoded.astype(np.float64) - original) ** 2).mean(axis=2)
    return {
        "psnr_edges": 10 * np.log10(255**2 / error[edges].mean()),
        "psnr_rest": 10 * np.log10(255**2 / error[~edges].mean()),
    }


# name -> (Pillow format, save options, largest size in MP it runs at): a peer at a similar quality
# to cae-codec's default (q71, about 37 dB on Kodak), default and strongest effort.
SIZE_PEERS = {
    "webp m6": ("WEBP", {"quality": 75, "method": 6}, None),
    "avif (default speed)": ("AVIF", {"quality": 60}, None),
    "avif speed 0": ("AVIF", {"quality": 60, "speed": 0}, 3.0),
    "jpeg xl (default effort)": ("JXL", {"quality": 80}, None),
    "jpeg xl effort 9": ("JXL", {"quality": 80, "effort": 9}, 3.0),
}


def mosaic(kodak: Path, megapixels: float) -> Image.Image:
    """A 3:2 photo of about this many megapixels tiled from the Kodak photos (portraits turned)."""
    tiles = [np.asarray(Image.open(p).convert("RGB")) for p in sorted(kodak.glob("kodim*.png"))]
    tiles = [t if t.shape[0] == 512 else t.transpose(1, 0, 2) for t in tiles]
    height = int((megapixels * 1e6 / 1.5) ** 0.5)
    width = int(height * 1.5)
    out = np.zeros((height, width, 3), np.uint8)
    k = 0
    for top in range(0, height, 512):
        for left in range(0, width, 768):
            tile = tiles[k % len(tiles)]
            k += 1
            out[top : top + 512, left : left + 768] = tile[: height - top, : width - left][:512, :768]
    return Image.fromarray(out)


def per_megapixel(kodak: Path, sizes: list[float]) -> dict:
    """Seconds per megapixel each way at each size, cae-codec and the peers, in one run."""
    with contextlib.suppress(ImportError):
        import pillow_jxl  # noqa: F401  (registers JPEG XL)
    from cae_codec import codec, cpu

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for mp in sizes:
            image = mosaic(kodak, mp)
            pixels = image.width * image.height
            path, packed = Path(tmp) / "m.png", Path(tmp) / "m.cae"
            image.save(path, compress_level=1)
            enc, rss_enc = _child(path, packed)
            dec, rss_dec = _child(packed, Path(tmp) / "d.png")
            decoded = np.asarray(Image.open(Path(tmp) / "d.png").convert("RGB")).astype(np.float64)
            mse = ((decoded - np.asarray(image, dtype=np.float64)) ** 2).mean()
            row = {
                "megapixels": pixels / 1e6,
                "size": f"{image.width}x{image.height}",
                "cae-codec": {
                    "encode_s_per_mp": enc / (pixels / 1e6),
                    "decode_s_per_mp": dec / (pixels / 1e6),
                    "peak_rss_mib": [rss_enc, rss_dec],
                    "bpp": 8 * packed.stat().st_size / pixels,
                    "psnr": 10 * np.log10(255**2 / mse),
                },
            }
            for name, (fmt, options, most) in SIZE_PEERS.items():
                if most is not None and pixels / 1e6 > most * 1.05:
                    continue
                try:
                    buffer = io.BytesIO()
                    start = time.perf_counter()
                    image.save(buffer, format=fmt, **options)
                    e = time.perf_counter() - start
                    start = time.perf_counter()
                    Image.open(io.BytesIO(buffer.getvalue())).load()
                    d = time.perf_counter() - start
                except (KeyError, OSError, ValueError) as error:  # a format this Pillow lacks
                    print(f"{name}: {error}", file=sys.stderr)
                    continue
                row[name] = {
                    "encode_s_per_mp": e / (pixels / 1e6),
                    "decode_s_per_mp": d / (pixels / 1e6),
                    "bpp": 8 * len(buffer.getvalue()) / pixels,
                }
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    return {
        "cpu": cpu.describe(),
        "bf16": codec.use_bf16("auto"),
        "int8_exact": cpu.fast_int8(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "rows": rows,
    }


def sizes_markdown(r: dict) -> str:
    """The per-megapixel table: one row per size, cae-codec and each peer, encode / decode."""
    names = ["cae-codec", *SIZE_PEERS]
    lines = [
        f"#### Seconds per megapixel, encode / decode: {r['cpu']}, {r['threads']} threads, "
        f"torch {r['torch']}",
        "",
        f"cae-codec at its default quality 71, bfloat16 {'on' if r['bf16'] else 'off'}, int8 exact "
        f"hyper-synthesis {'on' if r['int8_exact'] else 'off'}; peers at similar qualities (WebP q75, "
        "AVIF q60, JPEG XL q80).",
        "",
        "| size | " + " | ".join(names) + " |",
        "| ---" + " | ---:" * len(names) + " |",
    ]
    for row in r["rows"]:
        cells = []
        for name in names:
            got = row.get(name)
            cells.append(
                "n/a" if got is None else f"{got['encode_s_per_mp']:.3f} / {got['decode_s_per_mp']:.3f}"
            )
        lines.append(f"| {row['megapixels']:.1f} MP ({row['size']}) | " + " | ".join(cells) + " |")
    lines += [
        "",
        "| size | cae-codec peak RSS, encode / decode | bpp | PSNR |",
        "| --- | ---: | ---: | ---: |",
    ]
    for row in r["rows"]:
        c = row["cae-codec"]
        lines.append(
            f"| {row['megapixels']:.1f} MP | {c['peak_rss_mib'][0]:.0f} / {c['peak_rss_mib'][1]:.0f} MiB | "
            f"{c['bpp']:.3f} | {c['psnr']:.2f} dB |"
        )
    return "\n".join(lines) + "\n"


def tiny(rows: np.ndarray) -> dict:
    """32x32 images one call at a time, then through the batch API (batches of 64)."""
    images = [Image.fromarray(r) for r in rows]
    cae_codec.compress(images[0])
    start = time.perf_counter()
    files = [cae_codec.compress(im) for im in images]
    enc = time.perf_counter() - start
    start = time.perf_counter()
    for data in files:
        cae_codec.decompress(data)
    dec = time.perf_counter() - start
    start = time.perf_counter()
    batched = cae_codec.compress_many(images)
    enc_many = time.perf_counter() - start
    start = time.perf_counter()
    cae_codec.decompress_many(batched)
    dec_many = time.perf_counter() - start
    return {
        "images": len(images),
        "encode_images_per_s": len(images) / enc,
        "decode_images_per_s": len(images) / dec,
        "batch_encode_images_per_s": len(images) / enc_many,
        "batch_decode_images_per_s": len(images) / dec_many,
    }


def cli_folder(rows: np.ndarray) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for i, row in enumerate(rows):
            Image.fromarray(row).save(folder / f"{i:04d}.png")
        inputs = sorted(str(p) for p in folder.glob("*.png"))
        start = time.perf_counter()
        subprocess.run(["cae-codec", "compress", "--quiet", *inputs], check=True)
        seconds = time.perf_counter() - start
    return {"files": len(inputs), "seconds": seconds, "images_per_s": len(inputs) / seconds}


def ray_throughput(rows: np.ndarray) -> dict:
    """Images/s of `compress --engine ray` with 1 and 2 workers (a local Ray instance, started once)."""
    import ray

    from cae_codec import bulk

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        sources = []
        for i, row in enumerate(rows):
            sources.append(folder / f"{i:04d}.png")
            Image.fromarray(row).save(sources[-1])
        for workers in (1, 2):
            pairs = [(p, folder / f"{p.stem}.{workers}.cae") for p in sources]
            start = time.perf_counter()
            records = list(bulk.run_on_ray(pairs, bulk.Job("compress"), workers=workers))
            seconds = time.perf_counter() - start
            assert not any("error" in r for r in records)
            out[f"{workers}_workers"] = {
                "files": len(pairs),
                "seconds": seconds,
                "images_per_s": len(pairs) / seconds,
            }
    ray.shutdown()
    return out


# None: bench's default (cae-codec's default coder against JPEG and WebP); "all": every codec this
# Pillow has, with all three of cae-codec's coders (what benchmarks/readme_results.py measures).
BENCH_CODECS = (None, "all")


def bench_times(cifar: Path) -> dict:
    """Wall time of `cae-codec bench cifar10` on the shared rows: as it runs by default, and with
    every codec this Pillow has and all of cae-codec's coders."""
    out = {}
    for codecs in BENCH_CODECS:
        with tempfile.TemporaryDirectory() as tmp:
            command = ["cae-codec", "bench", "cifar10", "--data-dir", str(cifar), "--out", f"{tmp}/b"]
            start = time.perf_counter()
            extra = ["--codecs", codecs, "--coders", "auto,zstd,range"] if codecs else []
            done = subprocess.run(command + extra, check=True, capture_output=True)
            seconds = time.perf_counter() - start
            rows = json.loads(Path(f"{tmp}/b/results.json").read_text())["data"]
        skipped = done.stderr.decode().count("skipped")
        out[codecs or "default"] = {"seconds": seconds, "data": rows, "codecs_skipped": skipped}
    return out


def help_time() -> float:
    return best_of(lambda: subprocess.run(["cae-codec", "--help"], check=True, capture_output=True), 5)


def markdown(r: dict) -> str:
    p = r["photo_768x512"]
    lines = [
        f"#### Speed on {r['machine']}",
        "",
        "| what | cae-codec | WebP (method 6) | JPEG |",
        "| --- | ---: | ---: | ---: |",
    ]
    for key, label in (("encode_s", "encode"), ("decode_s", "decode")):
        lines.append(
            f"| 768x512 photo, {label} | {p['cae-codec'][key]:.3f} s | "
            f"{p['webp'][key]:.4f} s | {p['jpeg'][key]:.4f} s |"
        )
    for name in ("photo_2mp", "photo_16mp"):
        if name in r:
            b = r[name]
            for key, label in (("encode_s", "encode"), ("decode_s", "decode")):
                lines.append(
                    f"| {b['pixels'] / 1e6:.1f} MP photo, {label} | {b['cae-codec'][key]:.2f} s | "
                    f"{b['webp'][key]:.3f} s | {b['jpeg'][key]:.3f} s |"
                )
            lines.append(
                f"| {b['pixels'] / 1e6:.1f} MP photo, peak RSS (encode / decode) | "
                f"{b['peak_rss_mib_encode']:.0f} / {b['peak_rss_mib_decode']:.0f} MiB | | |"
            )
            lines.append(
                f"| {b['pixels'] / 1e6:.1f} MP photo, PSNR near tile and segment edges / elsewhere | "
                f"{b['psnr_edges']:.2f} / {b['psnr_rest']:.2f} dB | | |"
            )
    t = r["tiny_32x32"]
    lines.append(
        f"| 32x32 images, one at a time | {t['encode_images_per_s']:.0f} / "
        f"{t['decode_images_per_s']:.0f} images/s (enc / dec) | | |"
    )
    lines.append(
        f"| 32x32 images, `compress_many` / `decompress_many` | {t['batch_encode_images_per_s']:.0f} / "
        f"{t['batch_decode_images_per_s']:.0f} images/s (enc / dec) | | |"
    )
    for workers in (1, 2):
        if (ray := r.get("ray", {}).get(f"{workers}_workers")) is not None:
            lines.append(
                f"| `compress --engine ray`, {workers} worker(s), {ray['files']} 32x32 PNGs | "
                f"{ray['images_per_s']:.0f} images/s ({ray['seconds']:.1f} s, Ray's start-up included) | | |"
            )
    c = r["cli_1000_pngs"]
    lines.append(
        f"| one CLI call on {c['files']} 32x32 PNGs (default engine: one process, 2 threads) | "
        f"{c['images_per_s']:.0f} images/s ({c['seconds']:.1f} s) | | |"
    )
    for codecs, b in r.get("bench_cifar10", {}).items():
        label = "the default: JPEG, WebP" if codecs != "all" else "--codecs all --coders auto,zstd,range"
        lines.append(f"| `cae-codec bench cifar10` ({b['data']}; {label}) | {b['seconds']:.0f} s | | |")
    lines.append(f"| `cae-codec --help` | {r['help_s']:.2f} s | | |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--skip-16mp", action="store_true")
    parser.add_argument("--ray", action="store_true", help="also time --engine ray with 1 and 2 workers")
    parser.add_argument("--sizes", help="megapixels, e.g. 0.4,3,12,24,45: the per-megapixel table alone")
    args = parser.parse_args()
    shared = Path(args.shared)
    if args.sizes:
        result = per_megapixel(shared / "kodak", [float(v) for v in args.sizes.split(",")])
        result["date"] = time.strftime("%Y-%m-%d")
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "speed-sizes.json").write_text(json.dumps(result, indent=1) + "\n")
        table = sizes_markdown(result)
        (RESULTS / "speed-sizes.md").write_text(table)
        print(table)
        return
    kodim = Image.open(shared / "kodak" / "kodim01.png").convert("RGB")
    rows = load_cifar10("test", shared / "cifar10")
    rows = np.concatenate([rows] * (-(-1000 // len(rows))))[:1000]  # the shared copy has 508 exact rows
    result = {
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "cae_codec": cae_codec.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "help_s": help_time(),
        "photo_768x512": photo(kodim),
        "photo_2mp": large(kodim, (1728, 1152)),
        "tiny_32x32": tiny(rows[:200]),
        "cli_1000_pngs": cli_folder(rows),
        "bench_cifar10": bench_times(shared / "cifar10"),
    }
    if not args.skip_16mp:
        result["photo_16mp"] = large(kodim, (4896, 3264))
    if args.ray:
        result["ray"] = ray_throughput(rows[:500])
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "speed.json").write_text(json.dumps(result, indent=1) + "\n")
    table = markdown(result)
    (RESULTS / "speed.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
