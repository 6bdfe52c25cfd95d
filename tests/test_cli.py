import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import sample_image
from PIL import Image

import cae_codec
from cae_codec import weights
from cae_codec.cli import main


@pytest.fixture
def runner():
    return CliRunner()


@pytest.fixture
def png(tmp_path):
    path = tmp_path / "img.png"
    Image.fromarray(sample_image(40, 30, "RGB")).save(path)
    return path


def test_compress_then_decompress_beside_input(runner, png):
    result = runner.invoke(main, ["compress", str(png), "--psnr"])
    assert result.exit_code == 0, result.output
    cae = png.with_suffix(".cae")
    assert cae.exists() and "bpp" in result.output and "PSNR" in result.output
    result = runner.invoke(main, ["decompress", str(cae)])
    assert result.exit_code == 0, result.output
    with Image.open(png.with_name("img.decoded.png")) as image:
        assert image.size == (40, 30) and image.mode == "RGB"


def test_existing_output_is_never_replaced_without_force(runner, png):
    cae = png.with_suffix(".cae")
    cae.write_bytes(b"precious")
    result = runner.invoke(main, ["compress", str(png)])
    assert result.exit_code != 0
    assert "--force" in result.stderr
    assert cae.read_bytes() == b"precious"
    assert runner.invoke(main, ["compress", str(png), "--force"]).exit_code == 0
    assert cae.read_bytes() != b"precious"


def test_the_original_survives_compress_decompress_and_force(runner, png):
    """The sequence that once replaced a user's original with its lossy decode."""
    before = png.read_bytes()
    cae = png.with_suffix(".cae")
    assert runner.invoke(main, ["compress", str(png)]).exit_code == 0
    for extra in ([], [], ["--force"], ["-f"]):
        result = runner.invoke(main, ["decompress", str(cae), *extra])
        assert png.read_bytes() == before, result.output
    decoded = png.with_name("img.decoded.png")
    assert decoded.exists() and decoded.read_bytes() != before
    again = runner.invoke(main, ["decompress", str(cae)])
    assert again.exit_code == 1 and "img.decoded.png exists" in again.stderr


def test_a_named_existing_output_is_refused_without_advising_force(runner, png):
    before = png.read_bytes()
    runner.invoke(main, ["compress", str(png)])
    result = runner.invoke(main, ["decompress", str(png.with_suffix(".cae")), "-o", str(png)])
    assert result.exit_code == 1 and "--force" not in result.stderr and "left alone" in result.stderr
    assert png.read_bytes() == before
    # Naming the file and asking for --force is how a user replaces it on purpose.
    result = runner.invoke(main, ["decompress", str(png.with_suffix(".cae")), "-o", str(png), "--force"])
    assert result.exit_code == 0 and png.read_bytes() != before


@pytest.mark.parametrize("count", [1, 2])  # one file alone, or several through the batch path
def test_decompressing_an_image_says_it_is_not_a_cae_file_even_when_its_output_exists(runner, png, count):
    """An image given to decompress by mistake is named as the wrong input, not as a name clash."""
    inputs = [png]
    for i in range(1, count):
        inputs.append(png.with_name(f"img{i}.png"))
        shutil.copy(png, inputs[-1])
    for source in inputs:
        source.with_name(source.stem + ".decoded.png").write_bytes(b"mine")
    result = runner.invoke(main, ["decompress", *map(str, inputs), "--workers", "1"])
    assert result.exit_code == 1
    assert result.stderr.count("not a .cae file") == count and "exists" not in result.stderr
    assert png.with_name("img.decoded.png").read_bytes() == b"mine"


def test_output_option_file_and_folder(runner, png, tmp_path):
    target = tmp_path / "named.cae"
    assert runner.invoke(main, ["compress", str(png), "-o", str(target)]).exit_code == 0
    assert target.exists()
    other = tmp_path / "b.png"
    Image.fromarray(sample_image(8, 8, "L")).save(other)
    folder = tmp_path / "out"
    result = runner.invoke(main, ["compress", str(png), str(other), "-o", f"{folder}/"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in folder.iterdir()) == ["b.cae", "img.cae"]
    # An existing folder is a folder even without the slash, also for one input.
    result = runner.invoke(main, ["decompress", str(folder / "b.cae"), "-o", str(folder)])
    assert result.exit_code == 0, result.output
    assert (folder / "b.decoded.png").exists()


def test_one_input_with_a_trailing_slash_goes_into_that_folder(runner, png, tmp_path):
    result = runner.invoke(main, ["compress", str(png), "-o", f"{tmp_path / 'new'}/"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "new" / "img.cae").is_file()


def test_several_inputs_need_a_folder_and_missing_parents_are_errors(runner, png, tmp_path):
    other = tmp_path / "b.png"
    Image.fromarray(sample_image(8, 8, "RGB")).save(other)
    result = runner.invoke(main, ["compress", str(png), str(other), "-o", str(tmp_path / "out.cae")])
    assert result.exit_code == 2 and "need -o to name a folder" in result.stderr
    assert not (tmp_path / "out.cae").exists()
    for target in (tmp_path / "missing" / "dir" / "x.cae", f"{tmp_path / 'missing' / 'dir'}/"):
        result = runner.invoke(main, ["compress", str(png), "-o", str(target)])
        assert result.exit_code == 2 and "does not exist" in result.stderr
    assert not (tmp_path / "missing").exists()


def test_decompress_output_formats(runner, png, tmp_path):
    runner.invoke(main, ["compress", str(png)])
    cae = str(png.with_suffix(".cae"))
    assert runner.invoke(main, ["decompress", cae, "-o", str(tmp_path / "a.png")]).exit_code == 0
    result = runner.invoke(main, ["decompress", cae, "-o", str(tmp_path / "a.webp")])
    assert result.exit_code == 0 and "warning" not in result.stderr
    png_pixels = np.asarray(Image.open(tmp_path / "a.png"))
    assert np.array_equal(np.asarray(Image.open(tmp_path / "a.webp")), png_pixels)  # lossless WebP
    result = runner.invoke(main, ["decompress", cae, "-o", str(tmp_path / "a.jpg")])
    assert result.exit_code == 0 and "warning" in result.stderr and "losing more" in result.stderr
    result = runner.invoke(main, ["decompress", cae, "-o", str(tmp_path / "a.xyz")])
    assert result.exit_code == 2 and "cannot tell an image format" in result.stderr  # a usage error
    assert not (tmp_path / "a.xyz").exists()


def test_two_inputs_with_one_output_name_are_an_error(runner, png, tmp_path):
    jpg = tmp_path / "img.jpg"
    Image.fromarray(sample_image(8, 8, "RGB")).save(jpg)
    result = runner.invoke(main, ["compress", str(png), str(jpg)])
    assert result.exit_code != 0 and "both write" in result.stderr
    assert not png.with_suffix(".cae").exists()


def test_bad_inputs_fail_alone_with_one_line_each(runner, png, tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(png.read_bytes()[:200])
    inputs = [png, tmp_path / "missing.png", tmp_path, text, empty, truncated]
    result = runner.invoke(main, ["compress", *map(str, inputs), "-o", f"{tmp_path / 'out'}/"])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 6 and lines[-1] == "cae-codec: 5 of 6 files failed"
    assert "Traceback" not in result.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["img.cae"]


@pytest.mark.parametrize("damage", ["truncate", "foreign", "flip"])
def test_bad_cae_files_fail_cleanly(runner, png, damage):
    runner.invoke(main, ["compress", str(png)])
    cae = png.with_suffix(".cae")
    data = cae.read_bytes()
    cae.write_bytes(
        {"truncate": data[:-5], "foreign": png.read_bytes(), "flip": data[:9] + b"\xff" + data[10:]}[damage]
    )
    png.unlink()
    result = runner.invoke(main, ["decompress", str(cae)])
    assert result.exit_code == 1
    assert result.stderr.startswith(f"cae-codec: {cae}: ") and len(result.stderr.splitlines()) == 1
    assert not png.exists() and not [p for p in png.parent.iterdir() if p.name.endswith(".tmp")]


def test_info_and_weights_option(runner, png, tmp_path):
    runner.invoke(main, ["compress", str(png), "-q", "14", "--coder", "zstd"])
    result = runner.invoke(main, ["info", str(png.with_suffix(".cae"))])
    assert f"40x30 RGB, quality 14 (level 2), coder zstd, weights id {weights.DEFAULT_ID}" in result.output
    result = runner.invoke(main, ["compress", str(png), "--weights", str(tmp_path / "none.pt"), "-f"])
    assert result.exit_code == 1 and "none.pt" in result.stderr


def test_quality_out_of_range(runner, png):
    result = runner.invoke(main, ["compress", str(png), "-q", "101"])
    assert result.exit_code == 2 and "101.0 is not in the range 0<=x<=100" in result.stderr
    assert not png.with_suffix(".cae").exists()


def test_usage_errors_are_status_2_before_torch_loads(png, tmp_path):
    """One rule: a bad option or value, an impossible -o or an unknown format is status 2, found
    before any file is read or PyTorch imported; a failure on a file is status 1."""
    probe = (
        "import sys\nfrom cae_codec.cli import main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n"
        "    print(e.code, 'torch' in sys.modules)"
    )
    cae = tmp_path / "x.cae"
    cae.write_bytes(b"not really")
    cases = [
        ["compress", str(png), str(png), "-q", "101"],
        ["compress", str(png), "-q", "50", "--target-size", "4KB"],
        ["compress", str(png), "--target-size", "4 parsecs"],
        ["compress", str(png), "--metadata", "gps"],
        ["compress", str(png), "-q", "high"],
        ["decompress", str(cae), "-o", str(tmp_path / "a.gif")],
        ["compress", str(png), "--threads", "0"],
        ["compress", str(png), "--precision", "fp16"],
        ["compress", str(png), "-q", "nan"],
        ["compress", str(png), "--target-psnr", "inf"],
        ["compress", str(png), "--target-psnr", "nan"],
        ["compress", str(png), "--target-ms-ssim", "nan"],
        ["compress", str(png), "--target-size", "9" * 400],
        ["compress", str(png), "--threads", "9" * 40],
        ["compress", str(png), "--max-pixels", "9" * 40],
        ["train", "--out", str(tmp_path / "t.pt"), "--lr", "nan"],
        ["train", "--out", str(tmp_path / "t.pt"), "--batch-size", "9" * 40],
        ["decompress", str(cae), "--precision", "half"],
        ["compress", str(png), str(png), "-o", str(tmp_path / "one.cae")],
    ]
    for args in cases:
        result = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True)
        assert result.stdout.split() == ["2", "False"], (args, result.stdout, result.stderr)
    failed = subprocess.run(
        [sys.executable, "-c", probe, "decompress", str(cae)], capture_output=True, text=True
    )
    assert failed.stdout.split()[0] == "1"


def test_every_shipped_model_has_the_levels_the_command_line_checks_against():
    from cae_codec import config

    assert {weights.load(weights_id=i).levels for i in weights.REGISTRY} == {config.SHIPPED_LEVELS}


def test_installed_script_and_module(png, tmp_path):
    script = shutil.which("cae-codec", path=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    assert script, "the cae-codec console script is not installed"
    done = subprocess.run([script, "compress", str(png), "-q", "29"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "cae_codec",
            "decompress",
            str(png.with_suffix(".cae")),
            "-o",
            str(tmp_path / "back.png"),
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert np.asarray(Image.open(tmp_path / "back.png")).shape == (30, 40, 3)
    done = subprocess.run([script, "decompress", str(png)], capture_output=True, text=True)
    assert done.returncode == 1 and "Traceback" not in done.stderr


def test_multi_frame_input_keeps_first_frame_with_a_warning(runner, tmp_path):
    frames = [Image.fromarray(sample_image(16, 16, "RGB", seed=s)) for s in range(3)]
    gif = tmp_path / "anim.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:])
    result = runner.invoke(main, ["compress", str(gif)])
    assert result.exit_code == 0, result.output
    assert "warning" in result.stderr and "3 frames; only the first is kept" in result.stderr
    assert (tmp_path / "anim.cae").exists()


def test_pillow_decompression_bomb_is_a_clean_refusal(runner, tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    Image.fromarray(sample_image(64, 64, "RGB")).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 64x64 now counts as a bomb for Pillow
    result = runner.invoke(main, ["compress", str(path), "--max-pixels", str(10**9)])
    assert result.exit_code == 1 and "over the limit" in result.stderr
    assert "Traceback" not in result.output


def test_cmyk_and_exif_rotated_jpegs(runner, tmp_path):
    rgb = sample_image(20, 10, "RGB")
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    Image.fromarray(rgb).save(tmp_path / "rotated.jpg", exif=exif)
    result = runner.invoke(main, ["compress", str(tmp_path / "cmyk.jpg"), str(tmp_path / "rotated.jpg")])
    assert result.exit_code == 0, result.output
    for name, size in (("cmyk", (20, 10)), ("rotated", (10, 20))):
        runner.invoke(main, ["decompress", str(tmp_path / f"{name}.cae")])
        with Image.open(tmp_path / f"{name}.decoded.png") as image:
            assert image.mode == "RGB" and image.size == size


def test_an_input_is_never_overwritten_even_with_force(runner, png, tmp_path):
    runner.invoke(main, ["compress", str(png)])
    cae = png.with_suffix(".cae")
    before = cae.read_bytes()
    result = runner.invoke(main, ["compress", str(cae), "-o", str(cae), "--force"])
    assert result.exit_code == 1 and cae.read_bytes() == before


def test_truncated_jpeg_is_a_clean_error(runner, tmp_path):
    path = tmp_path / "cut.jpg"
    Image.fromarray(sample_image(64, 64, "RGB")).save(path, quality=90)
    path.write_bytes(path.read_bytes()[:400])
    result = runner.invoke(main, ["compress", str(path)])
    assert result.exit_code == 1 and "corrupt or truncated" in result.stderr
    assert not (tmp_path / "cut.cae").exists()


def test_pillow_bomb_warning_is_replaced_by_our_own_limit(runner, tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    Image.fromarray(sample_image(64, 64, "RGB")).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 3000)  # 4096 pixels: Pillow warns, does not refuse
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)  # a leaked warning would fail
        result = runner.invoke(main, ["compress", str(path)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["compress", str(path), "-f", "--max-pixels", "4000"])
    assert result.exit_code == 1 and "over the limit of 4000 pixels" in result.stderr


def test_help_and_usage_errors_do_not_load_torch():
    """Only commands that run the network import torch, so --help comes back in a fraction of a second."""
    import subprocess
    import sys

    code = (
        "import sys; from click.testing import CliRunner; from cae_codec.cli import main; "
        "r = CliRunner().invoke(main, ['--help']); assert r.exit_code == 0, r.output; "
        "r = CliRunner().invoke(main, ['compress']); assert r.exit_code == 2, r.output; "
        "print(sorted(m for m in ('torch', 'numpy', 'PIL') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_info_model_prints_every_layer_with_shapes_and_totals():
    from cae_codec import model, weights

    result = CliRunner().invoke(main, ["info", "--model", "cae-msh8-v3", "--size", "24x40"])  # W x H
    assert result.exit_code == 0, result.output
    w = weights.load("cae-msh8-v3")
    rows = model.summary(w.model, 48, 32)
    assert "3x48x32 (24x40 padded to a multiple of 16)" in result.output
    assert "latent y                        6,144 values, 4.000 per pixel" in result.output
    assert "hyper-latent z                    192 values, 0.125 per pixel" in result.output
    assert f"{sum(p.numel() for p in w.model.parameters()):,} parameters" in result.output
    for name, kind, shape, params in rows:
        assert f"{name:<8} {kind:<15} {'x'.join(map(str, shape)):>12} {params:>11,}" in result.output
    assert rows[-1][2] == (3, 48, 32) and rows[4][2] == (64, 12, 8)
    assert sum(r[3] for r in rows) + w.model.log_gain.numel() * 2 + sum(
        p.numel() for p in w.model.z_densities.parameters()
    ) == sum(p.numel() for p in w.model.parameters())
    every = CliRunner().invoke(main, ["info", "--model"])
    assert all(f"(id {i})" in every.output for i in weights.REGISTRY)
    bad = CliRunner().invoke(main, ["info", "--model", "--size", "12"])
    assert bad.exit_code == 2 and "WIDTHxHEIGHT" in bad.output


def test_pipes_standard_input_to_standard_output(png, tmp_path):
    import io

    runner = CliRunner()
    compressed = runner.invoke(main, ["compress", "-", "-o", "-", "-q", "14"], input=png.read_bytes())
    assert compressed.exit_code == 0, compressed.stderr
    assert compressed.stdout_bytes[:2] == b"\xca\xe1"  # the .cae magic, and nothing else on stdout
    assert "<stdin> -> <stdout>" in compressed.stderr
    (tmp_path / "piped.cae").write_bytes(compressed.stdout_bytes)
    decoded = runner.invoke(main, ["decompress", "-", "-o", "-"], input=compressed.stdout_bytes)
    assert decoded.exit_code == 0, decoded.stderr
    image = Image.open(io.BytesIO(decoded.stdout_bytes))
    assert image.format == "PNG" and image.size == Image.open(png).size
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([png.name, "piped.cae"])  # nothing else


@pytest.mark.parametrize(
    "args, message",
    [
        (["compress", "-"], "reading standard input needs -o"),
        (["compress", "-", "x.png", "-o", "out/"], "must be the only input"),
        (["compress", "a.png", "b.png", "-o", "-"], "takes one input"),
        (["compress", "a.png", "-o", "-", "--json"], "--json writes to standard output"),
    ],
)
def test_stream_misuse_is_a_usage_error(args, message):
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and message in result.output


def test_json_reports_one_object_per_file_and_quiet_reports_nothing(png, tmp_path):
    import json

    missing = tmp_path / "missing.png"
    out = tmp_path / "out/"
    result = CliRunner().invoke(
        main, ["compress", str(png), str(missing), "-o", f"{out}/", "--json", "--psnr"]
    )
    assert result.exit_code == 1
    ok, bad = (json.loads(line) for line in result.stdout.splitlines())
    data = (out / (png.stem + ".cae")).read_bytes()
    assert ok["bytes"] == len(data) and ok["output"] == str(out / (png.stem + ".cae"))
    assert ok["psnr"] > 20 and ok["quality"] == 71 and ok["level"] == 6 and ok["coder"] in ("zstd", "range")
    assert bad == {"input": str(missing), "error": "no such file or directory"}
    assert "cae-codec: " in result.stderr  # the error line still goes to stderr
    quiet = CliRunner().invoke(main, ["decompress", str(out / (png.stem + ".cae")), "--quiet"])
    assert quiet.exit_code == 0 and quiet.output == ""
    assert (out / (png.stem + ".decoded.png")).exists()


def test_worker_processes_write_the_same_files_in_order(runner, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    paths = []
    for i in range(5):
        paths.append(folder / f"{i}.png")
        Image.fromarray(sample_image(24 + i, 20, "RGB", seed=i)).save(paths[-1])
    (folder / "3.png").write_bytes(b"not a png")  # one bad file fails alone
    args = ["compress", *map(str, paths), "--json", "-q", "14"]
    one = runner.invoke(main, [*args, "-o", str(tmp_path / "one") + "/", "--workers", "1"])
    two = runner.invoke(main, [*args, "-o", str(tmp_path / "two") + "/", "--workers", "2"])
    assert one.exit_code == two.exit_code == 1
    inputs = lambda out: [json.loads(line)["input"] for line in out.splitlines() if line.startswith("{")]  # noqa: E731
    assert inputs(two.output) == inputs(one.output) == [str(p) for p in paths]
    assert "3.png: not an image file" in two.output
    for i in (0, 1, 2, 4):
        assert (tmp_path / "two" / f"{i}.cae").read_bytes() == (tmp_path / "one" / f"{i}.cae").read_bytes()


def test_progress_bar_only_on_a_terminal_for_long_runs(monkeypatch):
    import io

    from cae_codec import cli

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    records = [{"input": str(i)} for i in range(cli.PROGRESS_FROM)]
    for stderr, quiet, shown in (
        (Terminal(), True, True),
        (io.StringIO(), True, False),
        (Terminal(), False, False),
    ):
        monkeypatch.setattr(sys, "stderr", stderr)
        monkeypatch.setattr(sys, "stdout", Terminal())  # per-file lines go to a terminal unless --quiet
        report = cli.Report(quiet=quiet)
        assert list(cli._with_progress(iter(records), len(records), report, "compress")) == records
        assert ("compressing" in stderr.getvalue()) == shown
    short = list(cli._with_progress(iter(records[:3]), 3, cli.Report(quiet=True), "compress"))
    assert short == records[:3]


def test_a_batch_bar_moves_within_a_large_image(monkeypatch):
    """While a batch's bar is shown, a large image coded in this process moves it tile by tile: the
    hook it reports to is the bar's, and it is gone once the batch ends."""
    import io

    from cae_codec import cli

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    stderr = Terminal()
    monkeypatch.setattr(sys, "stderr", stderr)
    seen = []

    def records():
        for i in range(cli.PROGRESS_FROM):
            hook = cli._BATCH_BAR[0]
            seen.append(hook is not None)
            if i == 0:
                for done in range(1, 5):
                    hook(done, 4)  # a large image's four steps
            yield {"input": str(i)}

    out = list(cli._with_progress(records(), cli.PROGRESS_FROM, cli.Report(quiet=True), "compress"))
    assert len(out) == cli.PROGRESS_FROM and all(seen) and cli._BATCH_BAR[0] is None
    assert "100%" in stderr.getvalue()


def test_workers_by_default_only_when_the_work_outweighs_their_start(monkeypatch, tmp_path):
    from cae_codec import bulk, cli
    from cae_codec.container import peek_size

    small = [tmp_path / f"{i}.png" for i in range(3)]
    for path in small:
        Image.fromarray(sample_image(32, 32, "RGB")).save(path)
    assert bulk.work_estimate([bulk.pixels_of(p, "compress") for p in small]) < 0.1
    big = tmp_path / "big.cae"
    big.write_bytes(cae_codec.compress(sample_image(4, 3, "RGB"))[:3] + bytes([3, 0x87, 0x27, 0x9F, 0x1F]))
    assert peek_size(big.read_bytes()[:16]) == (5000, 4000)
    assert bulk.work_estimate([bulk.pixels_of(big, "decompress")]) == pytest.approx(
        bulk.SECONDS_PER_FILE + bulk.SECONDS_PER_PIXEL * 20e6
    )
    assert bulk.work_estimate([20_000_000]) > cli.PARALLEL_AFTER_S  # 20 MP: worth the workers

    used = []

    class Pool:  # runs the "workers" here, recording how many were asked for
        def __init__(self, workers):
            used.append(workers)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def imap(self, fn, units):
            return map(fn, units)

    monkeypatch.setattr(cli, "_pool", Pool)
    job = bulk.Job("compress", 2)
    pairs = [(p, p.with_suffix(".cae")) for p in small]
    assert all("bytes" in r for r in cli._local(pairs, False, job, False)) and used == []
    monkeypatch.setattr(bulk, "work_estimate", lambda pixels: 60.0)
    cores = os.cpu_count() or 1
    assert all("bytes" in r for r in cli._local(pairs, False, job, True))
    assert (len(used) == 1 and 1 < used[0] <= min(3, cores)) if cores > 1 else used == []


def test_many_files_share_forward_passes_and_fail_alone(monkeypatch, tmp_path):
    from cae_codec import codec

    calls = []
    analyse = codec.analyse
    monkeypatch.setattr(
        codec, "analyse", lambda w, x, *a, **k: calls.append(len(x)) or analyse(w, x, *a, **k)
    )
    files = []
    for i in range(5):
        files.append(tmp_path / f"p{i}.png")
        Image.fromarray(sample_image(32, 32, "RGB", seed=i)).save(files[-1])
    files.append(tmp_path / "bits.png")
    Image.fromarray(sample_image(32, 32, "L", seed=9) > 128).save(files[-1])
    files.append(tmp_path / "bad.png")
    files[-1].write_bytes(b"not an image")
    (tmp_path / "p3.cae").write_bytes(b"mine")
    result = CliRunner().invoke(main, ["compress", *map(str, files), "--workers", "1", "--json"])
    assert result.exit_code == 1
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["input"] for r in records] == [str(f) for f in files]
    assert "exists" in records[3]["error"] and (tmp_path / "p3.cae").read_bytes() == b"mine"
    assert records[6]["error"] == "not an image file, or a format Pillow cannot read"
    assert result.stderr.count("bits.png: a 1-bit image") == 1
    assert calls == [5]  # four RGB images and the 1-bit one (coded as grayscale) in one pass
    for i in (0, 1, 2, 4):
        alone = cae_codec.compress(files[i])
        assert records[i]["bytes"] == len((tmp_path / f"p{i}.cae").read_bytes())
        assert (
            np.abs(
                np.asarray(cae_codec.decompress(tmp_path / f"p{i}.cae"), int)
                - np.asarray(cae_codec.decompress(alone))
            ).max()
            <= 1
        )


def test_many_cae_files_decode_together_and_fail_alone(monkeypatch, tmp_path):
    from cae_codec import codec

    files = []
    for i in range(4):
        files.append(tmp_path / f"p{i}.cae")
        files[-1].write_bytes(cae_codec.compress(sample_image(32, 32, "RGB", seed=i), 3))
    files.append(tmp_path / "rgba.cae")
    files[-1].write_bytes(cae_codec.compress(sample_image(32, 32, "RGBA", seed=5), 3))
    files.append(tmp_path / "bad.cae")
    files[-1].write_bytes(files[0].read_bytes()[:12])
    (tmp_path / "p2.decoded.png").write_bytes(b"mine")
    calls = []
    synthesize = codec.synthesize
    monkeypatch.setattr(
        codec, "synthesize", lambda w, y, *a, **k: calls.append(len(y)) or synthesize(w, y, *a, **k)
    )
    result = CliRunner().invoke(main, ["decompress", *map(str, files), "--workers", "1", "--json"])
    assert result.exit_code == 1
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["input"] for r in records] == [str(f) for f in files]
    assert "exists" in records[2]["error"] and (tmp_path / "p2.decoded.png").read_bytes() == b"mine"
    assert "corrupt" in records[5]["error"] or "truncated" in records[5]["error"]
    assert calls == [4]  # three RGB files and the RGBA one (same model, quality and size) in one pass
    for i in (0, 1, 3, 4):
        decoded = Image.open(tmp_path / f"{files[i].stem}.decoded.png")
        alone = cae_codec.decompress(files[i])
        assert decoded.mode == alone.mode and records[i]["mode"] == alone.mode
        assert np.abs(np.asarray(decoded, int) - np.asarray(alone)).max() <= 1


def test_a_batch_shares_its_time_by_each_images_cost(tmp_path):
    from cae_codec import bulk

    shares = bulk.share_time(2.0, [32 * 32, 768 * 512, 0])
    assert sum(shares) == pytest.approx(2.0) and shares[1] > 100 * shares[0] > 0 and shares[2] > 0
    small, big = tmp_path / "small.png", tmp_path / "big.png"
    Image.fromarray(sample_image(32, 32, "RGB")).save(small)
    Image.fromarray(sample_image(320, 256, "RGB")).save(big)
    records = [r[1] for r in bulk.compress_images([small, big], bulk.Job("compress", 2))]
    assert 0 < records[0]["ms"] < records[1]["ms"] / 10


def test_a_rerun_says_once_that_outputs_exist(runner, tmp_path):
    pngs = []
    for name in "abc":
        pngs.append(tmp_path / f"{name}.png")
        Image.fromarray(sample_image(20, 16, "RGB")).save(pngs[-1])
    assert runner.invoke(main, ["compress", *map(str, pngs), "-q", "0"]).exit_code == 0
    result = runner.invoke(main, ["compress", *map(str, pngs), str(tmp_path / "none.png"), "-q", "0"])
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 1
    assert lines == [
        f"cae-codec: {tmp_path / 'none.png'}: no such file or directory",
        "cae-codec: 3 of 4 outputs exist and were left alone; "
        "--skip-existing skips them, --force replaces them",
        "cae-codec: 1 of 4 files failed",
    ]
    assert runner.invoke(main, ["compress", *map(str, pngs), "-q", "0", "--force"]).exit_code == 0


def test_a_16_bit_image_is_said_to_lose_its_low_bits(runner, tmp_path):
    deep = tmp_path / "deep.png"
    Image.fromarray(np.arange(40 * 30, dtype=np.uint16).reshape(30, 40) * 50).save(deep)
    with Image.open(deep) as image:
        assert image.mode.startswith("I")
    result = runner.invoke(main, ["compress", str(deep)])
    assert result.exit_code == 0
    assert "keeps only the high 8 bits of each sample" in result.stderr


def test_binary_output_to_a_terminal_is_refused_and_input_from_one_gets_a_hint(tmp_path, png):
    import pty

    def on_terminal(args, where):
        leader, follower = pty.openpty()
        streams = (
            {"stdout": follower} if where == "stdout" else {"stdin": follower, "stdout": subprocess.PIPE}
        )
        try:
            return subprocess.run(
                [sys.executable, "-m", "cae_codec", *args], stderr=subprocess.PIPE, text=True, **streams
            )
        finally:
            os.close(leader)
            os.close(follower)

    result = on_terminal(["compress", str(png), "-o", "-"], "stdout")
    assert result.returncode == 2 and "binary data to the terminal" in result.stderr
    result = on_terminal(["compress", "-", "-o", str(tmp_path / "x.cae")], "stdin")
    assert result.returncode == 1 and "standard input is a terminal: pipe a file in" in result.stderr


def test_no_python_warning_text_reaches_a_user(tmp_path):
    """Run as `python -W error`: any warning that is not turned into our own one line would end the
    command with a traceback. Warnings that are reported come as `cae-codec: ...` lines."""
    import numpy as np

    gray16 = tmp_path / "gray16.png"
    Image.fromarray((np.arange(40 * 50).reshape(40, 50) * 30).astype(np.uint16)).save(gray16)
    broken_exif = tmp_path / "exif.png"
    exif = Image.Exif()
    exif[0x0112] = 6
    raw = bytearray(exif.tobytes())
    raw[10:14] = b"\xff\xff\xff\x7f"  # a value offset far past the end
    Image.fromarray(np.zeros((24, 32, 3), np.uint8)).save(broken_exif, exif=bytes(raw))
    steps = [
        ["compress", str(gray16), "--psnr"],
        ["compress", str(broken_exif), "--psnr"],
        ["decompress", str(gray16.with_suffix(".cae")), "-o", str(tmp_path / "g.jpg")],
        ["decompress", str(broken_exif.with_suffix(".cae")), "-o", str(tmp_path / "e.tif")],
        ["decompress", str(broken_exif.with_suffix(".cae")), "-o", str(tmp_path / "e.bmp")],
        ["info", str(broken_exif.with_suffix(".cae"))],
    ]
    for args in steps:
        result = subprocess.run(
            [sys.executable, "-W", "error", "-m", "cae_codec", *args], capture_output=True, text=True
        )
        assert result.returncode == 0, (args, result.stderr)
        for line in result.stderr.splitlines():
            assert line.startswith("cae-codec: "), (args, result.stderr)


def test_odd_names_work_or_fail_in_one_line(tmp_path):
    """A name over the file system's limit is one line (status 2); a newline in a name cannot forge a
    report line; a name that is not UTF-8 gives strict JSON with its exact bytes beside it."""
    source = tmp_path / "a.png"
    Image.fromarray(sample_image(24, 16, "RGB")).save(source)
    long_name = tmp_path / ("x" * 300 + ".cae")
    result = subprocess.run(
        [sys.executable, "-m", "cae_codec", "compress", str(source), "-o", str(long_name)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr and "300" not in result.stdout
    assert "the file system takes 255" in result.stderr
    forged = tmp_path / "b\nfake.png -> x.cae: 1 bytes.png"
    forged.write_bytes(source.read_bytes())
    result = subprocess.run(
        [sys.executable, "-m", "cae_codec", "compress", str(forged), "-o", str(tmp_path / "out") + "/"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0 and len(result.stdout.splitlines()) == 1 and "b\\x0afake" in result.stdout
    odd = os.fsencode(str(tmp_path)) + b"/caf\xe9.png"
    with open(odd, "wb") as f:
        f.write(source.read_bytes())
    result = subprocess.run(
        [sys.executable, "-m", "cae_codec", "compress", odd, "--json", "--psnr", "-q", "100"],
        capture_output=True,
    )
    assert result.returncode == 0
    record = json.loads(result.stdout, parse_constant=lambda c: pytest.fail(f"not strict JSON: {c}"))
    assert record["input"].endswith("caf\ufffd.png") and bytes.fromhex(record["input_hex"]) == odd


def test_an_exact_decode_reports_psnr_as_null_in_json():
    from cae_codec.cli import _json, _line

    record = {
        "input": "a",
        "output": "b",
        "bytes": 9,
        "bpp": 1.0,
        "ms": 1.0,
        "quality": 100.0,
        "psnr": math.inf,
    }
    assert json.loads(_json(record))["psnr"] is None
    assert "PSNR inf dB (identical)" in _line(record)


def test_large_images_are_their_own_units_so_each_reports_as_it_finishes():
    from cae_codec import cli

    pairs = [(f"{i}", f"{i}.cae") for i in range(7)]
    pixels = [100, 10**6, 100, 100, 10**7, 100, 100]
    units = cli._units(pairs, pixels, workers=1)
    assert units == [[pairs[0]], [pairs[1]], pairs[2:4], [pairs[4]], pairs[5:]]
    assert [p for unit in units for p in unit] == pairs  # input order kept


def test_skip_existing_resumes_a_batch(tmp_path):
    runner = CliRunner()
    sources = []
    for i in range(3):
        sources.append(tmp_path / f"{i}.png")
        Image.fromarray(sample_image(24, 16, "RGB", seed=i)).save(sources[-1])
    first = runner.invoke(main, ["compress", str(sources[0])])
    assert first.exit_code == 0
    before = sources[0].with_suffix(".cae").stat().st_mtime_ns
    result = runner.invoke(main, ["compress", *map(str, sources), "--skip-existing", "--json"])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r.get("skipped", False) for r in records] == [True, False, False]
    assert all(r["input"] == str(s) for r, s in zip(records, sources, strict=True))
    assert sources[0].with_suffix(".cae").stat().st_mtime_ns == before
    again = runner.invoke(main, ["compress", *map(str, sources), "--skip-existing"])
    assert again.exit_code == 0 and again.stdout.count("skipped") == 3
    both = runner.invoke(main, ["compress", str(sources[0]), "--skip-existing", "--force"])
    assert both.exit_code == 2


def test_info_vouches_only_for_what_decompress_would_take(tmp_path):
    """A fraction byte past the last level and a metadata frame that does not unpack each pass
    unpack's field checks; info now refuses them as decompress does, in one line, status 1."""
    from dataclasses import replace

    from cae_codec.container import pack, unpack

    image = tmp_path / "a.png"
    Image.fromarray(sample_image(40, 30, "RGB")).save(image, pnginfo=_xmp_info())
    good = cae_codec.compress(image, quality=100)
    f = unpack(good)
    bad_fraction = tmp_path / "fraction.cae"
    bad_fraction.write_bytes(pack(replace(f, header=replace(f.header, fraction=255))))
    bad_metadata = tmp_path / "metadata.cae"
    bad_metadata.write_bytes(pack(replace(f, metadata={"xmp": b"\x00\x01garbage"})))
    (tmp_path / "good.cae").write_bytes(good)
    runner = CliRunner()
    assert runner.invoke(main, ["info", str(tmp_path / "good.cae")]).exit_code == 0
    for path in (bad_fraction, bad_metadata):
        result = runner.invoke(main, ["info", str(path)])
        assert result.exit_code == 1 and result.stdout == "", result.output
        assert len(result.stderr.splitlines()) == 1
        with pytest.raises(cae_codec.FormatError):
            cae_codec.decompress(path.read_bytes())


def _xmp_info():
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_itxt("XML:com.adobe.xmp", "<x:xmpmeta xmlns:x='adobe:ns:meta/'/>")
    return info
