"""A training run's state on disk: one checkpoint file, or a folder of parts small enough to commit.

A folder holds `state.pt` (the step, random states, configuration, and a list of the parts with their
SHA-256) and `part-NN.pt` files of at most PART_BYTES each. Network weights are stored in float16 and
the optimizer's moments in bfloat16 (its second moments underflow float16); anything a cast would
overflow stays float32. python -m cae_codec.training.state OLD.ckpt FOLDER/ converts a checkpoint.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import torch

PART_BYTES = 15 * 2**20  # a part stays under 15 MiB: small enough for a git commit and a carry
STATE_FILE = "state.pt"
FORMAT = "cae-codec training state, version 1"
# What each group of tensors is stored as in parts (see the module's docstring).
STORED = {"model": torch.float16, "opt": torch.bfloat16}
FLOAT16_MAX = 65504.0
FILE_OVERHEAD, TENSOR_OVERHEAD = 4096, 1024  # what torch.save adds to a file and to each tensor in it


def is_parts(path: str | os.PathLike) -> bool:
    """A checkpoint path that names a folder of parts: an existing folder, or a name ending in /."""
    return Path(path).is_dir() or os.fspath(path).endswith(("/", os.sep))


def exists(path: str | os.PathLike) -> bool:
    return (Path(path) / STATE_FILE).is_file() if is_parts(path) else Path(path).is_file()


def save(path: str | os.PathLike, state: dict) -> None:
    """Write a run's state atomically: one file, or a folder of parts (is_parts)."""
    if is_parts(path):
        save_parts(Path(path), state)
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _save_atomic(state, path)


def load(path: str | os.PathLike) -> dict:
    """A run's state from one file or a folder of parts, on the CPU, tensors in their training dtypes."""
    if is_parts(path):
        return load_parts(Path(path))
    return torch.load(path, map_location="cpu", weights_only=True)


def save_parts(folder: Path, state: dict, part_bytes: int = PART_BYTES) -> list[Path]:
    """Write `state` as state.pt and parts of at most `part_bytes`; the folder's old parts go after."""
    folder.mkdir(parents=True, exist_ok=True)  # parents too: a fresh clone has no runs/ yet
    tensors: dict[str, torch.Tensor] = {}
    skeleton = {key: _strip(value, key, tensors) for key, value in state.items()}
    groups: list[dict[str, torch.Tensor]] = [{}]
    size = FILE_OVERHEAD
    for name, tensor in tensors.items():
        cost = tensor.numel() * tensor.element_size() + TENSOR_OVERHEAD
        if cost + FILE_OVERHEAD > part_bytes:
            raise ValueError(f"tensor {name} alone takes {cost} bytes, more than a part's {part_bytes}")
        if size + cost > part_bytes:
            groups.append({})
            size = FILE_OVERHEAD
        groups[-1][name] = tensor
        size += cost
    written, parts = [], []
    for i, group in enumerate(groups):
        target = folder / f"part-{i:02d}.pt"
        _save_atomic(group, target)
        if target.stat().st_size > part_bytes:  # the overheads below are generous; this never happens
            raise RuntimeError(f"{target} came out larger than {part_bytes} bytes")
        parts.append({"file": target.name, "sha256": _sha256(target)})
        written.append(target)
    skeleton["_parts"] = parts
    skeleton["_format"] = FORMAT
    _save_atomic(skeleton, folder / STATE_FILE)  # the new state exists only once this is in place
    for old in folder.glob("part-*.pt"):
        if old not in written:
            old.unlink()
    return [folder / STATE_FILE, *written]


def load_parts(folder: Path) -> dict:
    """The state save_parts wrote, each part checked against its SHA-256."""
    skeleton = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True)
    if skeleton.get("_format") != FORMAT:
        raise ValueError(f"{folder / STATE_FILE} is not a {FORMAT}")
    tensors: dict[str, torch.Tensor] = {}
    for part in skeleton.pop("_parts"):
        path = folder / part["file"]
        if _sha256(path) != part["sha256"]:
            raise ValueError(f"{path} does not match its SHA-256 in {STATE_FILE}: a part is missing or stale")
        tensors.update(torch.load(path, map_location="cpu", weights_only=True))
    skeleton.pop("_format")
    return {key: _fill(value, tensors) for key, value in skeleton.items()}


def _strip(value, name: str, tensors: dict[str, torch.Tensor]):
    """`value` with each floating tensor of a STORED group replaced by its name in `tensors`."""
    if isinstance(value, dict):
        return {k: _strip(v, f"{name}/{k}", tensors) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_strip(v, f"{name}/{i}", tensors) for i, v in enumerate(value))
    group = name.split("/", 1)[0]
    stored = isinstance(value, torch.Tensor) and value.is_floating_point() and value.dim() > 0
    if not (stored and group in STORED):
        return value
    value = value.detach().cpu()
    dtype = STORED[group]
    if dtype == torch.float16 and value.abs().max() > FLOAT16_MAX:
        dtype = torch.float32
    tensors[name] = value.to(dtype)
    return {"_tensor": name, "dtype": str(value.dtype).removeprefix("torch.")}


def _fill(value, tensors: dict[str, torch.Tensor]):
    if isinstance(value, dict) and "_tensor" in value:
        return tensors[value["_tensor"]].to(getattr(torch, value["dtype"]))
    if isinstance(value, dict):
        return {k: _fill(v, tensors) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_fill(v, tensors) for v in value)
    return value


def _save_atomic(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python -m cae_codec.training.state CHECKPOINT FOLDER/  (either way round)")
    save(sys.argv[2], load(sys.argv[1]))
    print(f"wrote {sys.argv[2]}")
