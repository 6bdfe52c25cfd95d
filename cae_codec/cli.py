"""The command line: parses options, calls the library, reports results. No codec logic here."""

from __future__ import annotations

import io
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import click
import numpy as np
from PIL import Image

from . import benchmark, codec, datasets, metrics
from . import train as train_mod
from . import weights as weights_mod
from .container import FormatError
from .datasets import DATA_DIR_ENV, DataError
from .files import (
    COMPRESSED_SUFFIX,
    DECODED_SUFFIX,
    OutputExistsError,
    check_free,
    output_format,
    plan_outputs,
    write_atomic,
)

USER_ERRORS = (
    OSError,
    ValueError,
    FormatError,
    weights_mod.WeightsError,
    DataError,
    Image.DecompressionBombError,
)

WEIGHTS_OPTION = click.option(
    "--weights", type=click.Path(dir_okay=False), help="Weight file to use instead of the shipped one."
)
MAX_PIXELS_OPTION = click.option(
    "--max-pixels",
    default=codec.DEFAULT_MAX_PIXELS,
    show_default=True,
    type=click.IntRange(1),
    help="Refuse images with more pixels than this.",
)
FORCE_OPTION = click.option(
    "-f",
    "--force",
    is_flag=True,
    help="Replace an existing output: a file of cae-codec's own naming (x.cae, x.decoded.png) or the "
    "file -o names. Inputs are never replaced.",
)
OUTPUT_OPTION = click.option(
    "-o",
    "--output",
    # A string, not a Path: a trailing slash says "folder" and Path would drop it.
    type=click.Path(),
    help="Output file (one input), or folder: one that exists or a name ending in / (created if its "
    "parent exists).",
)


def _describe(e: Exception) -> str:
    if isinstance(e, OSError) and e.strerror:
        return e.strerror[0].lower() + e.strerror[1:]
    return str(e) or type(e).__name__


def _run_batch(
    inputs: tuple[Path, ...], suffix: str, output: str | None, work: Callable[[Path, Path, bool], str]
) -> None:
    """Apply `work(source, target, named)` to each input; one failure does not stop the others."""
    try:
        plan = plan_outputs(list(inputs), suffix, output)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    if plan.folder is not None:
        plan.folder.mkdir(exist_ok=True)
    failed = 0
    for source, target in zip(inputs, plan.targets, strict=True):
        try:
            click.echo(work(source, target, plan.named))
        except (*USER_ERRORS, OutputExistsError) as e:
            failed += 1
            click.echo(f"cae-codec: {source}: {_describe(e)}", err=True)
    if failed:
        if len(inputs) > 1:
            click.echo(f"cae-codec: {failed} of {len(inputs)} files failed", err=True)
        raise SystemExit(1)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="cae-codec")
def main() -> None:
    """cae-codec: a learned image codec that writes real .cae files.

    \b
      cae-codec compress photo.png          writes photo.cae
      cae-codec decompress photo.cae        writes photo.decoded.png (never photo.png)
      cae-codec info photo.cae              shows what a .cae file holds
    """


@main.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@OUTPUT_OPTION
@click.option(
    "-q",
    "--quality",
    type=int,
    help="1 (fewest bits) to 8 (best pictures) with the shipped weights; default 6.",
)
@WEIGHTS_OPTION
@FORCE_OPTION
@MAX_PIXELS_OPTION
@click.option(
    "--coder",
    type=click.Choice(["zstd", "range"]),
    default="zstd",
    show_default=True,
    help="Entropy coder: zstd, or the learned range coder (about a quarter fewer bytes).",
)
@click.option("--psnr", is_flag=True, help="Also decode the result and print its PSNR against the input.")
def compress(inputs, output, quality, weights, force, max_pixels, coder, psnr) -> None:
    """Compress images (PNG, JPEG, BMP, TIFF, WebP, ...) to .cae files.

    Each INPUT is written beside itself with the suffix .cae unless -o says otherwise.

    \b
    Modes: RGB and L (grayscale) are kept; RGBA keeps its alpha plane losslessly.
    Other modes are converted: 1, I, I;16, F -> L; LA, PA -> RGBA; P -> RGBA if it
    has transparency, else RGB; CMYK, YCbCr, LAB, HSV -> RGB. 16-bit images lose
    their low 8 bits. EXIF orientation is applied; of an animation, only the first
    frame is kept.
    """
    try:
        w = weights_mod.load(weights)
    except weights_mod.WeightsError as e:
        raise click.ClickException(str(e)) from None

    def work(source: Path, target: Path, named: bool) -> str:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", codec.FrameWarning)
            image = codec.read_image(source, max_pixels)
        for warning in caught:
            click.echo(f"cae-codec: warning: {source}: {warning.message}", err=True)
        start = time.perf_counter()
        data = codec.compress(image, quality, weights=w.path, coder=coder, max_pixels=max_pixels)
        seconds = time.perf_counter() - start
        write_atomic(target, data, source, force, named)
        line = (
            f"{source} -> {target}: {len(data)} bytes, "
            f"{metrics.bpp(len(data), image.width, image.height):.3f} bpp, {seconds * 1000:.0f} ms"
        )
        if psnr:
            rgb, _, _ = codec.split_image(image)
            decoded, _, _ = codec.split_image(codec.decompress(data, weights=w.path, max_pixels=max_pixels))
            line += f", PSNR {metrics.psnr(rgb, decoded):.2f} dB"
        return line

    _run_batch(inputs, COMPRESSED_SUFFIX, output, work)


@main.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@OUTPUT_OPTION
@WEIGHTS_OPTION
@FORCE_OPTION
@MAX_PIXELS_OPTION
def decompress(inputs, output, weights, force, max_pixels) -> None:
    """Decompress .cae files to PNG (or the format -o's suffix names).

    photo.cae becomes photo.decoded.png: a lossy decode never takes a name the original could have
    had. The image comes back with its original width, height and mode (L, RGB or RGBA).

    \b
    -o suffixes: .png .tif .tiff .bmp .webp (lossless), .jpg .jpeg (compressed
    again, quality 95, with a warning). Others are refused.
    """

    def work(source: Path, target: Path, named: bool) -> str:
        fmt = output_format(target)
        check_free(target, source, force, named)
        start = time.perf_counter()
        image = codec.decompress(source.read_bytes(), weights=weights, max_pixels=max_pixels)
        seconds = time.perf_counter() - start
        if image.mode == "RGBA" and not fmt.alpha:
            raise ValueError(f"{target.suffix} cannot hold the alpha plane; use .png")
        if fmt.lossy:
            click.echo(
                f"cae-codec: warning: {target}: {fmt.name} compresses the decode again, losing more", err=True
            )
        buffer = io.BytesIO()
        image.save(buffer, format=fmt.name, **fmt.options)
        write_atomic(target, buffer.getvalue(), source, force, named)
        return f"{source} -> {target}: {image.width}x{image.height} {image.mode}, {seconds * 1000:.0f} ms"

    _run_batch(inputs, DECODED_SUFFIX, output, work)


@main.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
def info(inputs) -> None:
    """Show the header of .cae files without decoding them."""
    failed = False
    for source in inputs:
        try:
            data = source.read_bytes()
            h = codec.read_header(data)
        except (OSError, FormatError) as e:
            failed = True
            click.echo(f"cae-codec: {source}: {_describe(e)}", err=True)
            continue
        bpp = metrics.bpp(len(data), h.width, h.height)
        click.echo(
            f"{source}: {h.width}x{h.height} {h.mode}, quality {h.quality}, coder {h.coder}, "
            f"weights id {h.weights_id}, {len(data)} bytes ({bpp:.3f} bpp)"
        )
    if failed:
        raise SystemExit(1)


def _int_list(value: str | None, option: str) -> list[int] | None:
    try:
        return [int(v) for v in value.split(",")] if value else None
    except ValueError:
        raise click.BadParameter("must be integers separated by commas", param_hint=option) from None


def _bench_images(dataset: str, data_dir: str | None, limit: int | None) -> list[np.ndarray]:
    if dataset == "cifar10":
        return list(datasets.load_cifar10("test", data_dir)[:limit])
    return datasets.load_folder(dataset, limit)


@main.command()
@click.argument("dataset")
@click.option(
    "--data-dir",
    type=click.Path(),
    envvar=DATA_DIR_ENV,
    help=f"CIFAR-10 archive or folder (default: ${DATA_DIR_ENV}, else download to the cache).",
)
@click.option("--limit", type=click.IntRange(1), help="Use only the first N images.")
@click.option("-q", "--quality", "qualities", help="cae-codec levels to measure, e.g. 1,3,5 (default: all).")
@click.option(
    "--codecs",
    default=",".join(benchmark.CLASSICS),
    show_default=True,
    help="Classical codecs to compare with (those Pillow lacks are skipped).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for results.json, results.csv, rd.png, grid.png (default: a new bench-* folder).",
)
@WEIGHTS_OPTION
def bench(dataset, data_dir, limit, qualities, codecs, out, weights) -> None:
    """Measure cae-codec against JPEG, WebP, AVIF and JPEG 2000.

    DATASET is `cifar10` (its 10,000-row test batch, or the rows your copy has) or a folder of images
    (write ./cifar10 for a folder of that name). bpp counts whole files; jpeg-payload counts JPEG's
    scan data alone. PSNR, MSE and SSIM are on 8-bit RGB; SSIM is the mean over R, G and B.
    """
    names = [n.strip() for n in codecs.split(",") if n.strip()]
    unknown = [n for n in names if n not in benchmark.CLASSICS]
    if unknown:
        raise click.BadParameter(
            f"unknown {', '.join(unknown)}; choose from {', '.join(benchmark.CLASSICS)}",
            param_hint="--codecs",
        )
    out = out or Path(f"bench-{Path(dataset).name or 'images'}-{time.strftime('%Y%m%d-%H%M%S')}")
    if out.exists() and any(out.iterdir()):
        raise click.ClickException(f"{out} exists and is not empty; choose another --out")
    try:
        w = weights_mod.load(weights)
        images = _bench_images(dataset, data_dir, limit)
    except USER_ERRORS as e:
        raise click.ClickException(_describe(e)) from None
    levels = _int_list(qualities, "--quality") or list(range(1, w.levels + 1))
    for skipped in [n for n in names if not benchmark.available(n)]:
        click.echo(f"note: {skipped} skipped: this Pillow cannot write it", err=True)
    names = [n for n in names if benchmark.available(n)]
    total = len(images) * (
        len(levels) * len(benchmark.CAE_CODERS) + sum(len(benchmark.CLASSICS[n].qualities) for n in names)
    )
    with click.progressbar(length=total, label="measuring", file=sys.stderr) as bar:
        try:
            points = benchmark.measure_cae(images, levels, str(w.path), tick=lambda: bar.update(1))
        except ValueError as e:
            raise click.ClickException(str(e)) from None
        for name in names:
            points += benchmark.measure_classic(images, name, tick=lambda: bar.update(1))
    out.mkdir(parents=True, exist_ok=True)
    benchmark.write_results(points, out)
    click.echo(benchmark.summary(points))
    grid_quality = w.default_quality if w.default_quality in levels else levels[len(levels) // 2]
    benchmark.grid(images[:8], points, grid_quality, out / "grid.png", str(w.path))
    if not benchmark.plot_rd(points, out / "rd.png", f"{dataset}, {len(images)} images"):
        click.echo("note: rd.png needs matplotlib: pip install 'cae-codec[plot]'", err=True)
    click.echo(
        f"wrote {out}/results.json, results.csv, grid.png" + (", rd.png" if (out / "rd.png").exists() else "")
    )


@main.command()
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Weight file to write when training ends.",
)
@click.option(
    "--data-dir",
    type=click.Path(),
    envvar=DATA_DIR_ENV,
    help=f"CIFAR-10 archive or folder (default: ${DATA_DIR_ENV}, else download to the cache).",
)
@click.option("--steps", default=20000, show_default=True, help="Optimizer steps in all.")
@click.option("--batch-size", default=64, show_default=True)
@click.option("--lr", default=3e-4, show_default=True, help="Peak learning rate (cosine decay).")
@click.option("--seed", default=0, show_default=True)
@click.option(
    "--lambdas",
    default=",".join(map(str, train_mod.DEFAULT_LAMBDAS)),
    show_default=True,
    help="One lambda per quality level, low to high (loss = lambda*255^2*MSE + bpp).",
)
@click.option("--channels", "N", default=128, show_default=True, help="Hidden channels N.")
@click.option("--latent-channels", "M", default=64, show_default=True, help="Latent channels M.")
@click.option(
    "--hyper-channels",
    "hyper_N",
    default=0,
    show_default=True,
    help="Hidden channels of a mean-scale hyperprior; 0 trains a factorized prior.",
)
@click.option(
    "--hyper-latent-channels",
    "hyper_M",
    default=48,
    show_default=True,
    help="Channels of the hyper-latent z.",
)
@click.option(
    "--val-rows",
    default=256,
    show_default=True,
    help="Training rows held out for validation (from data_batch_5).",
)
@click.option("--eval-every", default=500, show_default=True, help="Steps between validation and checkpoint.")
@click.option(
    "--checkpoint",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Checkpoint to resume from and save to.",
)
@click.option(
    "--init-from",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Start from a checkpoint's or weight file's network (the tensors that fit), with a fresh "
    "optimizer and schedule.",
)
@click.option(
    "--first-rows",
    type=click.IntRange(1, 10000),
    help="Train only on the first N rows of each training batch (in ../shared/data/cifar10 the "
    "first 1,017 are the exact, never-JPEG-compressed images).",
)
@click.option(
    "--first-rows-share",
    type=click.FloatRange(0, 1),
    default=1.0,
    show_default=True,
    help="With --first-rows: the share of each batch drawn from those rows; the rest come from all rows.",
)
@click.option(
    "--log",
    "log_csv",
    type=click.Path(dir_okay=False, path_type=Path),
    help="CSV log of training and validation metrics.",
)
@click.option("--name", help="Name recorded in the weights (default: the output file's stem).")
@click.option(
    "--default-quality",
    type=int,
    help="Quality used when -q is not given (default: 3/4 of the way up, 6 of 8).",
)
@click.option("--id", "weights_id", type=int, hidden=True, help="Registry id (maintainers only).")
def train(**options) -> None:
    """Train a model on CIFAR-10's training batches and write a weight file.

    The test batch is never read. Resume an interrupted run by giving the same --checkpoint.
    """
    try:
        options["lambdas"] = tuple(float(v) for v in options["lambdas"].split(","))
    except ValueError:
        raise click.BadParameter("must be numbers separated by commas", param_hint="--lambdas") from None
    cfg = train_mod.TrainConfig(**options)
    bar = click.progressbar(
        length=cfg.steps,
        label="training",
        file=sys.stderr,
        item_show_func=lambda p: p and f"loss {p.loss:.3f}",
    )
    with bar:

        def on_progress(p: train_mod.Progress) -> None:
            bar.update(p.step - bar.pos, p)

        try:
            sha = train_mod.train(cfg, on_progress)
        except USER_ERRORS as e:
            raise click.ClickException(_describe(e)) from None
    click.echo(f"wrote {cfg.out} (sha256 {sha})")
