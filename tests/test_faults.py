"""Faults around the files, as an unlucky user meets them: full disks, odd outputs, pipes.

Each test runs without root; the real full disk (a tiny tmpfs) is tried only where it can be mounted.
"""

import io
import os
import resource
import signal
import stat
import subprocess
import sys
import threading
import time
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
    assert runner.invoke(main, ["compress", str(photo), "-o", str(path), "-q", "100"]).exit_code == 0
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


def test_without_unnamed_files_a_failed_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    """Where O_TMPFILE is missing (macOS, some file systems) the temporary name is removed too."""
    monkeypatch.setattr(files, "_unnamed_file", lambda folder: None)
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, limits[1]))
    try:
        for force in (False, True):
            with pytest.raises(OSError, match="big.bin"):
                files.write_atomic(tmp_path / "big.bin", b"x" * 100_000, tmp_path / "in.png", force=force)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
    assert list(tmp_path.iterdir()) == []
    files.write_atomic(tmp_path / "ok.bin", b"fits", tmp_path / "in.png", force=False)
    assert [p.name for p in tmp_path.iterdir()] == ["ok.bin"]


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
    result = _cli(["compress", str(small), str(photo), "-o", f"{out}/", "-q", "100"], fsize=3000)
    assert result.returncode == 1
    assert f"cannot write {out / 'photo.cae'}: file too large" in result.stderr.decode()
    assert sorted(p.name for p in out.iterdir()) == ["small.cae"]
    assert runner.invoke(main, ["decompress", str(out / "small.cae")]).exit_code == 0


def test_force_on_a_failing_write_names_the_real_cause_and_keeps_the_old_file(tmp_path, photo, cae):
    old = cae.read_bytes()
    result = _cli(["compress", str(photo), "-o", str(cae), "--force", "-q", "0"], fsize=100)
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
    result = runner.invoke(main, ["compress", str(photo), "-o", str(fifo), "--force", "-q", "100"])
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
        result = _cli(["compress", str(photo), "-o", str(disk / "photo.cae"), "-q", "100"])
        assert result.returncode == 0, result.stderr
        assert (disk / "photo.cae").read_bytes() == cae.read_bytes()  # a file that fits is whole
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def _group(pgid: int) -> list[int]:
    """The live processes of a process group, from /proc (zombies do not count)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def test_killing_the_main_process_ends_its_workers(tmp_path):
    """kill -9 of cae-codec while two workers code: within seconds no process of the run is left,
    no temporary file, and every output there is whole."""
    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray(rng.integers(0, 256, (384, 384, 3), dtype=np.uint8)).save(tmp_path / f"n{i}.png")
    out = tmp_path / "out"
    command = [sys.executable, "-m", "cae_codec", "compress", *map(str, sorted(tmp_path.glob("*.png")))]
    run = subprocess.Popen([*command, "-o", f"{out}/", "--workers", "2"], start_new_session=True)
    deadline = time.monotonic() + 60
    while len(_group(run.pid)) < 3 and time.monotonic() < deadline:  # the main process and 2 workers
        time.sleep(0.2)
    assert len(_group(run.pid)) >= 3, "the workers never started"
    time.sleep(1.0)
    os.kill(run.pid, signal.SIGKILL)
    run.wait()
    deadline = time.monotonic() + 10
    while _group(run.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _group(run.pid) == []
    assert _leftovers(out) == []
    for cae in out.glob("*.cae"):  # whatever was written is whole
        assert CliRunner().invoke(main, ["info", str(cae)]).exit_code == 0


def test_a_fifo_and_a_process_substitution_are_inputs_like_files(tmp_path, cae, runner):
    fifo = tmp_path / "in.cae"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_bytes(cae.read_bytes()), daemon=True)
    writer.start()
    result = _cli(["decompress", str(fifo), "-o", str(tmp_path / "back.png")])
    assert result.returncode == 0, result.stderr
    with Image.open(tmp_path / "back.png") as image:
        assert image.size == (PHOTO_SIDE, PHOTO_SIDE)
    reader, writer_fd = os.pipe()  # what bash's <(cat x.cae) hands over: /dev/fd/N of a pipe
    feeder = threading.Thread(target=lambda: (os.write(writer_fd, cae.read_bytes()), os.close(writer_fd)))
    feeder.start()
    result = _cli(["decompress", f"/dev/fd/{reader}", "-o", str(tmp_path / "sub.png")], pass_fds=(reader,))
    os.close(reader)
    assert result.returncode == 0, result.stderr


def _limited_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (3 * 2**30, 3 * 2**30))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["compress", "-", "-o", "x.cae"], "input is larger than an image of 134,217,728 pixels can be"),
        (["decompress", "-", "-o", "x.png"], "not a .cae file"),
        (["info", "/dev/zero"], "not a .cae file"),
    ],
)
def test_endless_input_is_refused_within_bounded_memory(tmp_path, args, message):
    with open("/dev/zero", "rb") as zero:
        result = subprocess.run(
            [sys.executable, "-m", "cae_codec", *args],
            stdin=zero,
            capture_output=True,
            text=True,
            preexec_fn=_limited_memory,
            cwd=tmp_path,
            timeout=120,
        )
    assert result.returncode == 1 and message in result.stderr and "Traceback" not in result.stderr


def test_an_endless_cae_stream_with_a_sound_header_is_cut_at_its_limit(cae):
    from cae_codec.container import FormatError, max_file_bytes, read_limited

    class Endless(io.RawIOBase):
        def readinto(self, buffer):
            buffer[:] = b"\0" * len(buffer)
            return len(buffer)

    stream = io.BufferedReader(io.BytesIO(cae.read_bytes()[:16]))
    limit = max_file_bytes(PHOTO_SIDE, PHOTO_SIDE)
    with pytest.raises(FormatError, match=f"more than the {limit:,} bytes"):
        read_limited(io.BufferedReader(_Chain(stream, Endless())))


class _Chain(io.RawIOBase):
    """One stream, then another."""

    def __init__(self, *streams):
        self.streams = list(streams)

    def readable(self):
        return True

    def readinto(self, buffer):
        while self.streams:
            n = self.streams[0].readinto(buffer)
            if n:
                return n
            self.streams.pop(0)
        return 0


def test_a_huge_sparse_file_is_refused_before_it_is_read(tmp_path, cae):
    huge = tmp_path / "huge.cae"
    huge.write_bytes(cae.read_bytes()[:16])
    os.truncate(huge, 20 * 2**30)
    started = time.monotonic()
    for args in (["info", str(huge)], ["decompress", str(huge), "-o", str(tmp_path / "h.png")]):
        result = CliRunner().invoke(main, args)
        assert (
            result.exit_code == 1
            and "21,474,836,480 bytes is more than a 160x160 file may take" in result.stderr
        )
    assert time.monotonic() - started < 5


@pytest.mark.parametrize(
    ("width", "height", "segment"),
    [(2**24, 1, 0), (1, 2**24, 0), (2**24, 1, 1024), (4096, 4096, 64)],
)
def test_crafted_headers_are_refused_before_any_allocation(width, height, segment):
    """A 1-pixel row of 2^24 pixels passes width x height but pads to 16 rows or more; a 64-pixel
    segment side on 4096x4096 asks for 4,096 segments."""
    import cae_codec
    import cae_codec.codec  # noqa: F401  (torch loaded first: what is timed is the refusal)
    from cae_codec.container import CODERS, MAGIC, MODES, SEGMENTED, VERSION, put_varint, reseal

    version = SEGMENTED if segment else VERSION
    fields = bytes(
        [MAGIC >> 4, (MAGIC & 0xF) << 4 | version, MODES.index("RGB") << 6 | CODERS.index("range") << 4]
    )
    fields += put_varint(5) + put_varint(width - 1) + put_varint(height - 1)
    fields += put_varint(segment) if segment else b""
    data = reseal(fields + b"\0\0" + b"\0" * 64)  # a sound checksum over a crafted header
    started = time.monotonic()
    with pytest.raises(cae_codec.FormatError):
        cae_codec.decompress(data)
    assert time.monotonic() - started < 0.5


def test_pipes_that_close_early_end_quietly(tmp_path, runner):
    """The decode (about 0.5 MB as PNG) is larger than a pipe holds, so the writer sees head leave."""
    noisy = tmp_path / "noisy.png"
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (400, 400, 3), dtype=np.uint8)).save(noisy)
    cae = tmp_path / "noisy.cae"
    assert runner.invoke(main, ["compress", str(noisy), "-o", str(cae), "-q", "100"]).exit_code == 0
    command = f"{sys.executable} -m cae_codec decompress {cae} -o - | head -c 10 > {tmp_path / 'ten'}"
    result = subprocess.run(
        ["bash", "-c", f"{command}; echo ${{PIPESTATUS[0]}}"], capture_output=True, text=True
    )
    assert result.stdout.strip() == "141" and result.stderr == ""
    assert (tmp_path / "ten").stat().st_size == 10


def test_a_full_or_closed_report_channel_is_one_line(tmp_path, photo, cae):
    with open("/dev/full", "w") as full:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "cae_codec",
                "compress",
                str(photo),
                "-o",
                str(tmp_path / "a.cae"),
                "--json",
            ],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
        )
    assert result.returncode == 1
    assert result.stderr == "cae-codec: cannot write reports to standard output: no space left on device\n"
    assert (tmp_path / "a.cae").is_file()  # the file itself was written
    closed = f"{sys.executable} -m cae_codec decompress {cae} -o - >&-"
    result = subprocess.run(["bash", "-c", closed], capture_output=True, text=True)
    assert result.returncode == 1 and result.stderr.strip().endswith(
        "standard output is closed: -o - has nowhere to write"
    )
    assert "Traceback" not in result.stderr


def test_a_folder_that_cannot_be_made_is_one_line(tmp_path, photo, runner):
    (tmp_path / "tiny.cae").write_bytes(b"x")
    result = runner.invoke(main, ["compress", str(photo), "-o", f"{tmp_path / 'tiny.cae'}/"])
    assert result.exit_code == 2 and "is a file" in result.stderr and "Traceback" not in result.stderr


def test_the_pillow_plugin_opens_a_huge_file_by_its_header(tmp_path, cae):
    """Image.open reads the header alone; load() stops at the most a file of that size may take."""
    import cae_codec.pillow  # noqa: F401

    huge = tmp_path / "huge.cae"
    huge.write_bytes(cae.read_bytes()[:16])
    os.truncate(huge, 20 * 2**30)
    with Image.open(huge) as image:
        assert image.size == (PHOTO_SIDE, PHOTO_SIDE)
        with pytest.raises(OSError, match="more than the"):
            image.load()


def test_a_header_claiming_more_than_its_latent_can_hold_is_refused_at_once():
    """A small file's payload under a header that claims 8192 x 8192 pixels: its sections cannot hold
    that latent at the best rate either coder could reach, so nothing is decoded or allocated."""
    from dataclasses import replace

    import cae_codec
    from cae_codec.container import pack, unpack

    array = np.random.default_rng(0).integers(0, 256, (24, 24, 3), dtype=np.uint8)
    for coder in ("zstd", "range"):
        f = unpack(cae_codec.compress(array, quality=0, coder=coder))
        forged = pack(replace(f, header=replace(f.header, width=8192, height=8192)))
        started = time.monotonic()
        with pytest.raises(cae_codec.FormatError, match="needs more latent than its"):
            cae_codec.decompress(forged)
        assert time.monotonic() - started < 0.5


def test_thin_images_are_judged_by_their_folded_size():
    """4,200,000 x 1 pads to 4,200,000 x 16 unfolded (67 Mpx) but folds into a 4.2 Mpx image: the
    limit counts what the networks would run on."""
    from cae_codec import codec

    line = np.zeros((1, 4_200_000, 3), dtype=np.uint8)
    source = codec.prepare(line, max_pixels=6_000_000)
    assert source.fold > 1
    with pytest.raises(ValueError, match="over the limit"):
        codec.prepare(line, max_pixels=4_000_000)


def test_the_default_limit_admits_cameras_and_panoramas():
    from cae_codec import codec, config

    for width, height in ((12000, 3000), (9504, 6336), (11648, 8736)):  # a panorama, 61 and 100 MP
        codec._check_pixels(width, height, config.DEFAULT_MAX_PIXELS)


def test_a_fifo_among_inputs_is_read_once_in_order(tmp_path, photo):
    """Planning the workers never opens a FIFO (it would block, or use up the stream), and such
    inputs keep the run in this process, which can read them."""
    fifo = tmp_path / "q.png"
    os.mkfifo(fifo)
    feeder = threading.Thread(target=lambda: fifo.write_bytes(photo.read_bytes()))
    feeder.start()
    result = _cli(["compress", str(photo), str(fifo), "-o", str(tmp_path / "out") + "/", "--workers", "2"])
    feeder.join(timeout=10)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["photo.cae", "q.cae"]


@pytest.mark.parametrize(("sig", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupt_stops_a_worker_batch_at_once(tmp_path, sig, status):
    """SIGINT or SIGTERM to the main process of a two-worker batch: the run ends within a couple of
    seconds with 130 or 143, says what was done, every output written is whole, no temporary file
    is left, and no worker or leak warning outlives it."""
    sources = tmp_path / "in"
    sources.mkdir()
    for i in range(40):
        Image.fromarray(sample_image(320, 240, "RGB", seed=i)).save(sources / f"{i:02d}.png")
    out = tmp_path / "out"
    process = subprocess.Popen(
        [sys.executable, "-m", "cae_codec", "compress", *sorted(map(str, sources.iterdir())),
         "-o", str(out) + "/", "--workers", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (out.exists() and any(out.glob("*.cae"))):
        time.sleep(0.1)
    process.send_signal(sig)
    sent = time.monotonic()
    _, stderr = process.communicate(timeout=30)
    assert time.monotonic() - sent < 3.0
    assert process.returncode == status, stderr
    assert "interrupted:" in stderr and "Traceback" not in stderr and "leaked" not in stderr
    written = sorted(out.glob("*.cae"))
    assert 0 < len(written) < 40 and _leftovers(out) == []
    import cae_codec

    for path in written:
        cae_codec.read_header(path.read_bytes())  # whole: its checksum holds
    time.sleep(1.0)  # workers end with their parent (they watch it every 0.25 s)
    workers = subprocess.run(["pgrep", "-f", "spawn_main"], capture_output=True, text=True)
    assert workers.stdout == ""
