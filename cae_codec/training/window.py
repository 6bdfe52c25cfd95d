"""One timed training run on a lent GPU, prepared on the CPU and run in a single call.

    python -m cae_codec.training.window pack ../shared/data/photos-train window-data/   # CPU, once
    python -m cae_codec.training.window run --data window-data/ --out OUT/ --minutes 9 --device cuda
    python -m cae_codec.training.window run --data window-data/ --out /tmp/w/ --minutes 1   # dry run

`run` resumes the committed state (runs/photo-s16/, or starts the stride-16 recipe from cae-msh8-v3),
trains for --minutes on the pack's crops, validates on the pack's 16 held-out crops, and leaves in
--out: state/ (the network in parts, ready to commit over runs/photo-s16/), log.csv, its curves, and
window.json (steps, Mpixel/s, validation). It needs torch, numpy and Pillow only, not the entropy
coders, so it runs on a machine where cae-codec is not installed. The README's "Training on a lent
GPU" says how to run it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..config import DEFAULT_LAMBDAS, TrainConfig, shipped_dir
from ..datasets import VAL_CROP, centre_crop, read_rgb, split_photos
from . import state as state_mod
from .loop import train
from .sources import PhotoSource

RUN = Path("runs/photo-s16")  # the committed state of the stride-16 photo network
INIT = "cae-msh8-v3.pt"  # the shipped weights the recipe starts a network from when it has no state
# The README's stride-16 network (Ballé et al. 2018 shapes, N=128, M=192).
NETWORK = {"N": 128, "M": 192, "hyper_N": 128, "hyper_M": 96, "stride": 16}
# What a GPU call can carry besides the repository's tracked files (about 40 MiB of its 64 MiB) and
# the committed state (about 10 MB): the pack must fit in the rest.
PACK_BUDGET = 14 * 2**20
PACK_SCALE, PACK_QUALITY = 0.5, 90  # measured: 752 photos at full size take 54 MiB as quality-90 JPEG


class PackSource(PhotoSource):
    """PhotoSource over a pack: every photo of train/ for training, the crops of val/ for validation."""

    def __init__(self, folder: Path, crop: int) -> None:
        self.crop = crop
        images = [read_rgb(p) for p in sorted((folder / "train").glob("*.jpg"))]
        self.images = [im for im in images if min(im.shape[:2]) >= crop]
        if not self.images:
            raise ValueError(f"no photo in {folder / 'train'} is at least {crop} pixels a side")
        self.validation = np.stack([read_rgb(p) for p in sorted((folder / "val").glob("*.png"))])


def pack(photos: Path, out: Path, scale: float = PACK_SCALE, quality: int = PACK_QUALITY) -> dict:
    """Write a compact copy of a photo folder: its training photos shrunk by `scale` as JPEG, and
    the exact centre crops that validation uses (as PhotoCrops cuts them) as PNG."""
    training, held_out = split_photos(photos)
    (out / "train").mkdir(parents=True, exist_ok=True)
    (out / "val").mkdir(exist_ok=True)
    for i, path in enumerate(training):
        with Image.open(path) as image:
            image = image.convert("RGB")
            size = (round(image.width * scale), round(image.height * scale))
            small = image.resize(size, Image.Resampling.LANCZOS) if scale != 1 else image
            small.save(out / "train" / f"{i:04d}.jpg", quality=quality, subsampling=0)
    val = [read_rgb(p) for p in held_out]
    side = min(VAL_CROP, *(min(im.shape[:2]) for im in val))
    for i, image in enumerate(val):
        Image.fromarray(centre_crop(image, side - side % 64)).save(out / "val" / f"{i:02d}.png")
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    summary = {"photos": str(photos), "scale": scale, "quality": quality, "train": len(training)}
    summary |= {"val": len(val), "bytes": total}
    (out / "pack.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def run(
    data: Path,
    out: Path,
    minutes: float,
    device: str = "cpu",
    resume: Path = RUN,
    batch_size: int = 16,
    crop: int = 128,
    lr: float = 1e-4,
    lambdas: tuple[float, ...] = DEFAULT_LAMBDAS,
    seed: int | None = None,
) -> dict:
    """Resume `resume` (or start the recipe), train `minutes` on `device`, and leave the new state,
    the log and a summary in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    state_dir = out / "state"
    init_from = None
    network = dict(NETWORK)
    start_step = 0
    if state_mod.exists(f"{resume}/"):
        saved = state_mod.load(f"{resume}/")
        saved["seconds"] = 0.0  # this window's schedule starts afresh: a warm restart
        network = {k: saved["config"][k] for k in NETWORK}
        lambdas = tuple(saved["config"]["lambdas"])
        start_step = saved["step"]
        seed = start_step if seed is None else seed  # new crops, not the last window's again
        state_mod.save(f"{state_dir}/", saved)
    else:
        init_from = shipped_dir() / INIT
        shutil.rmtree(state_dir, ignore_errors=True)
    cfg = TrainConfig(
        out=None,
        photos=data,
        steps=10**9,
        minutes=minutes,
        batch_size=batch_size,
        crop=crop,
        lr=lr,
        lambdas=lambdas,
        seed=seed or 0,
        eval_every=10**9,  # validate once, at the end
        checkpoint=f"{state_dir}/",
        checkpoint_optimizer=False,  # the committed state must leave room for the photos in a call
        checkpoint_minutes=max(1.0, minutes / 3),
        log_csv=out / "log.csv",
        device=device,
        init_from=init_from,
        **network,
    )
    metrics: dict = {}

    def on_progress(p) -> None:
        if p.metrics:
            metrics.update(p.metrics)

    started = time.monotonic()
    train(cfg, on_progress, PackSource(data, crop))
    seconds = time.monotonic() - started
    end = state_mod.load(f"{state_dir}/")
    steps = end["step"] - start_step
    summary = {
        "device": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu",
        "from_step": start_step,
        "to_step": end["step"],
        "minutes": minutes,
        "wall_s": round(seconds, 1),
        "train_s": round(end["seconds"], 1),
        "batch_size": batch_size,
        "crop": crop,
        "mpixel_per_s": round(steps * batch_size * crop * crop / end["seconds"] / 1e6, 2),
        "validation": metrics,
    }
    (out / "window.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m cae_codec.training.window", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("pack", help="a compact copy of a photo folder, to carry to the GPU")
    p.add_argument("photos", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--scale", type=float, default=PACK_SCALE)
    p.add_argument("--quality", type=int, default=PACK_QUALITY)
    r = commands.add_parser("run", help="resume the committed state and train for some minutes")
    r.add_argument("--data", type=Path, required=True, help="a folder that `pack` wrote")
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--minutes", type=float, required=True)
    r.add_argument("--device", default="cpu")
    r.add_argument("--resume", type=Path, default=RUN, help=f"a state in parts (default {RUN})")
    r.add_argument("--batch-size", type=int, default=16)
    r.add_argument("--crop", type=int, default=128)
    r.add_argument("--lr", type=float, default=1e-4)
    args = parser.parse_args(argv)
    if args.command == "pack":
        summary = pack(args.photos, args.out, args.scale, args.quality)
        print(json.dumps(summary))
        if summary["bytes"] > PACK_BUDGET:
            sys.exit(f"the pack takes {summary['bytes']} bytes; a GPU call has room for {PACK_BUDGET}")
        return
    summary = run(
        args.data, args.out, args.minutes, args.device, args.resume, args.batch_size, args.crop, args.lr
    )
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
