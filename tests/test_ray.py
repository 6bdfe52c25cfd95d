"""Bulk compression on Ray (cae-codec[ray]; the test extra installs it): same files as the plain CLI."""

import json

import pytest
from click.testing import CliRunner
from conftest import sample_image
from PIL import Image

from cae_codec.cli import main


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def test_ray_writes_the_same_files_reports_failures_and_skips_on_rerun(local_ray, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(5):
        Image.fromarray(sample_image(40 + i, 30, "RGB", seed=i)).save(inputs / f"p{i}.png")
    (inputs / "bad.png").write_bytes(b"not an image")
    files = sorted(str(p) for p in inputs.iterdir())
    runner = CliRunner()
    on_ray = runner.invoke(main, ["compress", *files, "-o", f"{tmp_path}/ray/", "--engine", "ray", "--json"])
    assert on_ray.exit_code == 1  # the corrupt file failed; the others were written
    records = [json.loads(line) for line in on_ray.stdout.splitlines()]
    assert [r["input"] for r in records] == files  # one record per file, in input order
    assert records[0]["error"] == "not an image file, or a format Pillow cannot read"
    local = runner.invoke(main, ["compress", *files[1:], "-o", f"{tmp_path}/local/", "--quiet"])
    assert local.exit_code == 0, local.output
    for i in range(5):
        assert (tmp_path / "ray" / f"p{i}.cae").read_bytes() == (
            tmp_path / "local" / f"p{i}.cae"
        ).read_bytes()
    again = runner.invoke(main, ["compress", *files[1:], "-o", f"{tmp_path}/ray/", "--engine", "ray"])
    assert again.exit_code == 0 and again.stdout.count("skipped, the output exists") == 5
    assert again.stderr == ""  # Ray's own notes (plans, deprecations, core_worker lines) stay quiet


def test_process_file_is_what_each_worker_runs(tmp_path):
    """Decoding, refusal and skipping, without a cluster: the function the Ray workers call."""
    from cae_codec import bulk

    source = tmp_path / "a.png"
    Image.fromarray(sample_image(20, 20, "RGB")).save(source)
    job = bulk.Job("compress", quality=2)
    done = bulk.process_file(source, tmp_path / "a.cae", job, force=False, named=False)
    assert done["quality"] == 2 and (tmp_path / "a.cae").exists()
    skipped = bulk.process_file(source, tmp_path / "a.cae", job, False, False)
    assert skipped["skipped"] is True and skipped["reason"] == "the output exists"
    back = bulk.process_file(
        tmp_path / "a.cae", tmp_path / "a.decoded.png", bulk.Job("decompress"), False, False
    )
    assert back["width"] == 20 and Image.open(tmp_path / "a.decoded.png").size == (20, 20)
    lost = bulk.process_file(tmp_path / "missing.png", tmp_path / "m.cae", job, False, False)
    assert lost["error"] == "no such file or directory"


def test_engine_options_are_checked(tmp_path):
    runner = CliRunner()
    assert "needs --engine ray" in runner.invoke(main, ["compress", "a.png", "--address", "x:1"]).output
    piped = runner.invoke(main, ["compress", "-", "-o", "-", "--engine", "ray"], input=b"")
    assert piped.exit_code == 2 and "not standard streams" in piped.output


def test_without_ray_the_option_says_how_to_install_it(monkeypatch):
    import builtins

    real = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    result = CliRunner().invoke(main, ["compress", "a.png", "--engine", "ray"])
    assert result.exit_code == 2 and "pip install 'cae-codec[ray]'" in result.output
