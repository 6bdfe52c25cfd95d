"""Every `cae-codec train` recipe in the README runs as written in a fresh clone, on tiny data with
its steps cut to 2: the folders it writes to, the files it starts from and its options must all work."""

import os
import re
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from conftest import write_cifar_archive
from PIL import Image

from cae_codec import weights

README = Path(__file__).resolve().parent.parent / "README.md"
SHORTENED = {"--steps": "2", "--eval-every": "2", "--checkpoint-minutes": "5"}


def recipes() -> list[list[str]]:
    """The README's `cae-codec train` commands in its ```bash blocks, in order, as argument lists."""
    if not README.is_file():
        return []
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), re.S):
        joined = block.replace("\\\n", " ")
        commands += [
            shlex.split(line)[2:] for line in joined.splitlines() if line.startswith("cae-codec train ")
        ]
    return commands


def test_the_readme_has_recipes():
    if not README.is_file():
        pytest.skip("no README.md beside the tests")
    assert len(recipes()) >= 6


def chains(commands: list[list[str]]) -> list[list[list[str]]]:
    """The commands in runs that must go in order (one starts --init-from what another wrote); the
    runs are independent of each other, so they can go side by side."""
    out: list[list[list[str]]] = []
    made: dict[str, int] = {}  # a path a command writes -> its run
    for args in commands:
        start = args[args.index("--init-from") + 1] if "--init-from" in args else None
        run = made.get(start) if start else None
        if run is None:
            out.append([])
            run = len(out) - 1
        out[run].append(args)
        for flag in ("--out", "--checkpoint"):
            if flag in args:
                made[args[args.index(flag) + 1]] = run
    return out


def test_every_readme_recipe_runs_in_a_fresh_clone(tmp_path):
    if not README.is_file():
        pytest.skip("no README.md beside the tests")
    clone = tmp_path / "clone"
    clone.mkdir()
    (clone / "weights").symlink_to(weights.shipped_dir())  # what a clone has; checkpoints/ it has not
    archive, _ = write_cifar_archive(tmp_path / "cifar", rows=300)  # 256 held out of the last
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (160, 200, 3), dtype=np.uint8)).save(photos / f"p{i}.png")
    commands = []
    for args in recipes():
        args = [str(archive) if a == "../shared/data/cifar10" else a for a in args]
        args = [str(photos) if a == "../shared/data/photos-train" else a for a in args]
        commands.append([SHORTENED.get(args[i - 1], a) if i else a for i, a in enumerate(args)])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # two runs at a time share the cores

    def run(chain: list[list[str]]) -> list[tuple[list[str], subprocess.CompletedProcess]]:
        done = []
        for args in chain:
            command = [sys.executable, "-m", "cae_codec", "train", *args]
            done.append((args, subprocess.run(command, cwd=clone, env=env, capture_output=True, text=True)))
            if done[-1][1].returncode:
                break
        return done

    with ThreadPoolExecutor(2) as pool:
        results = [r for chain in pool.map(run, chains(commands)) for r in chain]
    assert len(results) == len(commands)
    for args, result in results:
        assert result.returncode == 0, (args, result.stderr[-2000:])
        out = Path(args[args.index("--out") + 1])
        assert (clone / out).is_file() and out.parts[0] == "checkpoints"
