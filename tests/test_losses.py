"""Training's distortion terms and the denoising option."""

import csv

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import sample_image

from cae_codec import metrics
from cae_codec.cli import main
from cae_codec.training import add_noise, losses


def _pair(size: int, seed: int = 0, error: float = 12.0):
    rng = np.random.default_rng(seed)
    a = sample_image(size, size, "RGB", seed=seed)
    b = np.clip(a + rng.normal(0, error, a.shape), 0, 255).astype(np.uint8)
    return a, b, *(torch.from_numpy(v).permute(2, 0, 1)[None].float() / 255 for v in (a, b))


def test_single_scale_ms_ssim_is_ssim():
    a, b, ta, tb = _pair(16)
    assert abs(float(losses.ms_ssim(tb, ta)[0]) - metrics.ssim(a, b)) < 1e-4


@pytest.mark.parametrize("size", [32, 100, 192])
def test_training_ms_ssim_matches_the_benchmarks(size):
    a, b, ta, tb = _pair(size, seed=size)
    assert abs(float(losses.ms_ssim(tb, ta)[0]) - metrics.ms_ssim(a, b)) < 1e-4


def test_ms_ssim_is_one_for_equal_images_and_falls_with_noise():
    _, _, ta, _ = _pair(192)
    scores = [float(losses.ms_ssim(_pair(192, error=e)[3], ta)[0]) for e in (4.0, 16.0, 48.0)]
    assert float(losses.ms_ssim(ta, ta)[0]) == pytest.approx(1.0, abs=1e-5)
    assert scores[0] > scores[1] > scores[2]


def test_each_distortion_is_in_mse_units():
    x = torch.full((1, 3, 8, 8), 0.5)
    e = 5 / 255
    mse = losses.distortion("mse", x + e, x)
    assert float(mse) == pytest.approx(25.0)
    assert float(losses.distortion("bce", x + e, x)) == pytest.approx(25.0, rel=0.02)  # mid-grey
    # l1's slope matches MSE's at an error of 5 levels.
    slopes = []
    for name in ("mse", "l1"):
        x_hat = (x + e).requires_grad_()
        losses.distortion(name, x_hat, x).sum().backward()
        slopes.append(float(x_hat.grad.sum()))
    assert slopes[0] == pytest.approx(slopes[1], rel=1e-4)


def test_add_noise_has_the_asked_spread_and_stays_in_range():
    x = torch.full((1, 3, 64, 64), 0.5)
    noisy = add_noise(x, 10.0, torch.Generator().manual_seed(1))
    assert float((noisy - x).std() * 255) == pytest.approx(10.0, rel=0.05)
    assert add_noise(x, 0.0) is x
    assert float(add_noise(torch.ones(1, 3, 8, 8), 50.0).max()) <= 1.0


def test_train_with_another_loss_and_noise(tiny_cifar, tmp_path):
    archive, _ = tiny_cifar
    log = tmp_path / "log.csv"
    args = ["train", "--data-dir", str(archive), "--out", str(tmp_path / "d.pt"), "--channels", "8"]
    args += ["--latent-channels", "4", "--batch-size", "4", "--val-rows", "4", "--steps", "2"]
    args += [
        "--eval-every",
        "2",
        "--lambdas",
        "0.01,0.05",
        "--loss",
        "ms-ssim",
        "--noise",
        "15",
        "--log",
        str(log),
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    rows = {r["metric"]: float(r["value"]) for r in csv.DictReader(log.open()) if r["split"] == "val"}
    # The loss logged is lambda * 1300 * (1 - MS-SSIM) + bpp, so it is above the rate alone.
    assert rows["loss_q1"] > rows["bpp_q1"] and 0 < rows["psnr_q1"] < 60
    bad = CliRunner().invoke(main, [*args[:4], "--loss", "ssim"])
    assert bad.exit_code == 2
