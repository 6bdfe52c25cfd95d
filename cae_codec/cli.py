"""The command line: parses options, calls the library, reports results. No codec logic here.

Modules that load torch (codec, weights, benchmark, train) are imported inside the commands that
need them, so `cae-codec --help` and usage errors come back fast.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import errno
import functools
import io
import json
import math
import multiprocessing
import os
import platform
import signal
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import click

from . import bulk, config
from .config import AUTO as AUTO_CODER
from .config import DATA_DIR_ENV, PRIORS
from .container import FormatError, read_limited
from .files import (
    COMPRESSED_SUFFIX,
    DECODED_SUFFIX,
    STDIO,
    OutputExistsError,
    check_free,
    output_format,
    plan_outputs,
    write_all,
    write_atomic,
)
from .peers import CLASSICS, COMPARE_PEERS, DEFAULT_PEERS, PEERS_EXTRA


class Finite(click.FloatRange):
    """A float option that also refuses NaN and the infinities (click's ranges let NaN through, and
    it would fail only after PyTorch had loaded)."""

    def convert(self, value, param, ctx):
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return super().convert(number, param, ctx)


INT_MAX = 2**31 - 1  # counts beyond this would overflow where they reach C (threads, batch sizes)


class Count(click.IntRange):
    """A whole number from `low` up to INT_MAX (shown with thousands separators)."""

    def __init__(self, low: int = 1) -> None:
        super().__init__(low, INT_MAX)

    def _describe_range(self) -> str:
        return f"{self.min}<=x<={self.max:,}"


def _user_errors() -> tuple[type[Exception], ...]:
    """Exceptions a user can cause: each ends in one line on stderr and a non-zero exit."""
    from PIL import Image

    from .datasets import DataError
    from .weights import WeightsError

    return (OSError, ValueError, FormatError, WeightsError, DataError, Image.DecompressionBombError)


WEIGHTS_OPTION = click.option(
    "--weights",
    type=click.Path(dir_okay=False),
    help="Weight file, or the name of shipped weights (cae-codec info --list-weights lists them).",
)
MAX_PIXELS_OPTION = click.option(
    "--max-pixels",
    default=config.DEFAULT_MAX_PIXELS,
    show_default=True,
    type=Count(1),
    help="Refuse images with more pixels than this, padding included (the networks run on sides "
    "padded to a multiple of 16, or 64).",
)
PRECISION_OPTION = click.option(
    "--precision",
    type=click.Choice(config.PRECISIONS),
    default="auto",
    show_default=True,
    help="How the networks compute on images over 256x256: auto uses bfloat16 where the CPU has "
    "bf16 units (AMX, AVX512-BF16; about 3x faster), float32 elsewhere; fp32 forces float32. Files "
    "decode on any machine either way.",
)
SKIP_OPTION = click.option(
    "--skip-existing",
    is_flag=True,
    help="Leave outputs that exist alone and go on with the rest, exiting 0: a rerun resumes where "
    'a batch stopped (--json marks them "skipped": true).',
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
    "parent exists); - writes to standard output.",
)
ENGINE_OPTION = click.option(
    "--engine",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help=f"ray: code the files on a Ray cluster or a local Ray instance, a worker per core, each "
    f"loading the weights once; outputs that exist are skipped, so a rerun resumes ({bulk.RAY_EXTRA}).",
)
VERBOSE_OPTION = click.option(
    "-v", "--verbose", is_flag=True, help="With --engine ray: let Ray's own log lines through."
)
ADDRESS_OPTION = click.option(
    "--address", help="With --engine ray: the cluster to join (default: start one here)."
)
# The local engine shares the files out to a worker per core when one process would take longer
# than this (bulk.work_estimate). Each worker first spends about 2 s importing PyTorch, and one
# process already keeps 2 cores busy with its threads, so workers only pay off on long runs: on 2
# cores 1,000 32x32 PNGs took 3.5 s in one process and 4.9 s in two, the 24 Kodak photos 17.1 s and
# 16.3 s.
PARALLEL_AFTER_S = 8.0
PROGRESS_FROM = 16  # files from which a run on a terminal may show a progress bar
WORKERS_OPTION = click.option(
    "--workers",
    type=Count(1),
    help="Worker processes, one core each (default: one per CPU when the files are estimated to "
    f"take one process over {PARALLEL_AFTER_S:g} s, else 1; with --engine ray, one per CPU).",
)


def _ray(engine: str, job: bulk.Job, force: bool, address: str | None, workers: int | None, verbose: bool):
    """For --engine ray, what runs the files there; None for local."""
    if engine != "ray":
        if address:
            raise click.UsageError("--address needs --engine ray")
        return None
    try:
        import ray  # noqa: F401
    except ImportError:
        raise click.UsageError(f"--engine ray needs Ray: {bulk.RAY_EXTRA}") from None
    return lambda pairs, named: bulk.run_on_ray(pairs, job, force, named, address, workers, quiet=not verbose)


JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Report each file as one JSON object.")
QUIET_OPTION = click.option("--quiet", is_flag=True, help="Report nothing but errors.")


@dataclass
class Report:
    """How each file is reported: a line (default), a JSON object (--json) or nothing (--quiet)."""

    json: bool = False
    quiet: bool = False
    to_stderr: bool = False  # standard output carries the image

    broken: bool = False  # a report could not be written (standard output full or closed)

    def done(self, record: dict) -> None:
        if self.json:
            self._out(_json(record))
        elif not self.quiet:
            self._out(_line(record), err=self.to_stderr)

    def failed(self, name: str, message: str, quietly: bool = False, json_too: bool = True) -> None:
        """A file's failure: a line on stderr (unless `quietly`: said in a summary instead) and,
        with --json, its object on stdout."""
        if not quietly:
            click.echo(f"cae-codec: {_shown(name)}: {_shown(message)}", err=True)
        if self.json and json_too:
            self._out(_json({"input": name, "error": message}))

    def _out(self, line: str, err: bool = False) -> None:
        """A report line; a report channel that fails (a full disk, a closed descriptor) is said once
        on stderr, and the run goes on and ends with status 1. A reader that left ends the run."""
        if self.broken and not err:
            return
        stream = sys.stderr if err else sys.stdout
        try:
            if stream is None:
                raise OSError(errno.EBADF, "it is closed")
            stream.write(line + "\n")
            stream.flush()
        except BrokenPipeError:
            raise ReaderLeftError from None
        except OSError as e:
            self.broken = True
            click.echo(f"cae-codec: cannot write reports to standard output: {bulk.describe(e)}", err=True)


def _shown(text: str) -> str:
    """A name or message as a report line shows it: control characters (a newline could forge a
    line) and bytes that are not UTF-8 (os.fsdecode's surrogates) as \\xNN escapes."""
    if text.isprintable():
        return text
    out = []
    for ch in text:
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:
            out.append(f"\\x{code - 0xDC00:02x}")
        elif not ch.isprintable() and ch != " ":
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)


NAME_KEYS = ("input", "output")


def _json(record: dict) -> str:
    """A record as one line of strict JSON: an infinite PSNR (an exact decode) is null, and a name
    that is not UTF-8 has each such byte as U+FFFD, its exact bytes in "<key>_hex" beside it."""
    record = dict(record)
    for key in NAME_KEYS:
        name = record.get(key)
        if isinstance(name, str) and any(0xDC80 <= ord(c) <= 0xDCFF for c in name):
            raw = os.fsencode(name)
            record[key] = raw.decode("utf-8", "replace")
            record[f"{key}_hex"] = raw.hex()
    for key, value in record.items():
        if isinstance(value, float) and not math.isfinite(value):
            record[key] = None
    return json.dumps(record, allow_nan=False)


def _line(record: dict) -> str:
    """A file's report line, from its record."""
    route = f"{_shown(record['input'])} -> {_shown(record['output'])}"
    if record.get("skipped"):
        return f"{route}: skipped, {record.get('reason', 'the output exists')}"
    if "bytes" in record:  # compressed
        quality = f"quality {record['quality']:g}" if record.get("quality") is not None else ""
        quality = quality or f"level {record['level']:g}"
        psnr = f", PSNR {record['psnr']:.2f} dB" if "psnr" in record else ""
        psnr = ", PSNR inf dB (identical)" if psnr == ", PSNR inf dB" else psnr
        ssim = f", MS-SSIM {record['ms_ssim']:.4f}" if "ms_ssim" in record else ""
        target = ""
        if "target" in record:
            kind, value = record["target"]["kind"], record["target"]["value"]
            wanted = f"{value:,.0f} bytes" if kind == "size" else f"{kind} {value:g}"
            target = f" (target {wanted}, {record['target']['tries']} tries)"
        return (
            f"{route}: {record['bytes']} bytes, {record['bpp']:.3f} bpp, {quality}{target}, "
            f"{record['ms']:.0f} ms{psnr}{ssim}"
        )
    return f"{route}: {record['width']}x{record['height']} {record['mode']}, {record['ms']:.0f} ms"


def _name(path: Path, output: bool = False) -> str:
    """A path as reports show it; - is <stdin> as an input and <stdout> as an output."""
    return str(path) if path != STDIO else ("<stdout>" if output else "<stdin>")


def _warn(name: str, notes: list[str]) -> None:
    for note in notes:
        click.echo(f"cae-codec: warning: {_shown(name)}: {_shown(note)}", err=True)


def _write(target: Path, data: bytes, source: Path, force: bool, named: bool) -> None:
    """An output: standard output for -o -, else a file written atomically (files.write_atomic)."""
    if target != STDIO:
        write_atomic(target, data, source, force, named)
        return
    if sys.stdout is None:
        raise OSError(errno.EBADF, "standard output is closed", "<stdout>")
    sys.stdout.flush()
    try:
        try:
            fd = sys.stdout.fileno()
        except (AttributeError, io.UnsupportedOperation):  # a stream in memory (tests, embedding)
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
            return
        write_all(fd, data)  # every byte, or an error: a short write is no success
    except BrokenPipeError:
        raise ReaderLeftError from None


class ReaderLeftError(Exception):
    """The reader of standard output closed it early (head -c 10): the run ends quietly, status 141."""


def _input(source: Path, job: bulk.Job) -> Path | bytes:
    """What a file's coding reads: a decode's input read once, in bounded pieces (so a FIFO or a
    process substitution works, and its header is checked before anything about its output); a
    compression's file is left to Pillow, which reads its header first; standard input is bounded."""
    if source != STDIO:
        return bulk.read_cae(source) if job.kind == "decompress" else source
    if sys.stdin is None:
        raise ValueError("standard input is closed")
    if sys.stdin.isatty():  # as gzip: no waiting on a terminal for data nobody will type
        raise ValueError(f"standard input is a terminal: pipe a file in, as in cae-codec {job.kind} - < FILE")
    if job.kind == "decompress":
        return read_limited(sys.stdin.buffer)
    return bulk.read_image_stream(sys.stdin.buffer, job.max_pixels)


def _work(source: Path, target: Path, named: bool, job: bulk.Job, force: bool) -> dict:
    """One file, as the local engine runs it: bulk's steps, with standard streams, and an existing
    output refused (not skipped) unless forced."""
    if job.kind == "decompress":
        output_format(target)  # an unknown suffix is refused before anything else
    data = _input(source, job)
    if target != STDIO:
        check_free(target, source, force, named)
    bar = _StepBar(job.kind)
    progress = _BATCH_BAR[0] or (bar if _isatty(sys.stderr) else None)  # a batch's bar moves per tile
    try:
        coded, result, notes = bulk.code(job, data, target, progress)
    finally:
        bar.close()
    _write(target, coded, source, force, named)
    return {"input": _name(source), "output": _name(target, output=True), **result, "warnings": notes}


def _record(source: Path, target: Path, named: bool, job: bulk.Job, force: bool) -> dict:
    """One file's record; a failure is the record's "error"."""
    try:
        return _work(source, target, named, job, force)
    except (*_user_errors(), OutputExistsError) as e:
        return _failure(source, e)


def _failure(source: Path, e: Exception) -> dict:
    """The record of a file that failed with a user's error (anything else is a bug: raised)."""
    if not isinstance(e, (*_user_errors(), OutputExistsError)):
        raise e
    if isinstance(e, OSError) and e.filename and Path(e.filename) != source:
        return {"input": _name(source), "error": f"cannot write {e.filename}: {bulk.describe(e)}"}
    if isinstance(e, OutputExistsError) and e.forceable:
        return {"input": _name(source), "error": bulk.describe(e), "exists": True}
    return {"input": _name(source), "error": bulk.describe(e)}


def _chunk(pairs: list[tuple[Path, Path]], named: bool, job: bulk.Job, force: bool) -> list[dict]:
    """Records of coding files through the batch API (bulk.compress_images or decompress_images),
    in order; each file's failure is its own."""
    records: list[dict | None] = [None] * len(pairs)
    ready, items = [], []
    for i, (source, target) in enumerate(pairs):
        try:
            if job.kind == "decompress":
                fmt = output_format(target)  # an unknown suffix is refused before anything else
            data = _input(source, job)
            check_free(target, source, force, named)
            items.append(data if job.kind == "compress" else (data, fmt))
            ready.append(i)
        except (*_user_errors(), OutputExistsError) as e:
            records[i] = _failure(source, e)
    coded = bulk.compress_images(items, job) if job.kind == "compress" else bulk.decompress_images(items, job)
    for i, result in zip(ready, coded, strict=True):
        source, target = pairs[i]
        try:
            if isinstance(result, Exception):
                raise result
            data, record, notes = result
            _write(target, data, source, force, named)
            records[i] = {
                "input": _name(source),
                "output": _name(target, output=True),
                **record,
                "warnings": notes,
            }
        except (*_user_errors(), OutputExistsError) as e:
            records[i] = _failure(source, e)
    return records


CHUNK = 32  # files a local worker codes through the batch API at a time


def _start_worker(parent: int) -> None:
    os.environ["OMP_NUM_THREADS"] = "1"  # read when the worker first imports torch
    # Ctrl-C reaches the whole process group: the parent alone decides, and ends its workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    threading.Thread(target=_end_with, args=(parent,), daemon=True).start()


def _end_with(parent: int) -> None:
    """A worker's watch over its parent: once the parent is gone (even by kill -9) the worker is
    re-parented, and then it ends at once, leaving no half-written output (files.write_atomic)."""
    while os.getppid() == parent:
        time.sleep(0.25)
    os._exit(1)


def _local(
    pairs: list[tuple[Path, Path]], named: bool, job: bulk.Job, force: bool, workers: int | None = None
) -> Iterator[dict]:
    """Records of the files coded here, in order: in this process, or in worker processes of one
    core each (the entropy coders run in one thread, so processes keep every core busy). Files
    go CHUNK at a time through the batch API, so same-size small images share passes."""
    streams = any(STDIO in pair for pair in pairs)
    if len(pairs) == 1 or streams or not bulk.regular_files([source for source, _ in pairs]):
        # A FIFO or <(...) is read once, here, in order; one file is exactly what compress makes.
        for pair in pairs:
            yield from _records([pair], named, job, force)
        return
    pixels = [bulk.pixels_of(source, job.kind) for source, _ in pairs]
    if workers is None:
        workers = (os.cpu_count() or 1) if bulk.work_estimate(pixels) > PARALLEL_AFTER_S else 1
    units = _units(pairs, pixels, workers)
    if workers == 1:
        for unit in units:  # a large image alone, as compress makes it (and its bar moves per tile)
            yield from (_records if len(unit) == 1 else _chunk)(unit, named, job, force)
        return
    # Leaving this block for any reason, an interrupt included, terminates the workers at once.
    with _pool(min(workers, len(units))) as pool:
        for records in pool.imap(functools.partial(_chunk, named=named, job=job, force=force), units):
            yield from records


def _pool(workers: int):
    """Worker processes of one core each (spawned: never fork a process that may hold torch's threads)."""
    context = multiprocessing.get_context("spawn")
    return context.Pool(workers, initializer=_start_worker, initargs=(os.getpid(),))


def _units(pairs: list, pixels: list[int], workers: int) -> list[list]:
    """The files in input order, cut into the units a process codes at once: an image too large for
    the batch API alone (so its report comes as soon as it is done, with its own time), runs of
    small ones together (up to CHUNK, and split over the workers), which share forward passes."""
    size = min(CHUNK, max(1, -(-len(pairs) // workers)))
    units: list[list] = []
    run: list = []
    for pair, n in zip(pairs, pixels, strict=True):
        if n > config.BATCH_PIXELS:
            if run:
                units.append(run)
                run = []
            units.append([pair])
            continue
        run.append(pair)
        if len(run) == size:
            units.append(run)
            run = []
    if run:
        units.append(run)
    return units


def _records(pairs: list[tuple[Path, Path]], named: bool, job: bulk.Job, force: bool) -> list[dict]:
    return [_record(source, target, named, job, force) for source, target in pairs]


def _make_folder(folder: Path) -> None:
    """Create the folder -o names (its parent exists: plan_outputs checked); one clear line if not."""
    try:
        folder.mkdir(exist_ok=True)
    except FileExistsError:
        raise click.UsageError(f"-o {folder}/ names a folder, but {folder} is a file") from None
    except OSError as e:
        raise click.ClickException(f"cannot create folder {folder}: {bulk.describe(e)}") from None


def _isatty(stream) -> bool:
    return stream is not None and stream.isatty()  # a stream closed by the shell (>&-) is None


class _StepBar:
    """A progress bar on stderr for one large image (its segments and tiles, with the time left),
    drawn from its first report; images of a few steps get none."""

    MIN_STEPS = 4  # below this the image takes a second or two: no bar

    def __init__(self, kind: str) -> None:
        self.label = "compressing" if kind == "compress" else "decompressing"
        self.bar = None

    def __call__(self, done: int, total: int) -> None:
        if total < self.MIN_STEPS:
            return
        if self.bar is None:
            self.bar = click.progressbar(length=total, label=self.label, file=sys.stderr, show_eta=True)
            self.bar.__enter__()
        self.bar.update(done - self.bar.pos)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


def _with_progress(records: Iterator[dict], count: int, report: Report, kind: str) -> Iterator[dict]:
    """The records, with a progress bar on stderr for long runs when stderr is a terminal and the
    per-file lines do not go to that terminal too (--quiet, --json, or standard output redirected)."""
    lines_on_terminal = not (report.quiet or report.json) and _isatty(sys.stdout)
    if count < PROGRESS_FROM or not _isatty(sys.stderr) or lines_on_terminal:
        yield from records
        return
    label = "compressing" if kind == "compress" else "decompressing"
    ticks = 100  # a file's share of the bar: a large image coded here moves it segment by segment
    with click.progressbar(length=count * ticks, label=label, file=sys.stderr, show_eta=True) as bar:
        files = 0

        def within(done: int, total: int) -> None:
            bar.update(files * ticks + ticks * done // max(total, 1) - bar.pos)

        _BATCH_BAR[0] = within
        try:
            for record in records:
                yield record
                files += 1
                bar.update(files * ticks - bar.pos)
        finally:
            _BATCH_BAR[0] = None


# While a batch's bar is shown, how a large image coded in this process moves it (_with_progress).
_BATCH_BAR: list = [None]


def _run_batch(
    inputs: tuple[Path, ...],
    output: str | None,
    job: bulk.Job,
    force: bool,
    report: Report,
    engine: str = "local",
    address: str | None = None,
    workers: int | None = None,
    verbose: bool = False,
    skip_existing: bool = False,
) -> None:
    """Run the job on each input, here or on Ray; one failure does not stop the others."""
    if skip_existing and force:
        raise click.UsageError("--skip-existing keeps outputs that exist, --force replaces them: give one")
    on_ray = _ray(engine, job, force, address, workers, verbose)
    suffix = COMPRESSED_SUFFIX if job.kind == "compress" else DECODED_SUFFIX
    try:
        plan = plan_outputs(list(inputs), suffix, output)
        if plan.targets == [STDIO] and report.json:
            raise ValueError("--json writes to standard output, which -o - already uses")
        if on_ray is not None and (STDIO in inputs or plan.targets == [STDIO]):
            raise ValueError("--engine ray reads and writes files, not standard streams")
        if job.kind == "decompress" and plan.named:
            output_format(plan.targets[0])  # an -o whose format is unknown is a usage error
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    report.to_stderr = plan.targets == [STDIO]
    if plan.targets == [STDIO] and sys.stdout is None:
        raise click.ClickException("standard output is closed: -o - has nowhere to write")
    if plan.targets == [STDIO] and _isatty(sys.stdout):
        raise click.UsageError("-o - would write binary data to the terminal; redirect it: -o - > FILE")
    if plan.folder is not None:
        _make_folder(plan.folder)
    pairs = list(zip(inputs, plan.targets, strict=True))
    exists = {i for i, (_, t) in enumerate(pairs) if skip_existing and t != STDIO and os.path.lexists(t)}
    todo = [pair for i, pair in enumerate(pairs) if i not in exists]
    coded = on_ray(todo, plan.named) if on_ray is not None else _local(todo, plan.named, job, force, workers)
    records = _merged(pairs, exists, coded)
    failed, existing, seen = 0, [], 0
    try:
        for record in _with_progress(records, len(pairs), report, job.kind):
            seen += 1
            if record.pop("exists", False) and len(pairs) > 1:
                failed += 1
                existing.append(record)  # said once, at the end
                report.failed(record["input"], record["error"], quietly=True)
                continue
            if "error" in record:
                failed += 1
                report.failed(record["input"], record["error"])
                continue
            # A decode's warnings are about its output's format, a compression's about its input.
            _warn(record["input" if job.kind == "compress" else "output"], record.pop("warnings", []))
            report.done(record)
    except ReaderLeftError:
        # As Unix tools end when their reader goes (SIGPIPE): quietly, with 128 + 13.
        sys.stdout = None
        raise SystemExit(141) from None
    except (KeyboardInterrupt, Terminated) as e:
        # The workers are gone (_local's pool), every output written is whole, none half-written.
        code = 143 if isinstance(e, Terminated) else 130
        done = seen - failed
        click.echo(
            f"\ncae-codec: interrupted: {done} of {len(pairs)} files done, {failed} failed, "
            f"{len(pairs) - seen} not done; every output written is whole",
            err=True,
        )
        raise SystemExit(code) from None
    if len(existing) == 1:
        report.failed(existing[0]["input"], existing[0]["error"], quietly=False, json_too=False)
    elif existing:
        left = f"{len(existing)} of {len(inputs)} outputs exist and were left alone"
        click.echo(f"cae-codec: {left}; --skip-existing skips them, --force replaces them", err=True)
    if failed > len(existing) and len(inputs) > 1:
        click.echo(f"cae-codec: {failed - len(existing)} of {len(inputs)} files failed", err=True)
    if failed or report.broken:
        raise SystemExit(1)


def _merged(pairs: list, skipped: set[int], coded: Iterator[dict]) -> Iterator[dict]:
    """Records in input order: the outputs --skip-existing left alone, and the others as coded."""
    for i, (source, target) in enumerate(pairs):
        if i in skipped:
            yield {"input": _name(source), "output": _name(target, True), "skipped": True, "reason": "exists"}
        else:
            yield next(coded)


def _set_threads(ctx: click.Context, param: click.Parameter, value: int | None) -> None:
    """--threads, before or after the subcommand: torch reads OMP_NUM_THREADS when it is first
    imported (never while options are parsed, so usage errors stay fast); set it too if it was."""
    if value is None:
        return
    os.environ["OMP_NUM_THREADS"] = str(value)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(value)


THREADS_OPTION = click.option(
    "--threads",
    type=Count(1),
    expose_value=False,
    callback=_set_threads,
    help="CPU threads for the network (default: $OMP_NUM_THREADS, else all cores). On a busy "
    "machine 1 is often fastest. Before or after the command's name.",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="cae-codec")
@THREADS_OPTION
def main() -> None:
    """cae-codec: a learned image codec that writes real .cae files.

    \b
      cae-codec compress photo.png          writes photo.cae
      cae-codec decompress photo.cae        writes photo.decoded.png (never photo.png)
      cae-codec info photo.cae              shows what a .cae file holds
      cae-codec compare photo.png           writes photo.compare.html: the codecs side by side
    """
    warnings.showwarning = _one_line_warning
    _tune_allocator()
    with contextlib.suppress(ValueError):  # not the main thread (a test's runner): left as it is
        signal.signal(signal.SIGTERM, _terminated)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, so a batch stops as cleanly as on Ctrl-C."""


def _terminated(signum, frame) -> None:
    raise Terminated


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A Python warning that reaches the command line (our own, or Pillow's about a file) as one
    line, without the source file and line it came from."""
    text = " ".join(str(message).split())
    click.echo(f"cae-codec: warning: {text}", err=True)


def _tune_allocator() -> None:
    """glibc returns large blocks to the system at once, so every tile's and segment's tensors fault
    their pages in afresh (a tenth of a 14 MP decode's CPU time went to the kernel); keeping freed
    blocks up to 1 GiB makes that decode about 12 % faster than glibc's defaults, for 5 % more peak
    memory. The command line owns its process; the library never does this."""
    if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, (1 << 31) - 1)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass


@main.command()
@THREADS_OPTION
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@OUTPUT_OPTION
@click.option(
    "-q",
    "--quality",
    type=Finite(0, 100),
    help="0 (fewest bits) to 100 (best pictures), as cwebp's; default 71. The shipped weights' 8 levels "
    "sit at 0, 14, 29, 43, 57, 71, 86 and 100; qualities between move between them in 256ths of a level.",
)
@click.option(
    "--target-size",
    metavar="SIZE",
    help="Instead of -q: the highest quality whose file fits SIZE (40KB, 1.5MB, 64KiB, 40000 bytes; "
    "KB = 1000 bytes), header and metadata included.",
)
@click.option(
    "--target-psnr",
    type=Finite(min=0, min_open=True),
    metavar="DB",
    help="Instead of -q: the smallest file whose decode reaches DB dB PSNR.",
)
@click.option(
    "--target-ms-ssim",
    type=Finite(0, 1, min_open=True),
    metavar="X",
    help="Instead of -q: the smallest file whose decode reaches MS-SSIM X (0-1, e.g. 0.98).",
)
@click.option(
    "--metadata",
    default="all",
    show_default=True,
    metavar="KINDS",
    help="Metadata to keep: all, none, or some of icc, exif, xmp joined by commas (as cwebp's "
    "-metadata). EXIF orientation is applied to the pixels and stored as upright.",
)
@WEIGHTS_OPTION
@FORCE_OPTION
@SKIP_OPTION
@MAX_PIXELS_OPTION
@click.option(
    "--coder",
    type=click.Choice(config.CODER_CHOICES),
    default=config.AUTO,
    show_default=True,
    help="Entropy coder: auto codes the latent with both and keeps the smaller file (images of up to "
    "65,536 pixels get the range coder alone: zstd never won there); zstd or range (the learned range "
    "coder) force one. The picture is the same either way.",
)
@click.option("--psnr", is_flag=True, help="Also decode the result and print its PSNR against the input.")
@PRECISION_OPTION
@JSON_OPTION
@QUIET_OPTION
@ENGINE_OPTION
@ADDRESS_OPTION
@VERBOSE_OPTION
@WORKERS_OPTION
def compress(
    inputs,
    output,
    quality,
    target_size,
    target_psnr,
    target_ms_ssim,
    metadata,
    weights,
    force,
    skip_existing,
    max_pixels,
    coder,
    psnr,
    precision,
    as_json,
    quiet,
    engine,
    address,
    verbose,
    workers,
) -> None:
    """Compress images (PNG, JPEG, BMP, TIFF, WebP, ...) to .cae files.

    Each INPUT is written beside itself with the suffix .cae unless -o says otherwise. An INPUT of -
    reads standard input, and -o - writes standard output.

    \b
    Modes: RGB and L (grayscale) are kept; RGBA keeps its alpha plane losslessly.
    Other modes are converted: 1, I, I;16, F -> L; LA, PA -> RGBA; P -> RGBA if it
    has transparency, else RGB; CMYK, YCbCr, LAB, HSV -> RGB. 16-bit images lose
    their low 8 bits. EXIF orientation is applied; of an animation, only the first
    frame is kept.
    """
    from .metadata import kinds as metadata_kinds

    target = _target(quality, target_size, target_psnr, target_ms_ssim)
    try:
        metadata_kinds(metadata)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--metadata") from None
    if weights is not None:
        from . import weights as weights_mod

        try:
            weights_mod.load(weights)  # a bad --weights fails once, before any file
        except weights_mod.WeightsError as e:
            raise click.ClickException(str(e)) from None

    job = bulk.Job("compress", quality, weights, coder, max_pixels, psnr, metadata, target, precision)

    report = Report(as_json, quiet)
    _run_batch(inputs, output, job, force, report, engine, address, workers, verbose, skip_existing)


def _target(quality, size: str | None, psnr: float | None, ms_ssim: float | None) -> tuple[str, float] | None:
    """The one target asked for, checked; none when -q (or nothing) chooses the quality."""
    given = [(k, v) for k, v in (("size", size), ("psnr", psnr), ("ms-ssim", ms_ssim)) if v is not None]
    if len(given) + (quality is not None) > 1:
        raise click.UsageError("give one of -q, --target-size, --target-psnr and --target-ms-ssim")
    if not given:
        return None
    kind, value = given[0]
    if kind == "size":
        from .targets import parse_size

        try:
            value = parse_size(value)
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="--target-size") from None
    return kind, float(value)


@main.command()
@THREADS_OPTION
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@OUTPUT_OPTION
@WEIGHTS_OPTION
@FORCE_OPTION
@SKIP_OPTION
@MAX_PIXELS_OPTION
@PRECISION_OPTION
@JSON_OPTION
@QUIET_OPTION
@ENGINE_OPTION
@ADDRESS_OPTION
@VERBOSE_OPTION
@WORKERS_OPTION
def decompress(
    inputs,
    output,
    weights,
    force,
    skip_existing,
    max_pixels,
    precision,
    as_json,
    quiet,
    engine,
    address,
    verbose,
    workers,
) -> None:
    """Decompress .cae files to PNG (or the format -o's suffix names).

    photo.cae becomes photo.decoded.png: a lossy decode never takes a name the original could have
    had. The image comes back with its original width, height and mode (L, RGB or RGBA).

    \b
    -o suffixes: .png .tif .tiff .bmp .webp (lossless), .jpg .jpeg (compressed
    again, quality 95, with a warning). Others are refused. An INPUT of - reads
    standard input; -o - writes PNG to standard output. The ICC profile, EXIF and
    XMP the file kept are written into PNG, TIFF, WebP and JPEG outputs.
    """

    job = bulk.Job("decompress", weights=weights, max_pixels=max_pixels, precision=precision)
    report = Report(as_json, quiet)
    _run_batch(inputs, output, job, force, report, engine, address, workers, verbose, skip_existing)


@main.command()
@THREADS_OPTION
@click.argument("inputs", nargs=-1, type=click.Path(path_type=Path))
@click.option("--list-weights", is_flag=True, help="List the shipped weights instead.")
@click.option(
    "--weights",
    type=click.Path(dir_okay=False),
    help="The weight file the .cae files were made with, when it is not a shipped one (as decompress).",
)
@click.option(
    "--model",
    is_flag=False,
    flag_value="shipped",
    help="Print the network layer by layer (output shape, parameters): of every shipped model, or "
    "of the weight file or shipped name given.",
)
@click.option(
    "--size",
    default="32x32",
    show_default=True,
    help="With --model: the input, WIDTHxHEIGHT as reports print it.",
)
def info(inputs, list_weights, weights, model, size) -> None:
    """Show what .cae files hold, after every check decompress makes short of decoding the latent
    (header, weights, quality, limits, section sizes, alpha plane, metadata); list the shipped
    weights; or print a model's layers."""
    from . import metrics
    from .quality import describe as describe_quality
    from .quality import shipped_levels

    if model is not None:
        _print_models(model, size)
        return
    if list_weights:
        from . import weights as weights_mod

        for entry in weights_mod.REGISTRY.values():
            size = (weights_mod.shipped_dir() / entry.file).stat().st_size / 2**20
            limit = f"{weights_mod.PHOTO_MIN_PIXELS:,} pixels"
            role = {
                weights_mod.DEFAULT_ID: f" (default under {limit})",
                weights_mod.PHOTO_ID: f" (default from {limit})",
            }.get(entry.id, "")
            click.echo(f"id {entry.id}  {entry.name}{role}  {entry.file}, {size:.1f} MiB")
        return
    if not inputs:
        raise click.UsageError("give .cae files, or --list-weights to list the shipped weights")
    from . import codec

    failed = False
    for source in inputs:
        try:
            data = read_limited(sys.stdin.buffer) if source == STDIO else bulk.read_cae(source)
            f = codec.check(data, weights, max_pixels=2**62)  # the limits are decompress's choice
        except _user_errors() as e:
            failed = True
            click.echo(f"cae-codec: {_shown(str(source))}: {_shown(bulk.describe(e))}", err=True)
            continue
        h = f.header
        bpp = metrics.bpp(len(data), h.width, h.height)
        segments = f", {h.segments} segments of {h.segment} px" if h.segment else ""
        folded = f", folded into {h.fold} strips ({'x'.join(map(str, h.coded_size))})" if h.fold > 1 else ""
        kept = [f"{kind} {len(section):,} B" for kind, section in f.metadata.items()]
        kept = f", metadata: {', '.join(kept)}" if kept else ""
        click.echo(
            f"{_shown(str(source))}: {h.width}x{h.height} {h.mode}, quality "
            f"{describe_quality(h.level, h.fraction, shipped_levels(h.weights_id))}, coder {h.coder}, "
            f"weights id {h.weights_id}{segments}{folded}{kept}, {len(data)} bytes ({bpp:.3f} bpp)"
        )
    if failed:
        raise SystemExit(1)


def _print_models(choice: str, size: str) -> None:
    """The layers of the shipped models (choice "shipped") or of one weight file or shipped name."""
    from . import model as model_mod
    from . import weights as weights_mod

    try:
        width, height = (int(v) for v in size.lower().split("x"))
        if height < 1 or width < 1:
            raise ValueError
    except ValueError:
        raise click.BadParameter("must be WIDTHxHEIGHT, e.g. 768x512", param_hint="--size") from None
    try:
        chosen = (
            [weights_mod.load(weights_id=i) for i in weights_mod.REGISTRY]
            if choice == "shipped"
            else [weights_mod.load(choice)]
        )
    except weights_mod.WeightsError as e:
        raise click.ClickException(str(e)) from None
    for w in chosen:
        cfg = w.model.config
        m = cfg.pad_multiple
        h, wd = -(-height // m) * m, -(-width // m) * m
        padded = f" ({width}x{height} padded to a multiple of {m})" if (h, wd) != (height, width) else ""
        click.echo(
            f"{w.name} (id {w.id}): stride {cfg.stride}, {cfg.prior} prior, {cfg.levels} quality levels"
        )
        click.echo(
            f"  {'input':<8} {'image':<15} {f'3x{h}x{wd}':>12}{padded}  (shapes: channels x height x width)"
        )
        last = {  # the layers whose outputs are the latent and the hyper-latent
            f"g_a.{len(w.model.g_a) - 1}": "latent y",
            f"h_a.{len(getattr(w.model, 'h_a', ())) - 1}": "hyper-latent z",
        }
        for name, kind, shape, params in model_mod.summary(w.model, h, wd):
            click.echo(f"  {name:<8} {kind:<15} {'x'.join(map(str, shape)):>12} {params:>11,}")
            if name in last:
                values = shape[0] * shape[1] * shape[2]
                click.echo(f"  {last[name]:<24} {values:>12,} values, {values / (h * wd):.3f} per pixel")
        total = sum(p.numel() for p in w.model.parameters())
        click.echo(f"  {'total':<37} {total:>11,} parameters (with gains and densities)\n")


def _int_list(value: str | None, option: str) -> list[int] | None:
    try:
        return [int(v) for v in value.split(",")] if value else None
    except ValueError:
        raise click.BadParameter("must be integers separated by commas", param_hint=option) from None


def _bench_bar(units: int, label: str):
    """A progress bar on stderr for one codec's share of a bench: images x qualities, with the
    time spent and the time left."""
    started = time.monotonic()
    return click.progressbar(
        length=units,
        label=f"{label:<24}",
        file=sys.stderr,
        show_eta=True,
        show_pos=True,
        item_show_func=lambda _: f"{time.monotonic() - started:.0f} s",
    )


def _bench_images(dataset: str, data_dir: str | None, limit: int | None) -> list:
    """The images a bench data set names, uint8 HxWx3 arrays."""
    from . import datasets

    if dataset == "cifar10":
        return list(datasets.load_cifar10("test", data_dir)[:limit])
    if dataset == "kodak":
        return datasets.load_folder(datasets.locate_kodak(data_dir), limit)
    return datasets.load_folder(dataset, limit)


@main.command()
@THREADS_OPTION
@click.argument("image", type=click.Path(path_type=Path))
@click.option(
    "--size",
    metavar="SIZE",
    help="The file size every codec aims under (40KB, 1.5MB, 64KiB or bytes; KB = 1000 bytes); "
    "default: cae-codec's file at its default quality.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    help="The page to write (default: IMAGE's name with .compare.html, beside it).",
)
@click.option(
    "--codecs",
    default=",".join(COMPARE_PEERS),
    show_default=True,
    help="The codecs beside cae-codec; those not installed are left out (JPEG XL and HEIF come with "
    f"{PEERS_EXTRA}).",
)
@WEIGHTS_OPTION
@click.option(
    "-f",
    "--force",
    is_flag=True,
    help="Replace an existing page (IMAGE.compare.html, or the file -o names). IMAGE is never replaced.",
)
def compare(image, size, output, codecs, weights, force) -> None:
    """Write one self-contained HTML page comparing IMAGE as each codec codes it at the same file
    size: a swipe between any two, zoom 1:1 and 2:1, bytes, PSNR and MS-SSIM, and the photo's
    rate-distortion plot. No server or network is needed to view it.

    AVIF (speed 0) and HEIF (x265's placebo preset) run at their strongest effort, so a photo takes
    a while: 82 s for a 768x512 one on an idle 2-core Xeon (longer on a busy machine). Each codec
    says when it starts.
    """
    from .targets import parse_size

    names = tuple(dict.fromkeys(c.strip() for c in codecs.split(",") if c.strip()))
    if unknown := [n for n in names if n not in CLASSICS]:
        raise click.BadParameter(
            f"unknown {', '.join(unknown)}; choose from {', '.join(CLASSICS)}", param_hint="--codecs"
        )
    try:
        size = parse_size(size) if size is not None else None
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--size") from None
    named = output is not None
    output = output or image.with_name(f"{image.stem}.compare.html")
    if output.suffix.lower() not in (".html", ".htm"):
        raise click.BadParameter(f"{output} is not an .html file", param_hint="-o")
    from . import codec
    from . import compare as compare_mod

    try:
        check_free(output, image, force, named)
        picture = codec.read_image(image)
        page, entries, missed = compare_mod.build(
            picture, size, names, weights, lambda name: click.echo(f"coding with {name} ...", err=True)
        )
        write_atomic(output, page.encode(), image, force, named)
    except (*_user_errors(), OutputExistsError, OSError) as e:
        raise click.ClickException(f"{image}: {bulk.describe(e)}") from None
    for e in entries:
        click.echo(f"{e.name:<10} {e.setting:<13} {e.bytes:>9,} bytes {e.bpp:6.3f} bpp {e.psnr:6.2f} dB")
    if missed:
        click.echo(f"could not come down to that size: {', '.join(missed)}", err=True)
    click.echo(f"wrote {output} ({len(page) / 2**20:.1f} MiB); open it in a browser", err=True)


@main.command()
@THREADS_OPTION
@click.argument("dataset")
@click.option(
    "--data-dir",
    type=click.Path(),
    envvar=DATA_DIR_ENV,
    help=f"CIFAR-10 archive or folder (default: ${DATA_DIR_ENV}, else download to the cache); for "
    "kodak, the folder holding kodim01.png .. kodim24.png (default: download to the cache).",
)
@click.option("--limit", type=Count(1), help="Use only the first N images.")
@click.option(
    "--levels",
    "qualities",
    help="cae-codec's levels to measure, e.g. 1,3,5 (default: all; level k of 8 is quality "
    "0, 14, 29, 43, 57, 71, 86, 100).",
)
@click.option(
    "--codecs",
    default=",".join(DEFAULT_PEERS),
    show_default=True,
    help=f"Codecs to compare with, of {', '.join(CLASSICS)}, or all (those Pillow lacks are skipped; "
    f"jpegxl and heif need {PEERS_EXTRA}). Each adds 10-30 s on 3 Kodak photos, but AVIF, run at "
    "speed 0 (its strongest, as HEIF at x265's placebo preset), about 4 minutes.",
)
@click.option(
    "--coders",
    default=AUTO_CODER,
    show_default=True,
    help="cae-codec's entropy coders to measure: auto (what compress keeps), or any of auto,zstd,range "
    "(each codes every image again).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for results.json, results.csv, rd.png, grid.png (default: a new bench-* folder).",
)
@WEIGHTS_OPTION
def bench(dataset, data_dir, limit, qualities, codecs, coders, out, weights) -> None:
    """Measure cae-codec against JPEG and WebP, or any of AVIF, JPEG 2000, JPEG XL and HEIF.

    Without --weights, cae-codec runs the shipped model that compress would choose for the first
    image's size (the CIFAR model for tiny images, the photo model for photos).

    DATASET is `cifar10` (its 10,000-row test batch, or the rows your copy has), `kodak` (the 24
    Kodak photos, with CompressAI's published learned-codec curves drawn beside ours), or a folder
    of images (write ./cifar10 for a folder of that name). bpp counts whole files; jpeg-payload counts JPEG's
    scan data alone. PSNR, MSE and SSIM are on 8-bit RGB; SSIM is the mean over R, G and B. The
    images are split among a process per core; small same-size images go through the batch API, so
    their times are a batch's time per image.
    """
    from . import benchmark, published
    from . import weights as weights_mod

    names = list(CLASSICS) if codecs.strip() == "all" else [n.strip() for n in codecs.split(",") if n.strip()]
    unknown = [n for n in names if n not in CLASSICS]
    if unknown:
        raise click.BadParameter(
            f"unknown {', '.join(unknown)}; choose from {', '.join(CLASSICS)}, or all",
            param_hint="--codecs",
        )
    ours = tuple(dict.fromkeys(c.strip() for c in coders.split(",") if c.strip()))
    if not ours or any(c not in benchmark.CAE_CODERS for c in ours):
        raise click.BadParameter(f"choose from {', '.join(benchmark.CAE_CODERS)}", param_hint="--coders")
    out = out or Path(f"bench-{Path(dataset).name or 'images'}-{time.strftime('%Y%m%d-%H%M%S')}")
    if out.exists() and any(out.iterdir()):
        raise click.ClickException(f"{out} exists and is not empty; choose another --out")
    try:
        w = weights_mod.load(weights)
        levels = _int_list(qualities, "--levels") or list(range(1, w.levels + 1))
        if bad := [q for q in levels if not 1 <= q <= w.levels]:
            raise click.BadParameter(
                f"{bad[0]} is not a level of {w.name} (1 to {w.levels})", param_hint="--levels"
            )
        images = _bench_images(dataset, data_dir, limit)  # after every check: loading takes a while
        if weights is None:  # the shipped model the codec would choose for this data's image size
            w = weights_mod.load(weights_id=weights_mod.default_id(images[0].shape[1], images[0].shape[0]))
    except _user_errors() as e:
        raise click.ClickException(bulk.describe(e)) from None
    click.echo(f"cae-codec weights: {w.name} (id {w.id})", err=True)
    usable = {n: benchmark.available(n) for n in names}
    for skipped in [n for n in names if not usable[n]]:
        hint = f" ({PEERS_EXTRA})" if CLASSICS[skipped].plugin else ""
        click.echo(f"note: {skipped} skipped: this Pillow cannot write it{hint}", err=True)
    names = [n for n in names if usable[n]]
    with _bench_bar(len(images) * len(levels), f"cae-codec ({', '.join(ours)})") as bar:
        try:
            points = benchmark.measure_cae(images, levels, str(w.path), bar.update, workers=0, coders=ours)
        except ValueError as e:
            raise click.ClickException(str(e)) from None
    for name in names:
        with _bench_bar(len(images) * len(CLASSICS[name].qualities), name) as bar:
            points += benchmark.measure_classics(images, [name], tick=bar.update)
    out.mkdir(parents=True, exist_ok=True)
    shown = points
    if dataset == "kodak" and len(images) == 24:
        shown = points + benchmark.published_points()
        click.echo(f"published curves: {published.SOURCE}")
    info = benchmark.run_info(w, f"{dataset}, {len(images)} images")
    benchmark.write_results(points, out, info, shown)
    click.echo(benchmark.summary(shown))
    grid_quality = w.default_quality if w.default_quality in levels else levels[len(levels) // 2]
    benchmark.grid(images[:8], points, grid_quality, out / "grid.png", str(w.path))
    if not benchmark.plot_rd(shown, out / "rd.png", f"{dataset}, {len(images)} images"):
        click.echo("note: rd.png needs matplotlib: pip install 'cae-codec[plot]'", err=True)
    click.echo(
        f"wrote {out}/results.md (the full table), results.json, results.csv, grid.png"
        + (", rd.png" if (out / "rd.png").exists() else "")
    )


def _check_train_outputs(cfg: config.TrainConfig, force: bool) -> None:
    """Before any data loads: --out may be written (never a shipped weight file, nor an existing file
    without --force), a shipped id is not claimed, and the folders the run writes to exist."""
    from . import weights as weights_mod

    shipped = {entry.file for entry in weights_mod.REGISTRY.values()}
    if cfg.weights_id in weights_mod.REGISTRY:
        name = weights_mod.REGISTRY[cfg.weights_id].name
        raise click.UsageError(f"id {cfg.weights_id} is {name}'s; new weights need an id of their own")
    if all((cfg.out.parent / name).exists() for name in shipped):  # weights/, installed or a clone's
        raise click.UsageError(
            f"{cfg.out} is among the shipped weights; train to another folder (checkpoints/, say) and "
            "ship a model deliberately (weights/README.md)"
        )
    if cfg.out.is_dir():
        raise click.UsageError(f"--out {cfg.out} is a folder; name the weight file to write")
    if cfg.out.exists() and not force:
        raise click.UsageError(f"{cfg.out} exists; --force replaces it")
    from .training import state

    folders = [cfg.out.parent] + ([cfg.log_csv.parent] if cfg.log_csv else [])
    if cfg.checkpoint:
        parts = Path(cfg.checkpoint)
        folders.append(parts if state.is_parts(cfg.checkpoint) else parts.parent)
    for folder in folders:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise click.ClickException(f"cannot create folder {folder}: {bulk.describe(e)}") from None


def _with_path(e: Exception) -> str:
    """An error as one line, naming the file an OS error was about."""
    if isinstance(e, OSError) and e.filename:
        return f"{e.filename}: {bulk.describe(e)}"
    return bulk.describe(e)


BAR_UNITS = 1000  # the training bar counts thousandths of the run, whether it runs on steps or minutes
TRAIN_DEFAULTS = {f.name: f.default for f in dataclasses.fields(config.TrainConfig)}


def _train_option(*names: str, key: str, **kwargs):
    """A train option whose default is TrainConfig's, so the two cannot drift apart; numbers are
    finite and fit where they go."""
    default = TRAIN_DEFAULTS[key]
    if "type" not in kwargs and not kwargs.get("is_flag") and not isinstance(default, bool):
        if isinstance(default, float):
            kwargs["type"] = Finite()
        elif isinstance(default, int):
            kwargs["type"] = Count(0)
    return click.option(*names, key, default=default, show_default=True, **kwargs)


@main.command()
@THREADS_OPTION
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Weight file to write when training ends (its folder is made; an existing file is replaced "
    "only with --force, one among the shipped weights never).",
)
@click.option(
    "--photos",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Train on random crops of the photos in this folder (searched recursively; every 48th "
    "photo is held out for validation) instead of on CIFAR-10.",
)
@click.option(
    "--data-dir",
    type=click.Path(),
    envvar=DATA_DIR_ENV,
    help=f"CIFAR-10 archive or folder (default: ${DATA_DIR_ENV}, else download to the cache).",
)
@_train_option(
    "--steps",
    key="steps",
    help="Optimizer steps in all (at most, with --minutes); 0 exports the --init-from network as it is.",
)
@_train_option(
    "--minutes",
    key="minutes",
    type=Finite(min=0, min_open=True),
    help="Train for this many minutes of training time: the learning rate decays over the clock, "
    "not the steps, and the run validates and saves at the end. A resumed run counts the time "
    "it already had.",
)
@_train_option("--batch-size", key="batch_size")
@_train_option("--crop", key="crop", help="With --photos: side of the training crops, a multiple of 64.")
@_train_option("--lr", key="lr", help="Peak learning rate (cosine decay).")
@_train_option("--seed", key="seed")
@_train_option(
    "--device",
    key="device",
    help="Where training runs: cpu, or cuda (cuda:N for one GPU of several). A checkpoint made on "
    "one resumes on the other, and the weight file is exported on the CPU either way.",
)
@_train_option(
    "--precision",
    key="precision",
    type=click.Choice(config.PRECISIONS),
    help="auto trains the transforms in bfloat16 on a CPU with bf16 units (AMX, AVX512-BF16: about "
    "2.5x the steps), keeping master weights, latents, densities, rate and loss in float32; fp32 "
    "everywhere else. bf16 forces it (slow without those units).",
)
@click.option(
    "--lambdas",
    default=",".join(map(str, config.DEFAULT_LAMBDAS)),
    show_default=True,
    help="One lambda per quality level, low to high (loss = lambda*255^2*MSE + bpp).",
)
@_train_option("--channels", key="N", help="Hidden channels N.")
@_train_option("--latent-channels", key="M", help="Latent channels M.")
@_train_option(
    "--stride",
    key="stride",
    type=click.Choice(["4", "16"]),
    callback=lambda ctx, param, value: int(value),
    help="Total downsampling of g_a: 4 for tiny images, 16 for photos.",
)
@_train_option(
    "--hyper-channels",
    key="hyper_N",
    help="Hidden channels of the hyperprior (mean-scale or checkerboard); 0 trains a factorized prior.",
)
@_train_option("--hyper-latent-channels", key="hyper_M", help="Channels of the hyper-latent z.")
@_train_option(
    "--prior",
    key="prior",
    type=click.Choice(["", *PRIORS]),
    help="Entropy model of the latent; '' follows --hyper-channels (0: factorized, else mean-scale); "
    "checkerboard adds a context model to the hyperprior.",
)
@_train_option(
    "--loss",
    key="loss",
    type=click.Choice(config.LOSSES),
    help="Distortion term of the loss (the rate term is always bpp), scaled to MSE's units so the "
    "same --lambdas give comparable rates.",
)
@_train_option(
    "--balance-levels",
    key="balance_levels",
    is_flag=True,
    help="Weigh each level's loss by 1 / its running mean, so the high levels' larger losses do not "
    "dominate the shared transforms and a 1 % gain counts alike at every level.",
)
@_train_option(
    "--noise",
    key="noise",
    type=Finite(min=0),
    help="Train a denoising codec: Gaussian noise of this std (8-bit levels) on the inputs, the "
    "clean image as the target. Validation PSNR is against the clean image.",
)
@_train_option(
    "--val-rows", key="val_rows", help="CIFAR-10 training rows held out for validation (from data_batch_5)."
)
@_train_option(
    "--eval-every", key="eval_every", help="Steps between validation passes (each also checkpoints)."
)
@click.option(
    "--checkpoint",
    # A string, not a Path: a trailing slash says "folder of parts" and Path would drop it.
    type=click.Path(),
    help="Checkpoint to resume from and save to: a file, or a folder (an existing one, or a name "
    "ending in /) that keeps the run in parts of at most 15 MiB (float16 network, bfloat16 optimizer "
    "moments) that can be committed and resumed on another machine.",
)
@_train_option(
    "--checkpoint-minutes",
    key="checkpoint_minutes",
    type=Finite(min=0, min_open=True),
    help="Also checkpoint after this much wall time, so an interrupted run loses little.",
)
@click.option(
    "--init-from",
    type=click.Path(exists=True, path_type=Path),
    help="Start from the network of a checkpoint (a file or a folder of parts) or a weight file (the "
    "tensors that fit; g_s is matched from the output end), with a fresh optimizer and schedule.",
)
@click.option(
    "--first-rows",
    type=click.IntRange(1, 10000),
    help="Train only on the first N rows of each training batch (in ../shared/data/cifar10 the "
    "first 1,017 are the exact, never-JPEG-compressed images).",
)
@click.option(
    "--first-rows-share",
    type=Finite(0, 1),
    default=1.0,
    show_default=True,
    help="With --first-rows: the share of each batch drawn from those rows; the rest come from all rows.",
)
@click.option(
    "--log",
    "log_csv",
    type=click.Path(dir_okay=False, path_type=Path),
    help="CSV log of training and validation metrics; their curves are drawn beside it as a PNG.",
)
@click.option("--name", help="Name recorded in the weights (default: the output file's stem).")
@click.option(
    "--default-quality",
    type=click.IntRange(1, 64),
    help="Quality used when -q is not given (default: 3/4 of the way up, 6 of 8).",
)
@click.option("--id", "weights_id", type=Count(0), hidden=True, help="Registry id (maintainers only).")
@click.option("-f", "--force", is_flag=True, help="Replace an existing --out file.")
def train(force: bool, **options) -> None:
    """Train a model on CIFAR-10's training batches (or on photos) and write a weight file.

    CIFAR-10's test batch is never read. Resume an interrupted run by giving the same --checkpoint.
    Under torchrun (torchrun --nproc_per_node=N -m cae_codec.training ...), N processes share each
    batch with DistributedDataParallel.
    """
    from . import training as train_mod

    try:
        options["lambdas"] = tuple(float(v) for v in options["lambdas"].split(","))
    except ValueError:
        raise click.BadParameter("must be numbers separated by commas", param_hint="--lambdas") from None
    cfg = config.TrainConfig(**options)
    _check_train_outputs(cfg, force)
    try:
        train_mod.training_device(cfg.device)  # before the progress bar, so a bad one is the only line
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    if train_mod.process_rank() != 0:  # under torchrun, rank 0 alone reports
        try:
            train_mod.train(cfg)
        except _user_errors() as e:
            raise click.ClickException(_with_path(e)) from None
        return
    bar = click.progressbar(
        length=BAR_UNITS,
        label="training",
        file=sys.stderr,
        item_show_func=lambda p: p and f"step {p.step}, loss {p.loss:.3f}",
    )
    with bar:

        def on_progress(p: train_mod.Progress) -> None:
            if p.exporting:
                click.echo(
                    "\nexporting: range tables and zstd dictionaries for every level (a minute or more)",
                    err=True,
                )
                return
            bar.update(round(BAR_UNITS * p.done) - bar.pos, p)

        try:
            sha = train_mod.train(cfg, on_progress)
        except _user_errors() as e:
            raise click.ClickException(_with_path(e)) from None
    click.echo(f"wrote {cfg.out} (sha256 {sha})")
    if cfg.log_csv:
        curves = train_mod.curves_path(cfg.log_csv)
        if curves.exists():
            click.echo(f"wrote {curves} (training and validation curves)")
        else:
            click.echo("note: the curves PNG needs matplotlib: pip install 'cae-codec[plot]'", err=True)
