"""One timed training run on a lent GPU, prepared here and run there in a single call.

    python -m cae_codec.training.window pack ../shared/data/photos-train window-data/   # here, once
    python -m cae_codec.training.window run --data window-data/ --out OUT/ --minutes 9 --device cuda
    python -m cae_codec.training.window run --data window-data/ --out /tmp/w/ --minutes 1   # dry run

`pack` copies the training photos into parts small enough that each travels in one GPU call, with
the 16 validation crops. `run` resumes the committed state (runs/photo-s16/; without one, the
stride-16 recipe from cae-msh8-v3), trains for --minutes on random crops of the pack, validates on
its 16 crops, and leaves in --out: state/ (the network in parts, to commit over runs/photo-s16/),
log.csv, its curves, and window.json (steps, Mpixel/s, validation). It needs torch, numpy and Pillow,
not the entropy coders, so it runs where cae-codec is not installed. README: "Training on a lent GPU".
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..config import DEFAULT_LAMBDAS, TrainConfig, shipped_dir
from ..datasets import IMAGE_SUFFIXES, DataError, read_rgb, split_photos, validation_crops
from . import state as state_mod
from .loop import train, training_device
from .sources import PhotoSource

RUN = Path("runs/photo-s16")  # the committed state of the stride-16 photo network
INIT = "cae-msh8-v3.pt"  # the shipped weights the recipe starts a network from when it has no state
# The README's stride-16 network (Ballé et al. 2018 shapes, N=128, M=192).
NETWORK = {"N": 128, "M": 192, "hyper_N": 128, "hyper_M": 96, "stride": 16}
# A GPU call carries at most 64 MiB: the repository's tracked files (51.5 MiB in session 12, the
# committed state's 10 MB included) leave room for one part of the pack a call, with the validation
# crops (1.8 MiB) beside the first. Parts carried by earlier calls stay on the machine while it is
# warm, so the training photos travel whole over a few calls.
PART_BYTES = 8 * 2**20


class PackSource(PhotoSource):
    """PhotoSource over a pack: every photo of its parts for training, the crops of val/ for validation."""

    def __init__(self, folder: Path, crop: int) -> None:
        missing = check_pack(folder)
        if missing == ["pack.json"]:
            raise ValueError(f"{folder} is not a pack (no pack.json): make one with `pack` first")
        if missing:
            raise ValueError(f"{folder} lacks {', '.join(missing)}: carry each part in a call first")
        paths = sorted(p for p in folder.glob("part-*/*") if p.suffix.lower() in IMAGE_SUFFIXES)
        val = np.stack([read_rgb(p) for p in sorted((folder / "val").glob("*.png"))])
        self._take([read_rgb(p) for p in paths], val, crop, folder)


def check_pack(folder: Path) -> list[str]:
    """The parts of a pack that are not (or not wholly) in `folder`."""
    try:
        manifest = json.loads((folder / "pack.json").read_text())
    except OSError:
        return ["pack.json"]
    missing = []
    for part in manifest["parts"]:
        files = [p for p in (folder / part["name"]).glob("*") if p.is_file()]
        if len(files) != part["files"] or sum(p.stat().st_size for p in files) != part["bytes"]:
            missing.append(part["name"])
    return missing


def pack(
    photos: Path, out: Path, scale: float = 1.0, quality: int | None = None, part_bytes: int = PART_BYTES
) -> dict:
    """Copy a photo folder's training photos into parts of at most `part_bytes`, with the exact centre
    crops that validation uses (as PhotoCrops cuts them) as PNG in val/. By default the photos are
    copied as they are; with `quality`, each is shrunk by `scale` and saved as a JPEG of that quality."""
    training, held_out = split_photos(photos)
    out.mkdir(parents=True, exist_ok=True)
    (out / "val").mkdir(exist_ok=True)
    val = validation_crops([read_rgb(p) for p in held_out])
    for i, crop in enumerate(val):
        Image.fromarray(crop).save(out / "val" / f"{i:02d}.png")
    parts: list[dict] = []
    for i, path in enumerate(training):
        data = path.read_bytes() if quality is None else _shrunk(path, scale, quality)
        if not parts or parts[-1]["bytes"] + len(data) > part_bytes:
            parts.append({"name": f"part-{len(parts) + 1:02d}", "files": 0, "bytes": 0})
            (out / parts[-1]["name"]).mkdir(exist_ok=True)
        suffix = path.suffix.lower() if quality is None else ".jpg"
        (out / parts[-1]["name"] / f"{i:04d}{suffix}").write_bytes(data)
        parts[-1]["files"] += 1
        parts[-1]["bytes"] += len(data)
    val_bytes = sum(p.stat().st_size for p in (out / "val").iterdir())
    summary = {"photos": str(photos), "scale": scale, "quality": quality, "train": len(training)}
    summary |= {"val": len(val), "val_bytes": val_bytes, "parts": parts}
    (out / "pack.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def _shrunk(path: Path, scale: float, quality: int) -> bytes:
    with Image.open(path) as image:
        image = image.convert("RGB")
        if scale != 1:
            size = (round(image.width * scale), round(image.height * scale))
            image = image.resize(size, Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=quality, subsampling=0)
        return buffer.getvalue()


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
    training_device(device)  # a device this machine lacks is refused before the photos load
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
    p = commands.add_parser("pack", help="the training photos in parts, to carry to the GPU")
    p.add_argument("photos", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--scale", type=float, default=1.0, help="with --quality: shrink each photo so much")
    p.add_argument("--quality", type=int, help="re-encode each photo as a JPEG of this quality")
    p.add_argument("--part-mib", type=float, default=PART_BYTES / 2**20, help="the most a part takes")
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
        summary = pack(args.photos, args.out, args.scale, args.quality, int(args.part_mib * 2**20))
        sizes = ", ".join(f"{p['name']} {p['bytes'] / 2**20:.1f} MiB" for p in summary["parts"])
        print(f"wrote {args.out}: {summary['train']} training photos in {sizes}; {summary['val']} in val/")
        return
    try:
        summary = run(
            args.data, args.out, args.minutes, args.device, args.resume, args.batch_size, args.crop, args.lr
        )
    except (ValueError, OSError, DataError) as e:  # a bad device, a missing part: one line, no traceback
        sys.exit(f"window: {e}")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
