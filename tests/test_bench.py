import json

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import at_level

import cae_codec
from cae_codec import metrics
from cae_codec.cli import main


def run_bench(archive, out, *options):
    return CliRunner().invoke(
        main, ["bench", "cifar10", "--data-dir", str(archive), "--out", str(out), *options]
    )


@pytest.fixture
def bench_run(tiny_cifar, tmp_path):
    archive, batches = tiny_cifar
    out = tmp_path / "bench"
    result = run_bench(archive, out, "--limit", "3", "--levels", "1,6", "--coders", "auto,zstd,range")
    assert result.exit_code == 0, result.output
    return out, batches["test_batch"][:3], result


def test_bench_writes_every_output(bench_run):
    out, _, result = bench_run
    assert {p.name for p in out.iterdir()} == {
        "results.json",
        "results.csv",
        "results.md",
        "rd.png",
        "grid.png",
    }
    rows = json.loads((out / "results.json").read_text())["points"]
    assert {r["codec"] for r in rows} == {"cae-codec", "jpeg", "jpeg-payload", "webp"}
    keys = {
        "codec",
        "coder",
        "quality",
        "bpp",
        "psnr",
        "mse",
        "ssim",
        "entropy_bpp",
        "encode_ms",
        "decode_ms",
        "images",
    }
    assert all(keys <= set(r) for r in rows)
    assert "cae-codec/range vs webp: BD-rate" in result.output
    assert "cae-codec/zstd vs jpeg-payload: BD-rate" in result.output
    assert len((out / "results.csv").read_text().splitlines()) == len(rows) + 1
    table_lines = [line for line in result.stdout.splitlines() if not line.startswith("wrote ")]
    assert max(len(line) for line in table_lines) <= 100  # the stdout table fits 100 columns
    table = (out / "results.md").read_text()
    assert "| est.bpp |" in table and "| webp PSNR@bpp |" in table  # the full table


def test_bench_by_default_measures_compress_default_against_jpeg_and_webp(tiny_cifar, tmp_path):
    archive, _ = tiny_cifar
    result = run_bench(archive, tmp_path / "b", "--limit", "2", "--levels", "3")
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "b" / "results.json").read_text())["points"]
    assert {(r["codec"], r["coder"]) for r in rows} == {
        ("cae-codec", "auto"),
        ("jpeg", None),
        ("jpeg-payload", None),
        ("webp", None),
    }
    bad = run_bench(archive, tmp_path / "c", "--coders", "huffman")
    assert bad.exit_code == 2 and "choose from auto, zstd, range" in bad.output


def test_bench_figures_agree_with_our_own_measurement(bench_run):
    out, images, _ = bench_run
    rows = json.loads((out / "results.json").read_text())["points"]
    cae = next(r for r in rows if r["codec"] == "cae-codec" and r["coder"] == "zstd" and r["level"] == 6)
    ranged = next(r for r in rows if r["codec"] == "cae-codec" and r["coder"] == "range" and r["level"] == 6)
    assert ranged["psnr"] == cae["psnr"]  # same integers, other coder (its rate depends on the data)
    auto = next(r for r in rows if r["codec"] == "cae-codec" and r["coder"] == "auto" and r["level"] == 6)
    defaults = [
        cae_codec.compress(image, quality=at_level(6)) for image in images
    ]  # the default coder is auto
    assert auto["bpp"] == pytest.approx(np.mean([8 * len(f) / 1024 for f in defaults]), abs=1e-9)
    assert auto["bpp"] <= min(cae["bpp"], ranged["bpp"]) and auto["psnr"] == cae["psnr"]
    files = [cae_codec.compress(image, quality=at_level(6), coder="zstd") for image in images]
    # Decoded as bench decodes them, in one batch: g_s runs in float, and oneDNN picks its kernels
    # by batch size, so a rare pixel may round one level apart from a decode alone.
    decoded = [np.asarray(image) for image in cae_codec.decompress_many(files)]
    assert cae["images"] == 3
    assert cae["bpp"] == pytest.approx(np.mean([8 * len(f) / 1024 for f in files]), abs=1e-9)
    expected_psnr = np.mean(
        [
            10 * np.log10(255**2 / np.mean((a.astype(float) - b) ** 2))
            for a, b in zip(images, decoded, strict=True)
        ]
    )
    assert cae["psnr"] == pytest.approx(expected_psnr, abs=1e-9)
    assert cae["ssim"] == pytest.approx(
        np.mean([metrics.ssim(a, b) for a, b in zip(images, decoded, strict=True)]), abs=1e-12
    )
    # The entropy estimate includes the header and must be within reach of the real file.
    assert 0.5 * cae["bpp"] < cae["entropy_bpp"] < 2 * cae["bpp"]
    q1 = next(r for r in rows if r["codec"] == "cae-codec" and r["coder"] == "zstd" and r["level"] == 1)
    assert q1["bpp"] < cae["bpp"] and q1["psnr"] < cae["psnr"]


def test_bench_refuses_non_empty_out_and_unknown_codecs(bench_run, tiny_cifar):
    out, _, _ = bench_run
    archive, _ = tiny_cifar
    result = CliRunner().invoke(main, ["bench", "cifar10", "--data-dir", str(archive), "--out", str(out)])
    assert result.exit_code != 0 and "not empty" in result.output
    result = CliRunner().invoke(main, ["bench", "cifar10", "--codecs", "gif"])
    assert result.exit_code != 0 and "unknown gif" in result.output


def test_bench_on_a_folder(tmp_path):
    from conftest import sample_image
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(sample_image(40, 24, "RGB", seed=i)).save(folder / f"{i}.png")
    (folder / "notes.txt").write_text("ignored")
    result = CliRunner().invoke(
        main, ["bench", str(folder), "--levels", "3", "--codecs", "jpeg", "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "o" / "results.json").read_text())["points"]
    assert {r["images"] for r in rows} == {2}


def test_bench_without_matplotlib_still_writes_tables(tiny_cifar, tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError("no matplotlib here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    archive, _ = tiny_cifar
    out = tmp_path / "nomatplotlib"
    result = run_bench(archive, out, "--limit", "2", "--levels", "2", "--codecs", "jpeg")
    assert result.exit_code == 0, result.output
    assert "pip install 'cae-codec[plot]'" in result.stderr
    assert {p.name for p in out.iterdir()} == {"results.json", "results.csv", "results.md", "grid.png"}
