"""Every `cae-codec train` recipe in the README runs as written in a fresh clone, on tiny data with
its steps cut to 2: the folders it writes to, the files it starts from and its options must all work."""

import re
import shlex
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import write_cifar_archive
from PIL import Image

from cae_codec import weights
from cae_codec.cli import main

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


def test_every_readme_recipe_runs_in_a_fresh_clone(tmp_path, monkeypatch):
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
    monkeypatch.chdir(clone)
    for args in recipes():
        args = [str(archive) if a == "../shared/data/cifar10" else a for a in args]
        args = [str(photos) if a == "../shared/data/photos-train" else a for a in args]
        args = [SHORTENED.get(args[i - 1], a) if i else a for i, a in enumerate(args)]
        result = CliRunner().invoke(main, ["train", *args])
        assert result.exit_code == 0, (args, result.output)
        out = Path(args[args.index("--out") + 1])
        assert out.is_file() and out.parts[0] == "checkpoints"
