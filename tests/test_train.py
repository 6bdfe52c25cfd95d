import csv

import pytest
from click.testing import CliRunner

import cae_codec
from cae_codec import weights
from cae_codec.cli import main

TINY = ["--channels", "8", "--latent-channels", "4", "--batch-size", "4", "--val-rows", "4"]


def train(archive, out, *extra):
    result = CliRunner().invoke(main, ["train", "--data-dir", str(archive), "--out", str(out), *TINY, *extra])
    assert result.exit_code == 0, result.output
    return result


def test_train_writes_usable_weights_and_resumes(tiny_cifar, tmp_path):
    archive, batches = tiny_cifar
    out, ckpt, log = tmp_path / "mine.pt", tmp_path / "run.ckpt", tmp_path / "log.csv"
    resumable = ["--lambdas", "0.01,0.05", "--eval-every", "2", "--checkpoint", str(ckpt), "--log", str(log)]
    train(archive, out, *resumable, "--default-quality", "2", "--steps", "2")
    first = weights.load(out)
    assert first.levels == 2 and first.id >= weights.FIRST_USER_ID and first.default_quality == 2
    train(archive, out, *resumable, "--steps", "4")
    rows = list(csv.DictReader(log.open()))
    assert {r["step"] for r in rows} == {"2", "4"}
    assert {"psnr_q1", "bpp_q2", "loss"} <= {r["metric"] for r in rows}
    image = cae_codec.decompress(cae_codec.compress(batches["test_batch"][0], weights=out), weights=out)
    assert image.size == (32, 32)


def test_file_and_weights_must_match(tiny_cifar, tmp_path):
    archive, batches = tiny_cifar
    out = tmp_path / "mine.pt"
    train(archive, out, "--steps", "1")
    data = cae_codec.compress(batches["test_batch"][0])
    with pytest.raises(cae_codec.FormatError, match="weights id 1"):
        cae_codec.decompress(data, weights=out)


def test_bad_lambdas_are_a_usage_error(tiny_cifar, tmp_path):
    result = CliRunner().invoke(main, ["train", "--out", str(tmp_path / "x.pt"), "--lambdas", "0.1,abc"])
    assert result.exit_code == 2 and "--lambdas" in result.output
