"""A page to compare by eye: one photo coded by each codec at the same file size, in one HTML file
that needs no server and no network (the decodes are embedded as PNG)."""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from . import codec, metrics, peers, quality, targets
from . import weights as weights_mod
from .benchmark import decode_pillow, pillow_encoder

COLOURS = {"cae-codec": "#d62728", "webp": "#1f77b4", "avif": "#2ca02c", "jpeg": "#7f7f7f"}
COLOURS |= {"jpegxl": "#9467bd", "heif": "#ff7f0e"}


@dataclass
class Entry:
    """One codec's file of the photo and how it measures."""

    name: str
    setting: str  # the quality that fits, in the codec's own terms
    bytes: int
    bpp: float
    psnr: float
    ms_ssim: float
    decoded: np.ndarray


def _entry(name: str, setting: str, size: int, image: np.ndarray, decoded: np.ndarray) -> Entry:
    h, w = image.shape[:2]
    return Entry(
        name, setting, size, metrics.bpp(size, w, h), metrics.psnr(image, decoded),
        metrics.ms_ssim(image, decoded), decoded,
    )  # fmt: skip


def fit_peer(
    image: np.ndarray, name: str, size: int, curve: list[tuple[float, float]] | None = None
) -> Entry | None:
    """A peer's file at the highest quality (0-100) that fits `size` bytes, metadata stripped; None
    when even its lowest does not. Every file tried adds its (bpp, PSNR) to `curve`."""
    spec = peers.CLASSICS[name]
    low, high = (1 if name == "jpeg" else 0), (95 if name in ("jpegxl", "heif") else 100)
    fits: dict[int, bytes] = {}
    h, w = image.shape[:2]

    def encode(q: int) -> bytes:
        if q not in fits:
            fits[q] = pillow_encoder(spec, q)(image)
            if curve is not None:
                psnr = metrics.psnr(image, decode_pillow(fits[q]))
                curve.append((metrics.bpp(len(fits[q]), w, h), psnr))
        return fits[q]

    best = targets.highest(lambda q: len(encode(q)) <= size, low, high)
    if best is None:
        return None
    data = encode(best)
    return _entry(name, f"quality {best}", len(data), image, decode_pillow(data))


def fit_cae(image: np.ndarray, size: int, weights=None) -> Entry | None:
    """cae-codec's file at the highest quality that fits `size` bytes (targets.compress_to)."""
    try:
        data, reached = targets.compress_to(image, targets.Target("size", size), weights)
    except targets.TargetError:
        return None
    decoded = np.asarray(codec.decompress(data, weights).convert("RGB"))
    return _entry("cae-codec", f"quality {reached.quality:g}", len(data), image, decoded)


def cae_curve(image: np.ndarray, weights=None) -> list[tuple[float, float]]:
    """(bpp, PSNR) of this photo at cae-codec's trained levels (qualities 0, 14, ... 100)."""
    h, w = image.shape[:2]
    points = []
    for q in quality.anchors(weights_mod.load(weights, weights_mod.default_id(w, h)).levels):
        data = codec.compress(image, q, weights)
        decoded = np.asarray(codec.decompress(data, weights).convert("RGB"))
        points.append((metrics.bpp(len(data), w, h), metrics.psnr(image, decoded)))
    return points


def build(
    image: Image.Image,
    size: int | None = None,
    names: tuple[str, ...] = peers.COMPARE_PEERS,
    weights=None,
    progress: Callable[[str], None] | None = None,
) -> tuple[str, list[Entry], list[str]]:
    """The page for a photo at `size` bytes (default: cae-codec's file at its default quality): its
    HTML, the entries on it, and the codecs that could not come down to that size. `progress` is
    told each codec's name as its turn comes."""
    rgb = np.asarray(image.convert("RGB"))
    size = size or len(codec.compress(rgb, weights=weights))
    usable = [n for n in names if peers.available(n)]
    points = {"cae-codec": cae_curve(rgb, weights)}
    entries, missed = [], []
    for name in ("cae-codec", *usable):
        if progress:
            progress(name)
        if name == "cae-codec":
            entry = fit_cae(rgb, size, weights)
        else:
            entry = fit_peer(rgb, name, size, points.setdefault(name, []))
            points[name].sort()
        (entries.append(entry) if entry else missed.append(name))
    if not entries:
        raise ValueError(f"no codec can come down to {size:,} bytes")
    most = 2.5 * metrics.bpp(size, rgb.shape[1], rgb.shape[0])  # the plot shows the rates around the size
    points = {name: [p for p in curve if p[0] <= most] for name, curve in points.items()}
    return render(rgb, size, entries, missed, points), entries, missed


def _lossless(pixels: np.ndarray) -> str:
    """A data URI of the pixels, exactly: lossless WebP, about two thirds of a PNG's size (0.5 MB for
    a 768x512 photo, in 0.2 s)."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="WEBP", lossless=True, quality=50, method=4)
    return "data:image/webp;base64," + base64.b64encode(buffer.getvalue()).decode()


def _svg(tag: str, text: str = "", **attrs) -> str:
    """One SVG element; attribute names with _ for -."""
    fields = " ".join(f'{k.replace("_", "-")}="{v}"' for k, v in attrs.items())
    return f"<{tag} {fields}>{html.escape(text)}</{tag}>"


def _plot(points: dict[str, list[tuple[float, float]]], entries: list[Entry]) -> str:
    """An inline SVG of PSNR against bpp, the equal-size files ringed."""
    xs = [x for curve in points.values() for x, _ in curve] + [e.bpp for e in entries]
    ys = [y for curve in points.values() for _, y in curve] + [e.psnr for e in entries]
    x_top, y_low, y_top = max(xs) * 1.05, float(np.floor(min(ys)) - 1), float(np.ceil(max(ys)) + 1)
    width, height, left, bottom, top = 560, 340, 50, 40, 10

    def px(x: float) -> float:
        return left + x / x_top * (width - left - 10)

    def py(y: float) -> float:
        return height - bottom - (y - y_low) / (y_top - y_low) * (height - bottom - top)

    parts = [
        _svg(
            "rect",
            x=left,
            y=top,
            width=width - left - 10,
            height=height - bottom - top,
            fill="none",
            stroke="#999",
        )
    ]
    for y in np.arange(y_low, y_top + 0.01, max(1, round((y_top - y_low) / 6))):
        parts.append(_svg("text", f"{y:.0f}", x=left - 6, y=f"{py(y):.0f}", text_anchor="end", font_size=11))
    for x in np.linspace(0, x_top, 6):
        parts.append(
            _svg(
                "text",
                f"{x:.2f}",
                x=f"{px(x):.0f}",
                y=height - bottom + 16,
                text_anchor="middle",
                font_size=11,
            )
        )
    parts.append(
        _svg(
            "text", "bits per pixel", x=(width + left) // 2, y=height - 6, text_anchor="middle", font_size=12
        )
    )
    middle = (height - bottom) // 2
    parts.append(
        _svg(
            "text",
            "PSNR (dB)",
            x=14,
            y=middle,
            transform=f"rotate(-90 14 {middle})",
            text_anchor="middle",
            font_size=12,
        )
    )
    for i, (name, curve) in enumerate(points.items()):
        colour = COLOURS.get(name, "#000")
        line = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in curve)
        thick = 2.5 if name == "cae-codec" else 1.5
        parts.append(_svg("polyline", points=line, fill="none", stroke=colour, stroke_width=thick))
        parts.append(_svg("text", name, x=left + 10, y=top + 16 + 15 * i, font_size=12, fill=colour))
    for e in entries:
        ring = {"r": 5, "fill": "none", "stroke": COLOURS.get(e.name, "#000"), "stroke_width": 2}
        parts.append(_svg("circle", cx=f"{px(e.bpp):.1f}", cy=f"{py(e.psnr):.1f}", **ring))
    return (
        f'<svg id="rd" width="{width}" height="{height}" viewBox="0 0 {width} {height}">'
        + "".join(parts)
        + "</svg>"
    )


def render(
    rgb: np.ndarray, size: int, entries: list[Entry], missed: list[str], points: dict[str, list]
) -> str:
    """The self-contained page: a swipe view of any two, zoom 1:1 and 2:1, the figures, the plot."""
    h, w = rgb.shape[:2]
    sources = {"original": _lossless(rgb)} | {e.name: _lossless(e.decoded) for e in entries}
    rows = "".join(
        f"<tr><td>{html.escape(e.name)}</td><td>{html.escape(e.setting)}</td><td>{e.bytes:,}</td>"
        f"<td>{e.bpp:.3f}</td><td>{e.psnr:.2f}</td><td>{e.ms_ssim:.4f}</td></tr>"
        for e in entries
    )
    note = f"<p>Could not come down to {size:,} bytes: {', '.join(missed)}.</p>" if missed else ""
    thumbs = "".join(
        f'<figure><img class="thumb" alt="{name}" data-name="{name}" width="{min(w, 160)}">'
        f"<figcaption>{name}</figcaption></figure>"
        for name in sources
    )
    options = "".join(f'<option value="{n}">{n}</option>' for n in sources)
    second = entries[0].name if entries else "original"
    return PAGE.format(
        title=f"cae-codec compare: {w}x{h} at {size:,} bytes", w=w, h=h, size=f"{size:,}",
        sources=json.dumps(sources), rows=rows, note=note, thumbs=thumbs, options=options,
        second=second, plot=_plot(points, entries),
    )  # fmt: skip


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: sans-serif; margin: 16px; color: #222; }}
#view {{ overflow: auto; max-width: 100%; max-height: 75vh; border: 1px solid #ccc; }}
#stage {{ position: relative; }}
#stage img {{ position: absolute; top: 0; left: 0; image-rendering: pixelated; max-width: none; }}
#clip {{ position: absolute; top: 0; left: 0; height: 100%; overflow: hidden; }}
#bar {{ position: absolute; top: 0; width: 2px; height: 100%; background: #fff; box-shadow: 0 0 2px #000; }}
.controls {{ margin: 8px 0; display: flex; gap: 12px; align-items: center; flex-wrap: wrap; }}
#slider {{ width: 320px; }}
table {{ border-collapse: collapse; margin: 8px 0; }}
td, th {{ border: 1px solid #ccc; padding: 3px 8px; text-align: right; }}
td:first-child, th:first-child {{ text-align: left; }}
figure {{ display: inline-block; margin: 4px; text-align: center; font-size: 12px; }}
.thumb {{ cursor: pointer; border: 1px solid #ccc; }}
</style></head><body>
<h1>{title}</h1>
<p>Each codec made the largest file it could within {size} bytes of this {w}x{h} image; the
pictures are their decodes, shown losslessly. Drag the slider to swipe between the left and right
choices.</p>{note}
<div class="controls">
<label>left <select id="left-choice">{options}</select></label>
<input id="slider" type="range" min="0" max="100" value="50" aria-label="swipe">
<label>right <select id="right-choice">{options}</select></label>
<button id="zoom-1" type="button">1:1</button><button id="zoom-2" type="button">2:1</button>
</div>
<div id="view"><div id="stage" style="width:{w}px;height:{h}px">
<img id="right" alt="right" width="{w}" height="{h}">
<div id="clip" style="width:50%"><img id="left" alt="left" width="{w}" height="{h}"></div>
<div id="bar" style="left:50%"></div>
</div></div>
<table><tr><th>codec</th><th>setting</th><th>bytes</th><th>bpp</th><th>PSNR (dB)</th><th>MS-SSIM</th></tr>
{rows}</table>
<div>{thumbs}</div>
<h2>This photo's rate and distortion</h2>
{plot}
<p>cae-codec at its trained levels; the others at the qualities their search for the size tried;
rings: the files above.</p>
<script>
const sources = {sources};
const W = {w}, H = {h};
const left = document.getElementById("left"), right = document.getElementById("right");
const leftChoice = document.getElementById("left-choice");
const rightChoice = document.getElementById("right-choice");
const slider = document.getElementById("slider"), clip = document.getElementById("clip");
const bar = document.getElementById("bar"), stage = document.getElementById("stage");
function show() {{
  left.src = sources[leftChoice.value];
  right.src = sources[rightChoice.value];
}}
function swipe() {{
  clip.style.width = slider.value + "%";
  bar.style.left = slider.value + "%";
}}
function zoom(z) {{
  stage.style.width = W * z + "px"; stage.style.height = H * z + "px";
  for (const img of [left, right]) {{ img.width = W * z; img.height = H * z; }}
}}
leftChoice.value = "original"; rightChoice.value = "{second}";
leftChoice.onchange = rightChoice.onchange = show;
slider.oninput = swipe;
document.getElementById("zoom-1").onclick = () => zoom(1);
document.getElementById("zoom-2").onclick = () => zoom(2);
for (const t of document.querySelectorAll(".thumb")) {{
  t.src = sources[t.dataset.name];  // each picture is in the page once, in sources
  t.onclick = () => {{ rightChoice.value = t.dataset.name; show(); }};
}}
show(); swipe();
</script>
</body></html>
"""
