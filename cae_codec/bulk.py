"""Files in, files out: the per-file steps that the command line runs and that Ray runs on many
workers (`--engine ray`). The command line codes many files through the batch API, so a file
among same-size small images may differ from Ray's (or a lone compress's) in a rare latent value,
as compress_many's files may (both decode alike), and a decode by up to one level per pixel.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import stat
import time
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO

from .config import AUTO, DEFAULT_MAX_PIXELS
from .container import read_limited, read_up_to
from .files import OutputFormat, output_format, write_atomic

RAY_EXTRA = "pip install 'cae-codec[ray]'"


@dataclass(frozen=True)
class Job:
    """What to do with each file: the options of `compress` or `decompress`."""

    kind: str  # "compress" or "decompress"
    quality: float | None = None  # 0-100
    weights: str | None = None
    coder: str = AUTO
    max_pixels: int = DEFAULT_MAX_PIXELS
    psnr: bool = False  # compress: also decode and measure PSNR against the input
    metadata: str = "all"  # compress: the kinds of metadata kept (metadata.kinds)
    target: tuple[str, float] | None = None  # compress: (targets.KINDS entry, value) instead of quality
    precision: str = "auto"  # g_a's and g_s's on large images (config.PRECISIONS)


def compress_image(source: Path | BinaryIO, job: Job, progress=None) -> tuple[bytes, dict, list[str]]:
    """One image file (a path or binary stream) to .cae bytes, with a record of the result and the
    warnings about what the file does not keep; `progress` as codec.compress's."""
    from . import codec

    image, notes = _read(source, job)
    start = time.perf_counter()
    reached = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", codec.InputWarning)  # _read has collected them
        if job.target is None:
            data = codec.compress(
                image,
                job.quality,
                job.weights,
                job.coder,
                job.max_pixels,
                metadata=job.metadata,
                precision=job.precision,
                progress=progress,
            )
        else:
            from . import targets

            target = targets.Target(*job.target)
            data, reached = targets.compress_to(
                image, target, job.weights, job.coder, job.max_pixels, job.metadata, job.precision
            )
    record = _compressed(image, data, time.perf_counter() - start, job)
    if reached is not None:
        record["target"] = {"kind": job.target[0], "value": job.target[1], "tries": reached.tries}
        for key, value in (("psnr", reached.psnr), ("ms_ssim", reached.ms_ssim)):
            if not math.isnan(value):
                record[key] = round(value, 4)
    return data, record, notes


def compress_images(sources: list[Path], job: Job) -> list[tuple[bytes, dict, list[str]] | Exception]:
    """Many image files through the batch API (same-size small images share the network's passes):
    for each, what compress_image gives, or the exception that stopped it. A batch's time is shared
    out among its images by their estimated cost (share_time)."""
    from . import codec

    if job.target is not None:  # each image searches its own quality
        return [_attempt(compress_image, source, job) for source in sources]
    results: list = [_attempt(_read, source, job) for source in sources]
    good = [i for i, r in enumerate(results) if not isinstance(r, Exception)]
    images = [results[i][0] for i in good]
    start = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", codec.InputWarning)  # _read has collected them
            files = codec.compress_many(
                images,
                job.quality,
                job.weights,
                job.coder,
                job.max_pixels,
                return_errors=True,
                metadata=job.metadata,
                precision=job.precision,
            )
    except Exception as e:  # noqa: BLE001 (what stops a whole batch, a bad quality say, is each file's)
        files = [e] * len(images)
    shares = share_time(time.perf_counter() - start, [image.width * image.height for image in images])
    for i, image, data, seconds in zip(good, images, files, shares, strict=True):
        results[i] = (
            data
            if isinstance(data, Exception)
            else _attempt(_finished, image, data, seconds, job, results[i][1])
        )
    return results


def _finished(
    image, data: bytes, seconds: float, job: Job, notes: list[str]
) -> tuple[bytes, dict, list[str]]:
    return data, _compressed(image, data, seconds, job), notes


def _read(source: Path | BinaryIO, job: Job):
    """An input image and the warnings about what its .cae file will not keep."""
    from . import codec

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", codec.InputWarning)
        image = codec.read_image(source, job.max_pixels)
        codec.warn_about_losses(image, job.metadata)
    return image, [str(w.message) for w in caught if issubclass(w.category, codec.InputWarning)]


def _compressed(image, data: bytes, seconds: float, job: Job) -> dict:
    """The record of one compressed image: size, bpp, time, header fields, and PSNR if asked."""
    from . import codec, metrics, quality
    from . import weights as weights_mod

    f = codec.unpack(data)
    header = f.header
    levels = weights_mod.load(job.weights, header.weights_id).levels
    record = {
        "bytes": len(data),
        "bpp": round(metrics.bpp(len(data), image.width, image.height), 4),
        "ms": round(seconds * 1000, 1),
        "quality": quality.of_header(header, levels),
        "level": header.position,
        "coder": header.coder,
        "weights_id": header.weights_id,
        "metadata": sorted(f.metadata),
    }
    if job.psnr:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", codec.InputWarning)  # _read has said them once
            rgb, _, _ = codec.split_image(image)
        decoded = codec.decompress(data, job.weights, job.max_pixels, job.precision)
        record["psnr"] = round(metrics.psnr(rgb, codec.split_image(decoded)[0]), 3)
    return record


def decompress_image(
    data: bytes, fmt: OutputFormat, job: Job, progress=None
) -> tuple[bytes, dict, list[str]]:
    """.cae bytes to an image file's bytes in `fmt`, with a record and warnings; `progress` as
    codec.decompress's."""
    from . import codec

    start = time.perf_counter()
    image = codec.decompress(data, job.weights, job.max_pixels, job.precision, progress)
    return _saved(image, fmt, time.perf_counter() - start)


def decompress_images(
    items: list[tuple[bytes, OutputFormat]], job: Job
) -> list[tuple[bytes, dict, list[str]] | Exception]:
    """Many .cae files through the batch API (same-size small images share g_s's passes): for each,
    what decompress_image gives, or the exception that stopped it."""
    from . import codec

    start = time.perf_counter()
    try:
        images = codec.decompress_many(
            [data for data, _ in items],
            job.weights,
            job.max_pixels,
            return_errors=True,
            precision=job.precision,
        )
    except Exception as e:  # noqa: BLE001 (what stops a whole batch is each file's)
        images = [e] * len(items)
    sizes = [0 if isinstance(image, Exception) else image.width * image.height for image in images]
    shares = share_time(time.perf_counter() - start, sizes)
    return [
        image if isinstance(image, Exception) else _attempt(_saved, image, fmt, seconds)
        for image, (_, fmt), seconds in zip(images, items, shares, strict=True)
    ]


def share_time(seconds: float, pixels: list[int]) -> list[float]:
    """A batch's time shared out among its images in proportion to their estimated cost, so a
    thumbnail coded beside photos is not reported as taking a photo's time."""
    costs = [SECONDS_PER_FILE + SECONDS_PER_PIXEL * n for n in pixels]
    total = sum(costs) or 1.0
    return [seconds * c / total for c in costs]


def _attempt(fn, *args):
    """fn(*args), or the exception it raised (returned: the caller tells a user's error from a bug)."""
    try:
        return fn(*args)
    except Exception as e:  # noqa: BLE001
        return e


def _saved(image, fmt: OutputFormat, seconds: float) -> tuple[bytes, dict, list[str]]:
    """A decoded image as a file's bytes in `fmt`, with its record and warnings."""
    if image.mode == "RGBA" and not fmt.alpha:
        raise ValueError(f"{fmt.name} cannot hold the alpha plane; use .png")
    from .metadata import INFO_KEYS, save_options

    notes = [f"{fmt.name} compresses the decode again, losing more"] if fmt.lossy else []
    kept, dropped = save_options(fmt.name, image)
    buffer = io.BytesIO()
    try:
        image.save(buffer, format=fmt.name, **fmt.options, **kept)
    except Exception as e:  # noqa: BLE001 (metadata never costs the picture: save it without)
        if not kept:
            raise
        buffer = io.BytesIO()
        image.save(buffer, format=fmt.name, **fmt.options)
        why = f"{fmt.name} could not write it ({describe(e)})"
        dropped.update({kind: why for kind in INFO_KEYS if image.info.get(INFO_KEYS[kind])})
    if dropped:
        notes.append(_left_out(fmt.name, dropped))
    record = {
        "width": image.width,
        "height": image.height,
        "mode": image.mode,
        "ms": round(seconds * 1000, 1),
    }
    return buffer.getvalue(), record, notes


def _left_out(fmt: str, dropped: dict[str, str]) -> str:
    """One line for the metadata an output leaves out: what, and why."""
    cannot = sorted(kind for kind, why in dropped.items() if why.endswith("cannot hold it"))
    parts = [f"{fmt} cannot hold its {' and '.join(cannot)} metadata"] if cannot else []
    parts += [
        f"its {kind} metadata left out: {why}" for kind, why in sorted(dropped.items()) if kind not in cannot
    ]
    return "; ".join(parts) + "; use .png to keep it"


def code(job: Job, source: Path | bytes, target: Path, progress=None) -> tuple[bytes, dict, list[str]]:
    """One input (a file, or its bytes) coded as the job says: the output's bytes (a decode in the
    format `target`'s suffix names), a record of the result, and warnings. `progress` is told of the
    steps of a large image (codec.Progress)."""
    if job.kind == "compress":
        return compress_image(io.BytesIO(source) if isinstance(source, bytes) else source, job, progress)
    data = source if isinstance(source, bytes) else read_cae(source)
    return decompress_image(data, output_format(target), job, progress)


def read_cae(source: Path) -> bytes:
    """A .cae file read once, in pieces: the header first, then no more than it allows (a FIFO or
    a process substitution works; a huge or endless file is refused without filling memory)."""
    with open(source, "rb") as f:
        status = os.fstat(f.fileno())
        return read_limited(f, status.st_size if stat.S_ISREG(status.st_mode) else None)


# An image file holds at most 8 bytes a pixel (16-bit RGBA, uncompressed) and some metadata.
IMAGE_BYTES_PER_PIXEL, IMAGE_SLACK = 8, 2**20


def read_image_stream(stream: BinaryIO, max_pixels: int) -> bytes:
    """An image file from a stream (standard input), refused once it is larger than any image
    within `max_pixels` can be."""
    limit = IMAGE_BYTES_PER_PIXEL * max_pixels + IMAGE_SLACK
    data = read_up_to(stream, limit + 1)
    if len(data) > limit:
        raise ValueError(f"input is larger than an image of {max_pixels:,} pixels can be ({limit:,} bytes)")
    if not data:
        raise ValueError("empty input")
    return data


def process_file(source: Path, target: Path, job: Job, force: bool, named: bool) -> dict:
    """One file end to end, as Ray's workers run it: read, code, write atomically. Never raises: a
    failure is the record's "error", an existing output (without `force`) is skipped."""
    record: dict = {"input": str(source), "output": str(target)}
    try:
        if target.exists() and not force:
            return {**record, "skipped": True, "reason": "the output exists"}
        data, result, notes = code(job, source, target)
        write_atomic(target, data, source, force, named)
        return {**record, **result, "warnings": notes}
    except Exception as e:  # noqa: BLE001  (a worker must report every failure, not die)
        return {**record, "error": describe(e)}


# One process's cost of a file on 2 cores, read, coded through the batch API and written: 1,000
# 32x32 PNGs took 1.6 ms each and the 24 Kodak photos 0.63 s each (1.6 us a pixel) past start-up.
SECONDS_PER_FILE, SECONDS_PER_PIXEL = 0.0005, 1.6e-6


def regular_files(sources: list[Path]) -> bool:
    """Whether every input is a regular file: only those may be opened to plan, or read by a worker
    process (a FIFO or <(...) can be read once, and only by this process)."""
    try:
        return all(stat.S_ISREG(os.stat(source).st_mode) for source in sources)
    except OSError:
        return False


def pixels_of(source: Path, kind: str) -> int:
    """An input's size in pixels from its header (0 if unknown); anything but a regular file is never
    opened (a FIFO would block, or be used up)."""
    from PIL import Image

    from .container import peek_size

    try:
        if not stat.S_ISREG(os.stat(source).st_mode):
            return 0
        if kind == "compress":
            with Image.open(source) as image:  # reads the header only
                return image.width * image.height
        with open(source, "rb") as f:
            width, height = peek_size(f.read(16))
        return width * height
    except Exception:  # noqa: BLE001 (the real attempt reports what is wrong with it)
        return 0


def work_estimate(pixels: list[int]) -> float:
    """Rough seconds that one process would take on files of these sizes (unknown ones count as
    small)."""
    return sum(SECONDS_PER_FILE + SECONDS_PER_PIXEL * n for n in pixels)


def describe(e: Exception) -> str:
    """An error as one short line: an OS error's reason in lower case, else the message."""
    if isinstance(e, OSError) and e.strerror:
        return e.strerror[0].lower() + e.strerror[1:]
    return str(e) or type(e).__name__


class _Worker:
    """A Ray actor: loads the weights once, then codes batches of files."""

    def __init__(self, job: dict, force: bool, named: bool) -> None:
        import torch

        torch.set_num_threads(1)  # one core per worker; Ray runs one worker per core
        self.job, self.force, self.named = Job(**job), force, named
        if self.job.weights is not None:
            from . import weights

            weights.load(self.job.weights)

    def __call__(self, batch: dict) -> dict:
        rows = [
            process_file(Path(s), Path(t), self.job, self.force, self.named)
            for s, t in zip(batch["source"], batch["target"], strict=True)
        ]
        # JSON strings: records differ in their keys, which Arrow's column types would not allow.
        return {"record": [json.dumps(r) for r in rows]}


def _quiet_ray() -> None:
    """Ray's own notes (execution plans, progress, deprecations) are not our report: errors only."""
    for name in list(logging.root.manager.loggerDict):
        if name == "ray" or name.startswith("ray."):
            logging.getLogger(name).setLevel(logging.ERROR)


def run_on_ray(
    pairs: list[tuple[Path, Path]],
    job: Job,
    force: bool = False,
    named: bool = False,
    address: str | None = None,
    workers: int | None = None,
    batch_size: int = 16,
    quiet: bool = True,
) -> Iterator[dict]:
    """Code (source, target) pairs with Ray Data on a pool of `workers` actors: a local Ray instance,
    or the cluster at `address`. Yields one record per file, in input order."""
    try:
        import ray
    except ImportError:
        raise ImportError(f"--engine ray needs Ray: {RAY_EXTRA}") from None
    import ray.data  # noqa: F401  (its loggers exist once it is imported)

    if quiet:
        _quiet_ray()
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=not quiet, configure_logging=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    if quiet:
        _quiet_ray()
    size = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
    items = [{"source": str(s), "target": str(t)} for s, t in pairs]
    with warnings.catch_warnings():
        if quiet:  # Ray's API changes are not the user's to see
            warnings.simplefilter("ignore", DeprecationWarning)
        results = ray.data.from_items(items).map_batches(
            _Worker,
            fn_constructor_kwargs={"job": asdict(job), "force": force, "named": named},
            batch_size=batch_size,
            compute=ray.data.ActorPoolStrategy(size=size),
            num_cpus=1,
            max_restarts=0,  # a worker that dies fails its files; a restartable one warns at length
            batch_format="numpy",
        )
    by_input = {}
    for row in results.iter_rows():
        record = json.loads(row["record"])
        by_input[(record["input"], record["output"])] = record
    for source, target in pairs:
        yield by_input[(str(source), str(target))]
