import csv

import pytest
from click.testing import CliRunner

import cae_codec
from cae_codec import weights
from cae_codec.cli import main


def test_train_writes_usable_weights_and_resumes(tiny_cifar, tmp_path):
    archive, _ = tiny_cifar
    out, ckpt, log = tmp_path / "mine.pt", tmp_path / "run.ckpt", tmp_path / "log.csv"
    args = [
        "train",
        "--data-dir",
        str(archive),
        "--out",
        str(out),
        "--channels",
        "8",
        "--latent-channels",
        "4",
        "--lambdas",
        "0.01,0.05",
        "--batch-size",
        "4",
        "--val-rows",
        "4",
        "--eval-every",
        "2",
        "--checkpoint",
        str(ckpt),
        "--log",
        str(log),
        "--default-quality",
        "2",
    ]
    result = CliRunner().invoke(main, [*args, "--steps", "2"])
    assert result.exit_code == 0, result.output
    first = weights.load(out)
    assert first.levels == 2 and first.id >= weights.FIRST_USER_ID
    result = CliRunner().invoke(main, [*args, "--steps", "4"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(log.open()))
    assert {r["step"] for r in rows} == {"2", "4"}
    assert {"psnr_q1", "bpp_q2", "loss"} <= {r["metric"] for r in rows}
    image = cae_codec.decompress(cae_codec.compress(tiny_cifar[1]["test_batch"][0], weights=out), weights=out)
    assert image.size == (32, 32)


def test_file_and_weights_must_match(tiny_cifar, tmp_path):
    archive, batches = tiny_cifar
    out = tmp_path / "mine.pt"
    CliRunner().invoke(
        main,
        [
            "train",
            "--data-dir",
            str(archive),
            "--out",
            str(out),
            "--channels",
            "8",
            "--latent-channels",
            "4",
            "--steps",
            "1",
            "--val-rows",
            "2",
            "--batch-size",
            "2",
        ],
    )
    data = cae_codec.compress(batches["test_batch"][0])
    with pytest.raises(cae_codec.FormatError, match="weights id 1"):
        cae_codec.decompress(data, weights=out)
