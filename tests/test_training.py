"""Training that outlives machines: runs on the clock, state in committable parts, crops cut on the device."""

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import train

from cae_codec import weights
from cae_codec.config import TrainConfig
from cae_codec.model import ModelConfig, build
from cae_codec.training import loop, state
from cae_codec.training.sources import DeviceCrops


def test_a_run_on_the_clock_stops_on_time_validates_and_saves(tiny_cifar, tmp_path):
    archive, _ = tiny_cifar
    ckpt, log = tmp_path / "run.ckpt", tmp_path / "log.csv"
    args = ["--minutes", "0.03", "--steps", "1000000", "--eval-every", "1000000", "--lambdas", "0.01,0.05"]
    train(archive, tmp_path / "mine.pt", *args, "--checkpoint", str(ckpt), "--log", str(log))
    saved = state.load(ckpt)
    assert 1.8 <= saved["seconds"] < 10 and 1 < saved["step"] < 1000000
    rows = list(csv.DictReader(log.open()))
    assert {r["step"] for r in rows} == {str(saved["step"])}  # validated once, at the end
    assert "psnr_q2" in {r["metric"] for r in rows}


def test_the_learning_rate_follows_the_share_of_the_run_behind_us():
    cfg = TrainConfig(out=None, lr=1e-3)
    assert loop._lr_at(0.0, cfg) == pytest.approx(1e-3)
    assert loop._lr_at(0.5, cfg) == pytest.approx(1e-3 * (0.05 + 0.95 * 0.5))
    assert loop._lr_at(1.0, cfg) == pytest.approx(5e-5) == loop._lr_at(3.0, cfg)


def _trained_state() -> dict:
    model = build(ModelConfig(N=32, M=16, hyper_N=16, hyper_M=8, levels=3))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.rand(3, 3, 64, 64)
    _, bits = model(x, torch.tensor([0, 1, 2]))
    bits.sum().backward()
    opt.step()
    return {
        "model": model.state_dict(),
        "opt": opt.state_dict(),
        "step": 7,
        "seconds": 12.5,
        "config": {"N": 32},
    }


def test_state_in_parts_round_trips_within_half_precision(tmp_path):
    saved = _trained_state()
    files = state.save_parts(tmp_path / "run", saved, part_bytes=120_000)
    parts = [f for f in files if f.name.startswith("part-")]
    assert len(parts) > 2 and all(f.stat().st_size <= 120_000 for f in parts)
    back = state.load(tmp_path / "run")
    assert back["step"] == 7 and back["seconds"] == 12.5 and back["config"] == {"N": 32}
    for name, tensor in saved["model"].items():
        assert back["model"][name].dtype == tensor.dtype
        torch.testing.assert_close(back["model"][name], tensor, rtol=1e-3, atol=1e-4)
    moments = saved["opt"]["state"][0]
    torch.testing.assert_close(
        back["opt"]["state"][0]["exp_avg_sq"], moments["exp_avg_sq"], rtol=1e-2, atol=0
    )
    assert back["opt"]["param_groups"] == saved["opt"]["param_groups"]


def test_a_stale_or_missing_part_is_refused(tmp_path):
    folder = tmp_path / "run"
    state.save_parts(folder, _trained_state(), part_bytes=120_000)
    victim = folder / "part-01.pt"
    victim.write_bytes(victim.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(ValueError, match="part-01.pt does not match"):
        state.load(folder)
    state.save_parts(folder, _trained_state(), part_bytes=1_000_000)  # fewer parts: old ones removed
    assert sorted(p.name for p in folder.iterdir()) == ["part-00.pt", "state.pt"]


def test_a_run_resumes_from_parts_as_from_one_file(tiny_cifar, tmp_path):
    """Parts are what a fresh clone resumes from: two steps, then two more, from the folder alone."""
    archive, _ = tiny_cifar
    parts = f"{tmp_path / 'run'}/"
    common = ["--lambdas", "0.01,0.05", "--eval-every", "2", "--checkpoint", parts]
    train(archive, tmp_path / "a.pt", *common, "--steps", "2")
    assert (tmp_path / "run" / "state.pt").is_file() and (tmp_path / "run" / "part-00.pt").is_file()
    assert state.load(tmp_path / "run")["step"] == 2
    train(archive, tmp_path / "b.pt", *common, "--steps", "4")
    resumed = state.load(tmp_path / "run")
    assert resumed["step"] == 4 and resumed["seconds"] > 0
    # --steps 0 exports a state as it is: how a GPU window's state becomes a weight file here.
    out = tmp_path / "exported.pt"
    train(archive, out, "--lambdas", "0.01,0.05", "--init-from", str(tmp_path / "run"), "--steps", "0")
    exported = weights.load(out).model.state_dict()
    torch.testing.assert_close(exported["g_a.0.weight"], resumed["model"]["g_a.0.weight"])


def test_device_crops_cut_exact_windows_and_box_averages():
    rng = np.random.default_rng(0)
    photos = [
        rng.integers(0, 256, (40, 50, 3), dtype=np.uint8),
        rng.integers(0, 256, (36, 34, 3), dtype=np.uint8),
    ]
    crops = DeviceCrops(photos, 16, torch.device("cpu"))
    index, top, left = np.array([0, 1, 1, 0]), np.array([3, 20, 0, 0]), np.array([5, 18, 1, 18])
    side, flip = np.array([16, 16, 16, 32]), np.array([False, False, True, False])
    got = (crops.cut(index, top, left, side, flip) * 255).permute(0, 2, 3, 1).numpy()
    want = [photos[0][3:19, 5:21], photos[1][20:36, 18:34], photos[1][0:16, 1:17][:, ::-1]]
    for g, w in zip(got, want, strict=False):
        np.testing.assert_allclose(g, w, atol=1e-3)
    region = photos[0][0:32, 18:50].astype(float)
    box = region.reshape(16, 2, 16, 2, 3).mean(axis=(1, 3))
    np.testing.assert_allclose(got[3], box, atol=1e-3)
    batch = crops.batch(rng, 6)
    assert batch.shape == (6, 3, 16, 16) and batch.min() >= 0 and batch.max() <= 1


BLOCK_CODERS = """
import runpy, sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("zstandard", "constriction"):
            raise ImportError(f"{name} is not on the GPU machine")
sys.meta_path.insert(0, Block())
sys.argv = ["window", *sys.argv[1:]]
runpy.run_module("cae_codec.training.window", run_name="__main__")
"""


def test_the_gpu_window_packs_runs_without_the_coders_and_resumes_its_own_state(tmp_path):
    """The window's CPU dry run: pack a photo folder, train from the recipe, then resume that state."""
    import json
    import subprocess
    import sys

    from PIL import Image

    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):  # 200x160 with blocky texture: more than 5 KB each as PNG, so a part each
        texture = np.kron(rng.integers(0, 256, (40, 50, 3)), np.ones((4, 4, 1))).astype(np.uint8)
        Image.fromarray(texture).save(photos / f"p{i}.png")
    window = [sys.executable, "-c", BLOCK_CODERS]
    args = [*window, "pack", str(photos), str(tmp_path / "pack"), "--part-mib", "0.005"]
    packed = subprocess.run(args, capture_output=True, text=True)
    assert packed.returncode == 0, packed.stderr
    manifest = json.loads((tmp_path / "pack/pack.json").read_text())
    assert manifest["train"] == 3 and len(list((tmp_path / "pack/val").glob("*.png"))) == 1
    assert [p["files"] for p in manifest["parts"]] == [1, 1, 1]
    assert (tmp_path / "pack/part-02/0001.png").read_bytes() == (photos / "p2.png").read_bytes()
    common = ["--data", str(tmp_path / "pack"), "--minutes", "0.04", "--batch-size", "2", "--crop", "64"]
    moved = tmp_path / "elsewhere"
    (tmp_path / "pack/part-03").rename(moved)  # a part that has not travelled yet
    lacking = subprocess.run(
        [*window, "run", *common, "--out", str(tmp_path / "w0")], capture_output=True, text=True
    )
    assert lacking.returncode != 0 and "lacks part-03: carry each part in a call first" in lacking.stderr
    moved.rename(tmp_path / "pack/part-03")

    def run_window(out: str, resume: Path) -> dict:
        done = subprocess.run(
            [*window, "run", *common, "--out", str(tmp_path / out), "--resume", str(resume)]
        )
        assert done.returncode == 0
        return json.loads((tmp_path / out / "window.json").read_text())

    one = run_window("w1", tmp_path / "none")
    assert one["from_step"] == 0 and one["to_step"] > 0 and "loss_q8" in one["validation"]
    assert "opt" not in state.load(tmp_path / "w1/state")  # the network alone: it must fit in a call
    two = run_window("w2", tmp_path / "w1/state")
    assert two["from_step"] == one["to_step"] < two["to_step"]
    assert (tmp_path / "w2/log.csv").is_file()
