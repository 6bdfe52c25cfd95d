"""File-level helpers for the command line: output naming and atomic, no-clobber writes."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # what open() would give; mkstemp alone gives 0600


class OutputExistsError(Exception):
    """The output file exists and overwriting was not asked for."""


def plan_outputs(inputs: list[Path], suffix: str, output: Path | None) -> list[Path]:
    """Where each input's result goes: beside it, at `output` (one input), or inside `output`."""
    if output is not None and (len(inputs) == 1 and not output.is_dir()):
        return [output]
    folder = output
    outs = [(folder / p.name if folder else p).with_suffix(suffix) for p in inputs]
    seen: dict[Path, Path] = {}
    for source, out in zip(inputs, outs, strict=True):
        key = Path(os.path.abspath(out))
        if key in seen:
            raise ValueError(f"{seen[key]} and {source} would both write {out}; use -o with separate runs")
        seen[key] = source
    return outs


def write_atomic(path: Path, data: bytes, source: Path, force: bool) -> None:
    """Write via a temporary file in the same folder and a rename, so no half-written file remains."""
    if path.exists() and os.path.samefile(path, source):
        raise OutputExistsError(f"{path} is the input itself; choose another output with -o")
    if path.exists() and not force:
        raise OutputExistsError(f"{path} exists; use --force to overwrite it")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
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
        raise OutputExistsError(f"{path} exists; use --force to overwrite it") from None
    except OSError:
        # Some file systems have no hard links: fall back to check-then-rename.
        if path.exists():
            raise OutputExistsError(f"{path} exists; use --force to overwrite it") from None
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
