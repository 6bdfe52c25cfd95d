import csv

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import TINY, train

import cae_codec
from cae_codec import weights
from cae_codec.cli import main


def test_train_writes_usable_weights_and_resumes(tiny_cifar, tmp_path):
    archive, batches = tiny_cifar
    out, ckpt, log = tmp_path / "mine.pt", tmp_path / "run.ckpt", tmp_path / "log.csv"
    resumable = ["--lambdas", "0.01,0.05", "--eval-every", "2", "--checkpoint", str(ckpt), "--log", str(log)]
    result = train(archive, out, *resumable, "--default-quality", "2", "--steps", "2")
    assert "exporting: range tables and zstd dictionaries" in result.stderr
    first = weights.load(out)
    assert first.levels == 2 and first.id >= weights.FIRST_USER_ID and first.default_quality == 2
    train(archive, out, *resumable, "--steps", "4", "--force")
    rows = list(csv.DictReader(log.open()))
    assert {r["step"] for r in rows} == {"2", "4"}
    from PIL import Image

    with Image.open(log.with_suffix(".png")) as curves:  # drawn beside the log at each validation
        assert curves.format == "PNG" and curves.width > 1000
    assert {"psnr_q1", "bpp_q2", "loss"} <= {r["metric"] for r in rows}
    image = cae_codec.decompress(cae_codec.compress(batches["test_batch"][0], weights=out), weights=out)
    assert image.size == (32, 32)


def test_file_and_weights_must_match(tiny_cifar, tmp_path):
    archive, batches = tiny_cifar
    out = tmp_path / "mine.pt"
    train(archive, out, "--steps", "1")
    data = cae_codec.compress(batches["test_batch"][0])
    with pytest.raises(cae_codec.FormatError, match=f"weights id {weights.DEFAULT_ID}"):
        cae_codec.decompress(data, weights=out)


def test_bad_lambdas_are_a_usage_error(tiny_cifar, tmp_path):
    result = CliRunner().invoke(main, ["train", "--out", str(tmp_path / "x.pt"), "--lambdas", "0.1,abc"])
    assert result.exit_code == 2 and "--lambdas" in result.output


def test_split_rows_holds_out_validation_and_selects_first_rows():
    from cae_codec.training import split_rows

    rows = np.arange(50000)[:, None]
    train_rows, val = split_rows(rows, 256)
    assert len(train_rows) == 49744 and val[0, 0] == 40000 and val[-1, 0] == 40255
    assert not np.isin(val, train_rows).any()
    exact, val = split_rows(rows, 256, first_rows=1017)
    assert len(exact) == 5 * 1017 - 256 and (exact[:, 0] % 10000 < 1017).all()
    assert not np.isin(val, exact).any()


def test_fine_tuning_starts_from_a_checkpoint(tiny_cifar, tmp_path):
    import torch

    archive, _ = tiny_cifar
    ckpt = tmp_path / "base.ckpt"
    train(archive, tmp_path / "base.pt", "--steps", "2", "--eval-every", "2", "--checkpoint", str(ckpt))
    base = torch.load(ckpt, weights_only=True)["model"]
    tuned = tmp_path / "tuned.pt"
    train(archive, tuned, "--steps", "1", "--lr", "0", "--init-from", str(ckpt), "--first-rows", "5")
    state = weights.load(tuned).model.state_dict()
    assert all(torch.equal(state[k], base[k]) for k in ("g_a.0.weight", "g_s.4.weight"))  # lr 0: unchanged


def test_hyperprior_starts_from_a_factorized_bundle(tiny_cifar, tmp_path):
    import torch

    archive, batches = tiny_cifar
    base = tmp_path / "base.pt"
    train(archive, base, "--steps", "1", "--lambdas", "0.01,0.05")
    hyper = tmp_path / "hyper.pt"
    extra = ["--hyper-channels", "6", "--hyper-latent-channels", "3", "--lambdas", "0.01,0.05"]
    train(archive, hyper, "--steps", "2", "--lr", "0", "--init-from", str(base), *extra)
    w, start = weights.load(hyper), weights.load(base).model.state_dict()
    assert w.hyper and w.model.config.hyper_M == 3
    state = w.model.state_dict()
    assert all(torch.equal(state[k], start[k]) for k in ("g_a.0.weight", "log_gain"))
    for coder in ("zstd", "range"):
        data = cae_codec.compress(batches["test_batch"][1], weights=hyper, coder=coder)
        assert cae_codec.decompress(data, weights=hyper).size == (32, 32)


def test_batches_mix_exact_and_other_rows_by_share():
    from cae_codec.training import sample_batch

    rng = np.random.default_rng(0)
    exact, other = np.zeros((5, 1, 1, 1)), np.ones((7, 1, 1, 1))
    share = [1 - sample_batch(rng, (exact, other), s, 4000).mean() for s in (0.0, 0.3, 1.0)]
    assert share[0] == 0 and abs(share[1] - 0.3) < 0.03 and share[2] == 1


def test_torchrun_with_two_processes_matches_one_process(tiny_cifar, tmp_path):
    """Each process trains on its half of the same global batch, and DDP averages the gradients, so
    two processes land where one does with that batch (up to the rate's noise draws), also across
    a stop and a resume."""
    import os
    import subprocess
    import sys

    import torch

    archive, batches = tiny_cifar
    common = [*TINY, "--lambdas", "0.01,0.05", "--steps", "3", "--eval-every", "3"]
    run = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    two = tmp_path / "two.pt"
    args = ["-m", "cae_codec.training", "--data-dir", str(archive), "--out", str(two), *common, "--seed", "1"]
    args += ["--checkpoint", str(tmp_path / "two.ckpt")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # Stopped after 2 steps, then resumed from rank 0's checkpoint to the third.
    first = subprocess.run(run + args + ["--steps", "2"], env=env, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr[-2000:]
    assert torch.load(tmp_path / "two.ckpt", weights_only=True)["step"] == 2
    done = subprocess.run(run + args + ["--force"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("wrote ") == 1  # rank 0 alone exports and reports
    train(archive, tmp_path / "one.pt", *common[len(TINY) :], "--seed", "1")
    train(archive, tmp_path / "other.pt", *common[len(TINY) :], "--seed", "2")
    states = [
        torch.load(tmp_path / f"{n}.pt", weights_only=True)["state_dict"] for n in ("one", "two", "other")
    ]

    def distance(a, b) -> float:
        return sum(float((a[k] - b[k]).abs().sum()) for k in a if k.startswith(("g_a", "g_s")))

    assert distance(states[0], states[1]) < 0.01 * distance(states[0], states[2])
    image = cae_codec.decompress(cae_codec.compress(batches["test_batch"][0], weights=two), weights=two)
    assert image.size == (32, 32)


def test_level_balance_gives_each_level_the_same_relative_weight():
    import torch

    from cae_codec.training import LevelBalance

    balance = LevelBalance(3)
    level = torch.tensor([0, 0, 1, 1])
    losses = torch.tensor([1.0, 1.0, 4.0, 4.0], requires_grad=True)
    balance(losses, level).backward()
    # Level 1's loss is 4 times level 0's, so each of its images weighs a quarter as much; weights average 1.
    assert losses.grad[0] == pytest.approx(4 * losses.grad[2])
    assert losses.grad[0] * 4 == pytest.approx(1.6) and balance.mean[2] == 0  # level 2 not yet seen
    balance(torch.tensor([3.0, 8.0]), torch.tensor([0, 1]))
    assert balance.mean[0] == pytest.approx(0.98 * 1 + 0.02 * 3) and balance.mean[1] == pytest.approx(4.08)


def test_balanced_training_keeps_its_running_means_across_a_resume(tiny_cifar, tmp_path):
    import torch

    archive, _ = tiny_cifar
    ckpt = tmp_path / "run.ckpt"
    args = ["--lambdas", "0.01,0.05", "--balance-levels", "--eval-every", "2", "--checkpoint", str(ckpt)]
    train(archive, tmp_path / "a.pt", *args, "--steps", "2")
    state = torch.load(ckpt, weights_only=True)
    assert state["balance"].shape == (2,) and (state["balance"] > 0).any()
    state["balance"] = torch.tensor([1000.0, 1000.0])  # far from any real loss: shows it was read back
    torch.save(state, ckpt)
    train(archive, tmp_path / "a.pt", *args, "--steps", "4", "--force")
    resumed = torch.load(ckpt, weights_only=True)["balance"]
    assert (resumed > 900).all() and (resumed < 1000).any()


@pytest.mark.parametrize(
    ("device", "message"),
    [("cuda", "sees no CUDA GPU"), ("meta", "unsupported device 'meta'"), ("gpu0", "unknown device 'gpu0'")],
)
def test_a_device_this_machine_cannot_train_on_is_one_clear_line(tiny_cifar, tmp_path, device, message):
    import torch

    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    archive, _ = tiny_cifar
    out = tmp_path / "mine.pt"
    args = ["train", "--data-dir", str(archive), "--out", str(out), *TINY, "--steps", "1", "--device", device]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1 and message in result.output, result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert not out.exists()


def test_training_on_the_cpu_device_by_name_matches_the_default(tiny_cifar, tmp_path):
    archive, _ = tiny_cifar
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    train(archive, a, "--steps", "2", "--id", "70001")
    train(archive, b, "--steps", "2", "--id", "70001", "--device", "cpu")
    assert weights.tensor_digest(weights.load(a).model.state_dict()) == weights.tensor_digest(
        weights.load(b).model.state_dict()
    )


def test_training_never_replaces_shipped_weights_or_an_existing_file_and_makes_its_folders(
    tiny_cifar, tmp_path
):
    from cae_codec import weights as weights_mod

    archive, _ = tiny_cifar
    runner = CliRunner()
    base = ["train", "--data-dir", str(archive), *TINY, "--steps", "1", "--lambdas", "0.01,0.05"]
    shipped = weights_mod.shipped_dir() / "cae-msh8-v3.pt"
    before = shipped.read_bytes()
    for out in (shipped, weights_mod.shipped_dir() / "mine.pt"):
        result = runner.invoke(main, [*base, "--out", str(out), "--force"])
        assert result.exit_code == 2 and "among the shipped weights" in result.stderr
    assert shipped.read_bytes() == before and not (weights_mod.shipped_dir() / "mine.pt").exists()
    result = runner.invoke(main, [*base, "--out", str(tmp_path / "x.pt"), "--id", "4"])
    assert result.exit_code == 2 and "id 4 is cae-msh8-photo-v4's" in result.stderr
    existing = tmp_path / "taken.pt"
    existing.write_bytes(b"mine")
    result = runner.invoke(main, [*base, "--out", str(existing)])
    assert result.exit_code == 2 and "taken.pt exists; --force replaces it" in result.stderr
    assert existing.read_bytes() == b"mine"
    fresh = tmp_path / "fresh"  # a fresh clone has no checkpoints/: the run makes what it writes to
    args = [
        "--out",
        str(fresh / "w" / "x.pt"),
        "--checkpoint",
        str(fresh / "c" / "x.ckpt"),
        "--log",
        str(fresh / "l" / "x.csv"),
    ]
    assert runner.invoke(main, [*base, *args]).exit_code == 0
    assert all((fresh / d / f).is_file() for d, f in (("w", "x.pt"), ("c", "x.ckpt"), ("l", "x.csv")))
