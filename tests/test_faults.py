"""Faults around the files, as an unlucky user meets them: full disks, odd outputs, pipes.

Each test runs without root; the real full disk (a tiny tmpfs) is tried only where it can be mounted.
"""

import os
import resource
import stat
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import sample_image
from PIL import Image

from cae_codec import files
from cae_codec.cli import main

PHOTO_SIDE = 160  # a few tens of kilobytes as PNG and a few as .cae: larger than the limits below


@pytest.fixture
def runner():
    return CliRunner()


@pytest.fixture
def photo(tmp_path) -> Path:
    path = tmp_path / "photo.png"
    noisy = sample_image(PHOTO_SIDE, PHOTO_SIDE, "RGB", seed=1).astype(int)
    noisy += np.random.default_rng(2).integers(-40, 40, noisy.shape)
    Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(path)
    return path


@pytest.fixture
def cae(tmp_path, photo, runner) -> Path:
    path = tmp_path / "photo.cae"
    assert runner.invoke(main, ["compress", str(photo), "-o", str(path), "-q", "8"]).exit_code == 0
    return path


def _cli(args: list[str], fsize: int | None = None, **kwargs) -> subprocess.CompletedProcess:
    """cae-codec in a process of its own, its file writes capped at `fsize` bytes (RLIMIT_FSIZE)."""

    def limit() -> None:
        if fsize is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    command = [sys.executable, "-m", "cae_codec", *args]
    return subprocess.run(command, capture_output=True, preexec_fn=limit, timeout=120, **kwargs)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_a_write_that_fails_leaves_no_file_and_says_why(tmp_path):
    """The first defect: a failed write was renamed into place and reported as success."""
    out = tmp_path / "out"
    out.mkdir()
    target = out / "big.bin"
    resource_limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource_limits[1]))
    try:
        with pytest.raises(OSError, match="big.bin") as raised:
            files.write_atomic(target, b"x" * 100_000, tmp_path / "in.png", force=False)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, resource_limits)
    assert raised.value.strerror.lower() == "file too large"
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("kind", ["compress", "decompress"])
def test_cli_write_failures_are_one_line_and_leave_nothing(tmp_path, photo, cae, kind):
    source = photo if kind == "compress" else cae
    out = tmp_path / "out"
    out.mkdir()
    target = out / ("x.cae" if kind == "compress" else "x.png")
    result = _cli([kind, str(source), "-o", str(target)], fsize=1000)
    lines = result.stderr.decode().strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    assert lines[0] == f"cae-codec: {source}: cannot write {target}: file too large"
    assert result.stdout == b"" and list(out.iterdir()) == []


def test_batch_write_failures_fail_alone(tmp_path, photo, runner):
    """Of a batch into one folder, the files that fit are written whole and the others not at all."""
    small = tmp_path / "small.png"
    Image.fromarray(sample_image(16, 16, "RGB")).save(small)
    out = tmp_path / "out"
    result = _cli(["compress", str(small), str(photo), "-o", f"{out}/", "-q", "8"], fsize=3000)
    assert result.returncode == 1
    assert f"cannot write {out / 'photo.cae'}: file too large" in result.stderr.decode()
    assert sorted(p.name for p in out.iterdir()) == ["small.cae"]
    assert runner.invoke(main, ["decompress", str(out / "small.cae")]).exit_code == 0


def test_force_on_a_failing_write_names_the_real_cause_and_keeps_the_old_file(tmp_path, photo, cae):
    old = cae.read_bytes()
    result = _cli(["compress", str(photo), "-o", str(cae), "--force", "-q", "1"], fsize=100)
    assert result.returncode == 1
    assert "file too large" in result.stderr.decode() and "exists" not in result.stderr.decode()
    assert cae.read_bytes() == old and _leftovers(tmp_path) == []


def test_an_output_that_is_a_folder_is_named_as_such(tmp_path, photo, runner):
    (tmp_path / "photo.cae").mkdir()
    for extra in ([], ["--force"]):
        result = runner.invoke(main, ["compress", str(photo), *extra])
        assert result.exit_code == 1
        assert "photo.cae is a folder" in result.stderr and "--force" not in result.stderr
    assert (tmp_path / "photo.cae").is_dir()


def test_a_symbolic_link_is_never_replaced(tmp_path, photo, runner):
    precious = tmp_path / "precious.png"
    precious.write_bytes(b"precious")
    link = tmp_path / "photo.cae"
    link.symlink_to(precious)
    result = runner.invoke(main, ["compress", str(photo), "--force"])
    assert result.exit_code == 1 and "symbolic link" in result.stderr
    assert link.is_symlink() and precious.read_bytes() == b"precious"


def test_a_device_is_written_through_not_replaced(tmp_path, photo, runner):
    result = runner.invoke(main, ["compress", str(photo), "-o", os.devnull])
    assert result.exit_code == 0, result.output
    assert stat.S_ISCHR(os.stat(os.devnull).st_mode)


def test_a_fifo_output_is_written_through_even_with_force(tmp_path, photo, cae, runner):
    fifo = tmp_path / "pipe.cae"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)
    reader.start()
    result = runner.invoke(main, ["compress", str(photo), "-o", str(fifo), "--force", "-q", "8"])
    reader.join(timeout=30)
    assert result.exit_code == 0, result.output
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    assert received == [cae.read_bytes()]


def test_a_real_full_disk(tmp_path, photo, cae):
    """A 32 KiB tmpfs: the decode (about 63 KB as PNG) fails whole, and nothing is left there."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=32k", "tmpfs", str(disk)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        target = disk / "photo.png"
        result = _cli(["decompress", str(cae), "-o", str(target)])
        assert result.returncode == 1
        assert "no space left on device" in result.stderr.decode()
        assert list(disk.iterdir()) == []
        result = _cli(["compress", str(photo), "-o", str(disk / "photo.cae"), "-q", "8"])
        assert result.returncode == 0, result.stderr
        assert (disk / "photo.cae").read_bytes() == cae.read_bytes()  # a file that fits is whole
    finally:
        subprocess.run(["umount", str(disk)], check=True)
