import os
from pathlib import Path

import pytest

from cae_codec import files


def test_plan_outputs_beside_named_and_in_folder(tmp_path):
    a, b = tmp_path / "a.png", tmp_path / "sub" / "b.jpg"
    assert files.plan_outputs([a], ".cae", None) == files.Plan([tmp_path / "a.cae"], named=False)
    assert files.plan_outputs([a], ".cae", tmp_path / "x.bin") == files.Plan([tmp_path / "x.bin"], named=True)
    plan = files.plan_outputs([a, b], ".cae", f"{tmp_path / 'out'}/")
    assert plan.targets == [tmp_path / "out/a.cae", tmp_path / "out/b.cae"] and not plan.named
    assert plan.folder == tmp_path / "out"
    with pytest.raises(ValueError, match="both write"):
        files.plan_outputs([a, tmp_path / "a.jpg"], ".cae", None)


def test_a_decode_is_never_named_like_its_original(tmp_path):
    for name in ("photo.png", "photo.cae", "photo", "photo.decoded.png"):
        source = tmp_path / name
        (target,) = files.plan_outputs([source], files.DECODED_SUFFIX, None).targets
        assert target != source and target.name.endswith(".decoded.png")
    assert files.plan_outputs([tmp_path / "photo.cae"], files.DECODED_SUFFIX, None).targets == [
        tmp_path / "photo.decoded.png"
    ]


def test_interrupted_write_leaves_nothing_behind(tmp_path, monkeypatch):
    source = tmp_path / "in.png"
    source.write_bytes(b"x")
    target = tmp_path / "out.cae"

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # as if Ctrl-C arrived while the file was being put in place

    monkeypatch.setattr(os, "link", crash)
    with pytest.raises(KeyboardInterrupt):
        files.write_atomic(target, b"data", source, force=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png"]


def test_write_atomic_respects_force_and_permissions(tmp_path):
    source = tmp_path / "in.png"
    source.write_bytes(b"x")
    target = tmp_path / "out.cae"
    files.write_atomic(target, b"one", source, force=False)
    with pytest.raises(files.OutputExistsError):
        files.write_atomic(target, b"two", source, force=False)
    files.write_atomic(target, b"two", source, force=True)
    assert target.read_bytes() == b"two"
    assert target.stat().st_mode & 0o777 == 0o666 & ~_umask()
    with pytest.raises(files.OutputExistsError, match="input itself"):
        files.write_atomic(source, b"y", source, force=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_no_temporary_files_after_success(tmp_path):
    source = tmp_path / "in.png"
    source.write_bytes(b"x")
    files.write_atomic(tmp_path / "o.cae", b"z", source, force=False)
    assert not [p for p in Path(tmp_path).iterdir() if p.name.endswith(".tmp")]


def test_a_temporary_left_by_a_killed_run_is_removed_by_the_next_write(tmp_path):
    """kill -9 between naming a temporary file and renaming it (the --force path) leaves one; the
    next write of that output removes it, having proven it ours: our name, our user, a dead process."""
    import subprocess
    import sys

    from cae_codec import files

    out = tmp_path / "a.cae"
    out.write_bytes(b"old")
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    stale = Path(files._temporary_name(out, int(dead.stdout), "0badcafe"))
    stale.write_bytes(b"half")
    alive = Path(files._temporary_name(out, os.getpid(), "12345678"))  # a run still going: kept
    alive.write_bytes(b"busy")
    other = tmp_path / ".a.cae.notes.tmp"  # not of our naming: kept
    other.write_bytes(b"x")
    files.write_atomic(out, b"new", tmp_path / "a.png", force=True)
    assert out.read_bytes() == b"new"
    assert not stale.exists() and alive.exists() and other.exists()
