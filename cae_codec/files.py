"""File-level helpers for the command line: output naming, output formats and atomic, no-clobber writes.

The naming rule that keeps originals safe: a lossy decode is never written under a name the
original could have. `decompress photo.cae` writes `photo.decoded.png`, never `photo.png`, and
--force replaces only files of our own naming scheme or a file the user named with -o.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

COMPRESSED_SUFFIX = ".cae"
DECODED_SUFFIX = ".decoded.png"
STDIO = Path("-")  # as an input: standard input; as -o: standard output (a file named - needs its full path)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # what open() would give; mkstemp alone gives 0600


class OutputExistsError(Exception):
    """The output file exists and overwriting was not asked for."""


@dataclass(frozen=True)
class Plan:
    """Where each input's result goes, and whether the user named that file (with -o) or we did."""

    targets: list[Path]
    named: bool  # True: -o named the one output file; False: our scheme named every output
    folder: Path | None = None  # a folder -o named, to be created if missing


def plan_outputs(inputs: list[Path], suffix: str, output: str | os.PathLike | None) -> Plan:
    """Beside each input, at `output` (one input, a file name) or inside `output` (a folder).

    `output` is a folder when it ends in a slash or already is one; a missing parent is an error.
    `-` as the one input or as `output` is a standard stream.
    """
    if STDIO in inputs and len(inputs) > 1:
        raise ValueError("- (standard input) must be the only input")
    if output is not None and Path(output) == STDIO and os.fspath(output) == "-":
        if len(inputs) > 1:
            raise ValueError("-o - (standard output) takes one input")
        return Plan([STDIO], named=True)
    if inputs == [STDIO] and output is None:
        raise ValueError("reading standard input needs -o: a file name, or - for standard output")
    folder = None
    if output is not None:
        text = os.fspath(output)
        path = Path(text)
        if not (text.endswith(("/", os.sep)) or path.is_dir()):
            if len(inputs) > 1:
                raise ValueError(
                    f"{len(inputs)} inputs need -o to name a folder (an existing one, or end it with /)"
                )
            _check_parent(path)
            return Plan([path], named=True)
        folder = path
        if not folder.exists():
            _check_parent(folder)
    outs = [(folder or p.parent) / (p.stem + suffix) for p in inputs]
    seen: dict[Path, Path] = {}
    for source, out in zip(inputs, outs, strict=True):
        key = Path(os.path.abspath(out))
        if key in seen:
            raise ValueError(f"{seen[key]} and {source} would both write {out}; use -o with separate runs")
        seen[key] = source
    return Plan(outs, named=False, folder=folder)


def _check_parent(path: Path) -> None:
    parent = path.absolute().parent
    if not parent.is_dir():
        raise ValueError(f"folder {parent} does not exist")


@dataclass(frozen=True)
class OutputFormat:
    """How a decoded image is saved for an output suffix."""

    name: str  # Pillow's format name
    options: dict
    lossy: bool  # the decode is compressed again, losing more
    alpha: bool  # the format can hold an alpha plane


OUTPUT_FORMATS = {
    ".png": OutputFormat("PNG", {}, lossy=False, alpha=True),
    ".tif": OutputFormat("TIFF", {}, lossy=False, alpha=True),
    ".tiff": OutputFormat("TIFF", {}, lossy=False, alpha=True),
    ".bmp": OutputFormat("BMP", {}, lossy=False, alpha=True),
    ".webp": OutputFormat("WEBP", {"lossless": True}, lossy=False, alpha=True),
    ".jpg": OutputFormat("JPEG", {"quality": 95}, lossy=True, alpha=False),
    ".jpeg": OutputFormat("JPEG", {"quality": 95}, lossy=True, alpha=False),
}


def output_format(path: Path) -> OutputFormat:
    """The format a decode is written in, from the output's suffix (PNG on standard output); an unknown
    suffix is refused."""
    suffix = ".png" if path == STDIO else path.suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        known = ", ".join(OUTPUT_FORMATS)
        raise ValueError(f"cannot tell an image format from {suffix or 'no suffix'!r}; use one of {known}")
    return OUTPUT_FORMATS[suffix]


def write_atomic(path: Path, data: bytes, source: Path, force: bool, named: bool = False) -> None:
    """Write via a temporary file in the same folder and a rename, so no half-written file remains.

    `named`: the user chose this path with -o. An existing file there was perhaps not written by us,
    so the refusal does not suggest --force.
    """
    check_free(path, source, force, named)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:  # name the output the user asked for, not our temporary file
        raise OSError(e.errno, e.strerror, str(path)) from None
    try:
        os.chmod(tmp, _FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        if force:
            os.replace(tmp, path)
        else:
            # link() refuses an existing target, so a file that appeared meanwhile is not replaced.
            os.link(tmp, path)
    except FileExistsError:
        raise OutputExistsError(_exists_message(path, named)) from None
    except OSError:
        # Some file systems have no hard links: fall back to check-then-rename.
        if path.exists():
            raise OutputExistsError(_exists_message(path, named)) from None
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def check_free(path: Path, source: Path, force: bool, named: bool = False) -> None:
    """Raise OutputExistsError unless `path` may be written (checked early, before slow work)."""
    if path.exists() and os.path.samefile(path, source):
        raise OutputExistsError(f"{path} is the input itself; choose another output with -o")
    if path.exists() and not force:
        raise OutputExistsError(_exists_message(path, named))


def _exists_message(path: Path, named: bool) -> str:
    if named:
        return f"{path} exists and was left alone; name another output with -o"
    return f"{path} exists; use --force to replace it, or -o to name another output"
