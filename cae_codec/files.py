"""File-level helpers for the command line: output naming, output formats and atomic, no-clobber writes.

The naming rule that keeps originals safe: a lossy decode is never written under a name the
original could have. `decompress photo.cae` writes `photo.decoded.png`, never `photo.png`, and
--force replaces only files of our own naming scheme or a file the user named with -o.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import secrets
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

COMPRESSED_SUFFIX = ".cae"
DECODED_SUFFIX = ".decoded.png"
STDIO = Path("-")  # as an input: standard input; as -o: standard output (a file named - needs its full path)


class OutputExistsError(Exception):
    """The output file exists and overwriting was not asked for. `forceable`: --force would replace
    it (a file of our own naming), so a run may say so once for all such files."""

    def __init__(self, message: str, forceable: bool = False) -> None:
        super().__init__(message)
        self.forceable = forceable


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
        _check_name(path)
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
    for out in outs:
        _check_name(out)
    seen: dict[Path, Path] = {}
    for source, out in zip(inputs, outs, strict=True):
        key = Path(os.path.abspath(out))
        if key in seen:
            raise ValueError(f"{seen[key]} and {source} would both write {out}; use -o with separate runs")
        seen[key] = source
    return Plan(outs, named=False, folder=folder)


def _check_name(path: Path) -> None:
    """A name the file system cannot hold (a part over NAME_MAX bytes, usually 255) is refused
    before any work, in one line."""
    limit = 255
    with contextlib.suppress(OSError, ValueError, AttributeError):
        limit = os.pathconf(path.absolute().parent if path.absolute().parent.exists() else "/", "PC_NAME_MAX")
    for part in path.parts:
        if len(os.fsencode(part)) > limit:
            raise ValueError(
                f"name {part[:40]}... is {len(os.fsencode(part))} bytes; the file system takes {limit}"
            )


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


# PNG at zlib level 3, not Pillow's 6: a 14 MP decode saves in 1.3 s instead of 3.2, 0.6 % larger.
OUTPUT_FORMATS = {
    ".png": OutputFormat("PNG", {"compress_level": 3}, lossy=False, alpha=True),
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
    """Put `data` at `path` whole or not at all: written, flushed and fsynced under no name (or a
    temporary one), then linked or renamed into place. A device or FIFO there is written through.

    `named`: the user chose this path with -o. An existing file there was perhaps not written by us,
    so the refusal does not suggest --force. Every OSError names `path`, never a temporary file.
    """
    try:
        if check_free(path, source, force, named):
            _write_through(path, data)
        else:
            _publish(path, data, force)
    except FileExistsError:  # appeared since check_free: never replaced without --force
        raise OutputExistsError(_exists_message(path, named), forceable=not named) from None
    except OSError as e:
        raise OSError(e.errno, e.strerror or str(e), str(path)) from None


def check_free(path: Path, source: Path, force: bool, named: bool = False) -> bool:
    """Raise OutputExistsError unless `path` may be written (checked early, before slow work).

    True when `path` is a device, FIFO or socket, written through rather than replaced (as cp does).
    """
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return False
    except OSError as e:
        raise OSError(e.errno, e.strerror, str(path)) from None
    if stat.S_ISLNK(mode):
        raise OutputExistsError(f"{path} is a symbolic link and was left alone; name another output with -o")
    if stat.S_ISDIR(mode):
        raise OutputExistsError(f"{path} is a folder; name another output with -o")
    if not stat.S_ISREG(mode):
        return True
    if source.exists() and os.path.samefile(path, source):
        raise OutputExistsError(f"{path} is the input itself; choose another output with -o")
    if not force:
        raise OutputExistsError(_exists_message(path, named), forceable=not named)
    return False


def _write_through(path: Path, data: bytes) -> None:
    """Write into an existing device or FIFO; never create or truncate a regular file here."""
    fd = os.open(path, os.O_WRONLY | os.O_NOCTTY)
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):  # replaced by a regular file since it was checked
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(path))
        write_all(fd, data)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes | memoryview) -> None:
    """os.write until every byte is out; a write that makes no progress is an error, not a loop."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:
            raise OSError(errno.EIO, "short write")
        view = view[written:]


# File systems without hard links answer link() with one of these; then a rename takes its place.
_NO_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EMLINK, errno.EXDEV}


def _publish(path: Path, data: bytes, force: bool) -> None:
    """Write a new file's bytes under no name when the system allows it (Linux's O_TMPFILE), so a
    process killed at any moment leaves nothing; else under a temporary name removed on failure."""
    unnamed = _unnamed_file(path.parent)
    if unnamed is not None:
        try:
            write_all(unnamed, data)
            os.fsync(unnamed)
            if _link_unnamed(unnamed, path, force):
                return
        finally:
            os.close(unnamed)

    def write_named(tmp: str) -> None:
        with open(tmp, "xb") as f:
            write_all(f.fileno(), data)
            os.fsync(f.fileno())

    _rename_into_place(write_named, path, force)


def _link_unnamed(fd: int, path: Path, force: bool) -> bool:
    """Give the unnamed file `fd` the name `path`; False where this system cannot (no /proc, no links)."""
    try:
        proc = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return False
    # A directory descriptor makes os.link call linkat(), which follows /proc's link to the file.
    link = functools.partial(os.link, str(fd), src_dir_fd=proc, follow_symlinks=True)
    try:
        try:
            link(path)
            return True
        except FileExistsError:
            if not force:
                raise
        _rename_into_place(link, path, force)
        return True
    except OSError as e:
        if isinstance(e, FileExistsError) or e.errno not in _NO_LINKS | {errno.ENOENT}:
            raise
        return False
    finally:
        os.close(proc)


def _unnamed_file(folder: Path) -> int | None:
    """A descriptor of a new file in `folder` that has no name yet, or None where that is not had."""
    if not hasattr(os, "O_TMPFILE"):
        return None
    try:
        return os.open(folder, os.O_TMPFILE | os.O_WRONLY, 0o666)  # the umask applies, as for open()
    except OSError as e:
        if e.errno in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.ENOSYS):
            return None  # this file system or kernel has no O_TMPFILE
        raise


def _temporary_name(path: Path, pid: int, token: str) -> str:
    return str(path.parent / f".{path.name}.{pid}-{token}.tmp")


def remove_stale(path: Path) -> list[str]:
    """Remove temporary files of `path` that a killed run of ours left (kill -9 between naming a
    file and renaming it into place): ours by their name, our user's, and their process is gone."""
    removed = []
    prefix = f".{path.name}."
    with contextlib.suppress(OSError):
        for entry in os.scandir(path.parent):
            name = entry.name
            if not (name.startswith(prefix) and name.endswith(".tmp")):
                continue
            pid, _, token = name[len(prefix) : -len(".tmp")].partition("-")
            if not (pid.isdigit() and len(token) == 8 and _gone(int(pid))):
                continue
            info = entry.stat(follow_symlinks=False)
            if stat.S_ISREG(info.st_mode) and info.st_uid == os.getuid():
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed.append(name)
    return removed


def _gone(pid: int) -> bool:
    """Whether no process has this id (a process of another user still counts as there)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


def _rename_into_place(make: Callable[[str], None], path: Path, force: bool) -> None:
    """`make` a temporary file beside `path`, then put it in place: replacing (force) or not. The
    temporary name holds our process id, so a later run can tell a stale one of ours (remove_stale)."""
    remove_stale(path)
    for _ in range(100):
        tmp = _temporary_name(path, os.getpid(), secrets.token_hex(4))
        try:
            make(tmp)
        except FileExistsError:  # the name is taken, by someone else: try another
            continue
        except BaseException:  # ours, half-written (a full disk, Ctrl-C): removed
            Path(tmp).unlink(missing_ok=True)
            raise
        break
    else:
        raise FileExistsError(errno.EEXIST, "no free temporary name", str(path))
    try:
        if force:
            os.replace(tmp, path)
            return
        try:
            os.link(tmp, path)  # link() refuses an existing target, so nothing is replaced
        except OSError as e:
            if e.errno not in _NO_LINKS:
                raise
            if os.path.lexists(path):
                raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(path)) from None
            os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _exists_message(path: Path, named: bool) -> str:
    if named:
        return f"{path} exists and was left alone; name another output with -o"
    return f"{path} exists; use --force to replace it, or -o to name another output"
