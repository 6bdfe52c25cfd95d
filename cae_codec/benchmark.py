"""Rate-distortion benchmark: cae-codec against Pillow's codecs on the same images, measured alike."""

from __future__ import annotations

import csv
import io
import json
import math
import multiprocessing
import os
import textwrap
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from . import codec, metrics, published
from . import weights as weights_mod
from .codec import AUTO
from .container import header_size, unpack
from .peers import CLASSICS, Classic, available  # noqa: F401  (Classic re-exported: the benchmark's API)
from .peers import settings as peer_settings
from .quality import of_level

JPEG_PAYLOAD = "jpeg-payload"


@dataclass
class Point:
    """One codec at one quality; quality measures are means of per-image values."""

    codec: str
    quality: float  # the codec's own quality; cae-codec's on the public 0-100 scale, as compress takes
    bpp: float
    psnr: float
    mse: float
    ssim: float
    encode_ms: float
    decode_ms: float
    images: int
    coder: str | None = None
    entropy_bpp: float | None = None
    ms_ssim: float = float("nan")
    level: float | None = None  # cae-codec: the trained level (1-8) that quality is

    @classmethod
    def from_dict(cls, record: dict) -> Point:
        """A stored point; cae-codec's from before 0.6 held the level in quality (8 levels then)."""
        if record["codec"] == "cae-codec" and record.get("level") is None:
            record = {**record, "level": record["quality"], "quality": of_level(record["quality"], 8)}
        return cls(**record)

    @property
    def label(self) -> str:
        """The curve this point belongs to: the codec, and for cae-codec its coder too."""
        return f"{self.codec}/{self.coder}" if self.coder else self.codec

    def to_dict(self) -> dict:
        return asdict(self)


PUBLISHED = " (published)"  # suffix of the labels of curves we cite rather than measure


def published_points() -> list[Point]:
    """CompressAI's published Kodak curves (bpp and PSNR only; see published.SOURCE)."""
    nan = math.nan
    return [
        Point(name + PUBLISHED, q, bpp, psnr, nan, nan, nan, nan, 24)
        for name, (bpps, psnrs) in published.KODAK.items()
        for q, (bpp, psnr) in enumerate(zip(bpps, psnrs, strict=True), start=1)
    ]


def jpeg_payload_size(data: bytes) -> int:
    """Bytes of entropy-coded data: after the last start-of-scan header, before the end marker."""
    sos = data.rfind(b"\xff\xda")
    length = int.from_bytes(data[sos + 2 : sos + 4], "big")
    return len(data) - (sos + 2 + length) - 2


class _Tally:
    """Running sums for one (codec, quality)."""

    def __init__(self) -> None:
        self.columns: dict[str, list[float]] = {}

    def add(self, **values: float) -> None:
        for key, value in values.items():
            self.columns.setdefault(key, []).append(value)

    def extend(self, other: _Tally) -> None:
        for key, values in other.columns.items():
            self.columns.setdefault(key, []).extend(values)

    def mean(self, key: str) -> float:
        return float(np.mean(self.columns[key]))


def pillow_encoder(spec: Classic, quality: int) -> Callable[[np.ndarray], bytes]:
    value = [quality] if spec.quality_key == "quality_layers" else quality

    def encode(image: np.ndarray) -> bytes:
        buffer = io.BytesIO()
        options = {**spec.options, **(spec.color_options if image.ndim == 3 else {})}
        Image.fromarray(image).save(buffer, format=spec.fmt, **{spec.quality_key: value}, **options)
        return spec.strip(buffer.getvalue()) if spec.strip else buffer.getvalue()

    return encode


def decode_pillow(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def _quality(image: np.ndarray, decoded: np.ndarray) -> dict[str, float]:
    return {
        "psnr": metrics.psnr(image, decoded),
        "mse": metrics.mse(image, decoded),
        "ssim": metrics.ssim(image, decoded),
        "ms_ssim": metrics.ms_ssim(image, decoded),
    }


def _score(tally: _Tally, image: np.ndarray, decoded: np.ndarray, size: int, enc: float, dec: float) -> None:
    h, w = image.shape[:2]
    tally.add(
        bpp=metrics.bpp(size, w, h), **_quality(image, decoded), encode_ms=1000 * enc, decode_ms=1000 * dec
    )


def best_of(fn: Callable[[], object], runs: int = 3) -> float:
    """The shortest of `runs` timed calls, in seconds."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def _timed(fn, *args):
    start = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - start


def _classic_tallies(
    name: str, qualities: list[int], images: list[np.ndarray]
) -> list[tuple[_Tally, _Tally]]:
    """(whole file, JPEG payload) tallies of a Pillow codec, per quality, over these images."""
    if not available(name):  # also registers a plugin's format in a fresh worker process
        raise ValueError(f"this Pillow cannot write {name}")
    spec, out = CLASSICS[name], []
    for quality in qualities:
        encode = pillow_encoder(spec, quality)
        whole, payload = _Tally(), _Tally()
        for image in images:
            data, enc = _timed(encode, image)
            decoded, dec = _timed(decode_pillow, data)
            scores = _quality(image, decoded)
            h, w = image.shape[:2]
            times = {"encode_ms": 1000 * enc, "decode_ms": 1000 * dec}
            whole.add(bpp=metrics.bpp(len(data), w, h), **scores, **times)
            if name == "jpeg":
                payload.add(bpp=metrics.bpp(jpeg_payload_size(data), w, h), **scores, **times)
        out.append((whole, payload))
    return out


def measure_classic(images: list[np.ndarray], name: str, qualities=None, tick=None) -> list[Point]:
    """A Pillow codec at each quality; JPEG also yields header-free payload rows."""
    return measure_classics(images, [name], {name: qualities} if qualities else None, tick, workers=1)


def _run_jobs(fn: Callable, jobs: list[tuple], workers: int, done: Callable | None) -> list:
    """fn(*job) for each job, in `workers` processes (0: one per core), calling done(job) as each
    ends; the results in job order, so means are summed in the same order however many workers."""
    workers = min(len(jobs), workers or os.cpu_count() or 1)
    if workers <= 1:
        results = []
        for job in jobs:
            results.append(fn(*job))
            if done:
                done(job)
        return results
    # spawn, not fork: the parent holds PyTorch's thread pools, which a forked child must not inherit
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(fn, *job): i for i, job in enumerate(jobs)}
        results = [None] * len(jobs)
        for future in as_completed(futures):
            results[futures[future]] = future.result()
            if done:
                done(jobs[futures[future]])
    return results


def _merge(into: list[_Tally], parts: list[_Tally]) -> None:
    for tally, part in zip(into, parts, strict=True):
        tally.extend(part)


def measure_classics(
    images: list[np.ndarray], names: list[str], qualities: dict | None = None, tick=None, workers: int = 0
) -> list[Point]:
    """Pillow codecs at each of their qualities (or `qualities[name]`), the images split among
    `workers` processes (0: one per core). `tick(n)` reports n more image-qualities done."""
    grids = {n: list((qualities or {}).get(n) or CLASSICS[n].qualities) for n in names}
    size = max(1, math.ceil(len(images) / (4 * (workers or os.cpu_count() or 1))))
    jobs = [(n, grids[n], images[i : i + size]) for n in names for i in range(0, len(images), size)]
    merged = {n: [(_Tally(), _Tally()) for _ in grids[n]] for n in names}
    done = (lambda job: tick(len(job[2]) * len(job[1]))) if tick else None
    for job, parts in zip(jobs, _run_jobs(_classic_tallies, jobs, workers, done), strict=True):
        for into, part in zip(merged[job[0]], parts, strict=True):
            _merge(list(into), list(part))
    points = []
    for n in names:
        for quality, (whole, payload) in zip(grids[n], merged[n], strict=True):
            points.append(_point(n, quality, whole, len(images)))
            if n == "jpeg":
                points.append(_point(JPEG_PAYLOAD, quality, payload, len(images)))
    return points


CAE_CODERS = ("auto", *codec.CODERS)  # auto: the smaller of the two files, as compress picks by default


def _chunks(images: list[np.ndarray], size: int) -> list[list[np.ndarray]]:
    """Runs of up to `size` images for the batch API; an image over codec.BATCH_PIXELS goes alone."""
    out: list[list[np.ndarray]] = []
    for image in images:
        small = image.shape[0] * image.shape[1] <= codec.BATCH_PIXELS
        if small and out and len(out[-1]) < size and out[-1][0].shape == image.shape:
            out[-1].append(image)
        else:
            out.append([image])
    return out


def measure_cae(
    images: list[np.ndarray],
    qualities=None,
    weights: str | None = None,
    tick=None,
    batch: int = 64,
    workers: int = 1,
    coders: tuple[str, ...] = CAE_CODERS,
) -> list[Point]:
    """cae-codec at each quality with each of `coders` (auto: the smaller file of zstd's and the
    range coder's, as compress keeps), with the entropy model's own rate estimate beside it.
    Same-size small images go through the batch API `batch` at a time, so their times are a batch's
    time per image; with `workers` > 1 (0: one per core) runs of images go to that many processes,
    each on one thread. Measuring auto alone codes each image once, not twice."""
    w = weights_mod.load(weights)
    levels = list(qualities or range(1, w.levels + 1))
    merged = [[_Tally() for _ in CAE_CODERS] for _ in levels]
    jobs = [(part, levels, str(w.path), workers != 1, tuple(coders)) for part in _chunks(images, batch)]
    done = (lambda job: tick(len(job[0]) * len(levels))) if tick else None
    for parts in _run_jobs(_cae_tallies, jobs, workers, done):
        for into, part in zip(merged, parts, strict=True):
            _merge(into, part)
    points = []
    for c, coder in enumerate(CAE_CODERS):
        if coder not in coders:
            continue
        for q, tallies in zip(levels, merged, strict=True):
            points.append(_point("cae-codec", of_level(q, w.levels), tallies[c], len(images), coder=coder))
            points[-1].entropy_bpp = tallies[c].mean("entropy_bpp")
            points[-1].level = q
    return points


def _cae_tallies(
    part: list[np.ndarray], levels: list[int], weights: str, one_thread: bool, coders: tuple[str, ...]
) -> list[list[_Tally]]:
    """Per level, one tally per entry of CAE_CODERS over a run of images (one batch-API call each);
    only `coders`' tallies are filled."""
    if one_thread:
        import torch

        torch.set_num_threads(1)  # a worker of several: the processes share the cores
    w = weights_mod.load(weights)
    out = []
    for q in levels:
        quality = of_level(q, w.levels)
        tallies = [_Tally() for _ in CAE_CODERS]
        if coders == (AUTO,):  # compress's own default, coded and decoded once
            files, enc = _timed(codec.compress_many, part, quality, w.path)
            decoded, dec = _timed(codec.decompress_many, files, w.path)
            for image, data, back in zip(part, files, decoded, strict=True):
                tallies[0].add(
                    bpp=metrics.bpp(len(data), image.shape[1], image.shape[0]),
                    **_quality(image, np.asarray(back.convert("RGB"))),
                    encode_ms=1000 * enc / len(part),
                    decode_ms=1000 * dec / len(part),
                    entropy_bpp=_estimate_bpp(w, data, q, image),
                )
            out.append(tallies)
            continue
        each, enc = _timed(codec.compress_many_each, part, quality, w.path)
        decoded = {c: _timed(codec.decompress_many, [f[c] for f in each], w.path) for c in codec.CODERS}
        for k, (image, files) in enumerate(zip(part, each, strict=True)):
            rgb = [np.asarray(decoded[c][0][k].convert("RGB")) for c in codec.CODERS]
            if any(not np.array_equal(rgb[0], other) for other in rgb[1:]):
                raise RuntimeError(f"the coders decoded image {k} of a batch to different pixels")
            scores = _quality(image, rgb[0])  # the same pixels whichever coder wrote the file
            estimate = _estimate_bpp(w, files["zstd"], q, image)
            tried = codec.auto_coders(image.shape[1], image.shape[0], q)
            chosen = min(tried, key=lambda c: len(files[c]))  # what compress keeps by default
            for tally, c in zip(tallies, CAE_CODERS, strict=True):
                name = chosen if c == AUTO else c
                tally.add(
                    bpp=metrics.bpp(len(files[name]), image.shape[1], image.shape[0]),
                    **scores,
                    encode_ms=1000 * enc / len(part),
                    decode_ms=1000 * decoded[name][1] / len(part),
                    entropy_bpp=estimate,
                )
        out.append(tallies)
    return out


def _estimate_bpp(w: weights_mod.Weights, data: bytes, level: float, image: np.ndarray) -> float:
    """The model's own rate for a file's latent, plus the header's bits, per pixel."""
    f = unpack(data)
    bits = codec.latent_bits(w, codec.decode_symbols(w, f.color, f.header), f.header.tables)
    return (bits + 8 * header_size(data)) / (image.shape[0] * image.shape[1])


def _point(name: str, quality: int, tally: _Tally, count: int, coder: str | None = None) -> Point:
    keys = ("bpp", "psnr", "mse", "ssim", "encode_ms", "decode_ms")
    point = Point(name, quality, *(tally.mean(k) for k in keys), images=count, coder=coder)
    point.ms_ssim = tally.mean("ms_ssim")
    return point


def curve(points: list[Point], label: str) -> list[Point]:
    return [p for p in points if p.label == label]


def labels(points: list[Point], ours: bool) -> list[str]:
    """Curve labels in order of appearance: cae-codec's (ours=True) or the classical codecs'."""
    return [n for n in dict.fromkeys(p.label for p in points) if n.startswith("cae-codec") == ours]


def interpolate(points: list[Point], x: str, y: str, at: float) -> float | None:
    """y at x=`at` along a codec's curve (linear between neighbours); None outside the curve."""
    pairs = sorted((getattr(p, x), getattr(p, y)) for p in points)
    xs, ys = [a for a, _ in pairs], [b for _, b in pairs]
    if not xs or at < xs[0] or at > xs[-1]:
        return None
    return float(np.interp(at, xs, ys))


def _bd_average(xa, ya, xt, yt) -> float | None:
    """Mean of (curve_t - curve_a) over the shared x range, each y(x) interpolated piecewise-cubically
    (pchip), as the current Bjøntegaard reference tools do: a cubic fit through many points (as in
    VCEG-M33) can swing between them."""
    if len(xa) < 2 or len(xt) < 2:
        return None
    lo, hi = max(min(xa), min(xt)), min(max(xa), max(xt))
    if lo >= hi:
        return None
    area = [pchip_integral(x, y, lo, hi) for x, y in ((xa, ya), (xt, yt))]
    return float((area[1] - area[0]) / (hi - lo))


def pchip_integral(x, y, lo: float, hi: float) -> float:
    """The integral from lo to hi of the monotone piecewise cubic through (x, y) (Fritsch and
    Carlson 1980, with the end slopes of Moler's pchip, as scipy's PchipInterpolator)."""
    order = np.argsort(x)
    x, y = np.asarray(x, float)[order], np.asarray(y, float)[order]
    h = np.diff(x)
    m = np.diff(y) / h
    d = np.empty_like(x)
    if len(x) == 2:
        d[:] = m[0]
    else:
        w1, w2 = 2 * h[1:] + h[:-1], h[1:] + 2 * h[:-1]
        flat = (np.sign(m[1:]) != np.sign(m[:-1])) | (m[1:] == 0) | (m[:-1] == 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            d[1:-1] = np.where(flat, 0.0, (w1 + w2) / (w1 / m[:-1] + w2 / m[1:]))
        d[0] = _end_slope(h[0], h[1], m[0], m[1])
        d[-1] = _end_slope(h[-1], h[-2], m[-1], m[-2])
    total = 0.0
    for k in range(len(h)):  # each piece as y_k + d_k t + c2 t^2 + c3 t^3, t = x - x_k
        a, b = max(lo, x[k]) - x[k], min(hi, x[k + 1]) - x[k]
        if a >= b:
            continue
        c2 = (3 * m[k] - 2 * d[k] - d[k + 1]) / h[k]
        c3 = (d[k] + d[k + 1] - 2 * m[k]) / h[k] ** 2

        def primitive(t: float, k: int = k, c2: float = c2, c3: float = c3) -> float:
            return y[k] * t + d[k] * t**2 / 2 + c2 * t**3 / 3 + c3 * t**4 / 4

        total += primitive(b) - primitive(a)
    return total


def _end_slope(h0: float, h1: float, m0: float, m1: float) -> float:
    """A one-sided three-point slope at an end, kept monotone."""
    d = ((2 * h0 + h1) * m0 - h0 * m1) / (h0 + h1)
    if np.sign(d) != np.sign(m0):
        return 0.0
    if np.sign(m0) != np.sign(m1) and abs(d) > 3 * abs(m0):
        return 3 * m0
    return d


def bd_rate(anchor: list[Point], test: list[Point]) -> float | None:
    """Average bitrate change of `test` against `anchor` at equal PSNR, in percent (negative saves)."""
    diff = _bd_average(
        [p.psnr for p in anchor],
        [math.log(p.bpp) for p in anchor],
        [p.psnr for p in test],
        [math.log(p.bpp) for p in test],
    )
    return None if diff is None else 100 * (math.exp(diff) - 1)


def bd_psnr(anchor: list[Point], test: list[Point]) -> float | None:
    """Average PSNR change of `test` against `anchor` at equal rate, in dB."""
    return _bd_average(
        [math.log(p.bpp) for p in anchor],
        [p.psnr for p in anchor],
        [math.log(p.bpp) for p in test],
        [p.psnr for p in test],
    )


def summary(points: list[Point], full: bool = False) -> str:
    """The table of each cae-codec point against every classical curve, then BD figures: for
    stdout, within 100 columns (level, bpp, PSNR, SSIM and each peer's bpp at that PSNR); `full` adds
    MSE, MS-SSIM, the model's estimate and each peer's PSNR at that bpp, as a Markdown table."""
    others = labels(points, ours=False)

    def num(v: float | None, spec: str) -> str:
        return "n/a" if v is None else format(v, spec)

    head = ["coder", "level", "bpp", "PSNR", "SSIM"] + (["MSE", "MS-SSIM", "est.bpp"] if full else [])
    head += [f"{_short(n)} {k}" for n in others for k in (("PSNR@bpp", "bpp@PSNR") if full else ("bpp",))]
    rows = [head]
    for p in [p for p in points if p.codec == "cae-codec"]:
        row = [p.coder or "", f"{p.level or p.quality:g}", f"{p.bpp:.3f}", f"{p.psnr:.2f}", f"{p.ssim:.4f}"]
        if full:
            row += [f"{p.mse:.1f}", f"{p.ms_ssim:.4f}", num(p.entropy_bpp, ".3f")]
        for n in others:
            c = curve(points, n)
            if full:
                row.append(num(interpolate(c, "bpp", "psnr", p.bpp), ".2f"))
            row.append(num(interpolate(c, "psnr", "bpp", p.psnr), ".3f"))
        rows.append(row)
    if full:
        lines = ["| " + " | ".join(r) + " |" for r in rows]
        lines.insert(1, "|" + " ---: |" * len(head))
    else:
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        lines = [" ".join(cell.rjust(w) for cell, w in zip(r, widths, strict=True)) for r in rows]
        lines.insert(1, "(peers: bpp each needs for the same PSNR, read off its curve)")
    lines.append("")
    for ours in labels(points, ours=True):
        for n in others:
            rate, gain = (
                bd_rate(curve(points, n), curve(points, ours)),
                bd_psnr(curve(points, n), curve(points, ours)),
            )
            line = f"{ours} vs {n}: BD-rate {num(rate, '+.1f')} %, BD-PSNR {num(gain, '+.2f')} dB"
            lines.append(f"- {line}" if full else line)
    return "\n".join(lines)


def _short(name: str) -> str:
    """A curve's name in a table header: published curves without their suffix."""
    return name.removesuffix(PUBLISHED) + ("*" if name.endswith(PUBLISHED) else "")


def run_info(w: weights_mod.Weights, data: str) -> dict:
    """What a results file records beside its points: data, weights, machine, versions, date."""
    import platform

    import PIL
    import torch

    from . import __version__

    return {
        "data": data,
        "weights": {"id": w.id, "name": w.name},
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
        f"on {torch.get_num_threads()} threads",
        "versions": {
            "cae-codec": __version__,
            "pillow": PIL.__version__,
            "python": platform.python_version(),
        },
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "peers": peer_settings(),
    }


def write_results(points: list[Point], out: Path, info: dict | None = None, shown=None) -> None:
    """results.json (the run's `info` and one object per point), results.csv with the points, and
    results.md with the full table of `shown` (the points and any published curves)."""
    rows = [p.to_dict() for p in points]
    (out / "results.json").write_text(json.dumps({**(info or {}), "points": rows}, indent=1) + "\n")
    title = f"# {info['data']}\n\n" if info and "data" in info else ""
    (out / "results.md").write_text(title + summary(shown or points, full=True) + "\n")
    with (out / "results.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[fl.name for fl in fields(Point)])
        writer.writeheader()
        writer.writerows(rows)


# cae-codec's curves, told apart even where they coincide (auto mostly is the range coder's): the
# default on top, thick; each coder alone thin beneath it, dashed or dotted.
OUR_STYLES = {
    "cae-codec/auto": {"color": "black", "linewidth": 2.8, "marker": "o", "markersize": 4, "zorder": 5},
    "cae-codec/range": {"color": "tab:red", "linewidth": 1.4, "linestyle": "--", "zorder": 4},
    "cae-codec/zstd": {"color": "tab:orange", "linewidth": 1.4, "linestyle": ":", "zorder": 4},
}


def plot_rd(points: list[Point], path: Path, title: str) -> bool:
    """PSNR against bpp, one curve per codec; False when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(9.5, 5), dpi=110)
    for name in dict.fromkeys(p.label for p in points):
        c = sorted(curve(points, name), key=lambda p: p.bpp)
        style = OUR_STYLES.get(name, {"linewidth": 1.2, "alpha": 0.8, "marker": "o", "markersize": 3})
        if name.endswith(PUBLISHED):
            style = {**style, "linestyle": "--"}
        ax.plot([p.bpp for p in c], [p.psnr for p in c], label=name, **style)
        if name == labels(points, ours=True)[0]:  # the levels (L1..) on the first cae-codec curve
            for p in c:
                ax.annotate(
                    f"L{p.level or p.quality:g}",
                    (p.bpp, p.psnr),
                    textcoords="offset points",
                    xytext=(-4, 6),
                    fontsize=7,
                    ha="right",
                )
    # Every curve whole: a log axis keeps both tiny and large rates readable.
    ax.set_xscale("log")
    ax.set(xlabel="bits per pixel (whole file)", ylabel="PSNR (dB, RGB)")
    ax.set_title(textwrap.fill(title, 80), fontsize=9)  # long data-set names would run off the figure
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))  # beside the curves, not on them
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def _closest(points: list[Point], name: str, bpp: float) -> Point | None:
    c = curve(points, name)
    return min(c, key=lambda p: abs(p.bpp - bpp)) if c else None


def grid(
    images: list[np.ndarray],
    points: list[Point],
    quality: int,
    path: Path,
    weights: str | None = None,
    crop: int = 192,
) -> None:
    """Originals, then cae-codec at `quality`, then JPEG and WebP at the closest mean bpp.

    Large images show their most detailed `crop`-pixel square at 1:1; small ones are enlarged to
    about that size.
    """
    scale = max(1, crop // max(max(im.shape[:2]) for im in images))
    on_scale = of_level(quality, weights_mod.load(weights).levels)
    cae = next(p for p in points if p.codec == "cae-codec" and p.level == quality)
    rows: list[tuple[str, Callable[[np.ndarray], bytes] | None, Callable[[bytes], np.ndarray] | None]] = [
        ("original", None, None),
        (
            f"cae-codec q{quality}, {cae.coder}",
            lambda im: codec.compress(im, on_scale, weights, cae.coder),
            lambda d: np.asarray(codec.decompress(d, weights).convert("RGB")),
        ),
    ]
    for name in ("jpeg", "webp"):
        match = _closest(points, name, cae.bpp)
        if match:
            rows.append(
                (f"{name} q{match.quality}", pillow_encoder(CLASSICS[name], match.quality), decode_pillow)
            )
    crops = [_crop_box(im, crop) for im in images]
    tile_w = max(b[2] - b[0] for b in crops) * scale
    tile_h = max(b[3] - b[1] for b in crops) * scale
    label_h, margin, left0 = 34, 6, 170
    font = ImageFont.load_default(size=13)
    sheet = Image.new(
        "RGB", (left0 + len(images) * (tile_w + margin), len(rows) * (tile_h + label_h + margin)), "white"
    )
    draw = ImageDraw.Draw(sheet)
    for r, (label, encode, decode) in enumerate(rows):
        top = r * (tile_h + label_h + margin)
        draw.text((4, top + tile_h // 2), label, fill="black", font=font)
        for i, (image, box) in enumerate(zip(images, crops, strict=True)):
            left = left0 + i * (tile_w + margin)
            shown, note = image, ""
            if encode and decode:
                data = encode(image)
                shown = decode(data)
                note = (
                    f"{metrics.bpp(len(data), image.shape[1], image.shape[0]):.2f} bpp\n"
                    f"{metrics.psnr(image, shown):.1f} dB"
                )
            tile = Image.fromarray(shown).crop(box)
            sheet.paste(tile.resize((tile.width * scale, tile.height * scale), Image.NEAREST), (left, top))
            draw.multiline_text((left, top + tile_h + 1), note, fill="black", font=font, spacing=1)
    sheet.save(path)


def _crop_box(image: np.ndarray, side: int) -> tuple[int, int, int, int]:
    """The crop shown for a large image, at 1:1: of the windows on a grid of steps of side/4, the one
    with the most detail (mean absolute gradient), so it shows texture rather than a blurred sky.
    The whole image is still what gets measured."""
    h, w = image.shape[:2]
    cw, ch = min(w, side), min(h, side)
    grey = image.astype(np.float32).mean(axis=2) if image.ndim == 3 else image.astype(np.float32)
    detail = np.zeros_like(grey)
    detail[:, 1:] += np.abs(np.diff(grey, axis=1))
    detail[1:, :] += np.abs(np.diff(grey, axis=0))
    sums = detail.cumsum(0).cumsum(1)  # summed-area table: any window's detail in O(1)
    sums = np.pad(sums, ((1, 0), (1, 0)))
    step = max(1, side // 4)
    best, box = -1.0, (0, 0)
    for top in range(0, h - ch + 1, step):
        for left in range(0, w - cw + 1, step):
            total = sums[top + ch, left + cw] - sums[top, left + cw] - sums[top + ch, left] + sums[top, left]
            if total > best:
                best, box = total, (left, top)
    left, top = box
    return left, top, left + cw, top + ch
