"""The README's figures that come from the code are checked against the code, so they cannot drift."""

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from cae_codec import cli

README = Path(__file__).resolve().parent.parent / "README.md"
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "chelsea.png"


@pytest.fixture(scope="module")
def readme() -> str:
    if not README.is_file():
        pytest.skip("no README.md beside the tests (an installed package without its repository)")
    return README.read_text()


def test_the_headline_example_prints_what_the_readme_shows(readme, tmp_path):
    line = r"(\d+) bytes, ([\d.]+) bpp, quality (\d+), \d+ ms, PSNR ([\d.]+) dB"
    shown = re.search(r"chelsea\.png -> chelsea\.cae: " + line, readme)
    assert shown, "the README's headline example is gone"
    out = tmp_path / "chelsea.cae"
    # The headline is float32's, as on a CPU without bfloat16 units; the bf16 figures follow it.
    args = ["compress", str(EXAMPLE), "-o", str(out), "--psnr", "--force"]
    result = CliRunner().invoke(cli.main, [*args, "--precision", "fp32"])
    assert result.exit_code == 0, result.output
    printed = re.search(line, result.output)
    assert printed.groups() == shown.groups()
    from cae_codec import codec

    bf16 = re.search(r"the same command\s+writes (\d+) bytes at ([\d.]+) dB", readme)
    assert bf16, "the README's bf16 figures are gone"
    if codec.use_bf16("auto"):
        result = CliRunner().invoke(cli.main, [*args, "--precision", "bf16"])
        printed = re.search(line, result.output)
        assert (printed.group(1), printed.group(4)) == bf16.groups()


def test_the_readme_states_the_thresholds_the_code_uses(readme):
    assert f"more than about {cli.PARALLEL_AFTER_S:g} s" in readme
    assert f"A run of {cli.PROGRESS_FROM} files or more" in readme
    assert "--size HxW" not in readme and "HEIGHTxWIDTH" not in readme  # sizes are width x height
