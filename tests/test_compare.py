"""The compare page, loaded in a real browser: Debian's chromium-headless-shell driven by Playwright."""

import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from cae_codec.cli import main

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "chelsea.png"
W, H = 96, 64


def _browser() -> str:
    """The headless Chromium's path, or a skip that says what is missing (never a silent pass)."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("Playwright is not installed (pip install playwright); the page was not tested")
    path = os.environ.get("CAE_CODEC_BROWSER") or shutil.which("chromium-headless-shell")
    if not path:
        pytest.skip(
            "no chromium-headless-shell (apt install chromium-headless-shell); the page was not tested"
        )
    return path


@pytest.fixture(scope="module")
def page_file(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("compare")
    Image.open(EXAMPLE).convert("RGB").crop((180, 90, 180 + W, 90 + H)).save(folder / "cat.png")
    result = CliRunner().invoke(main, ["compare", str(folder / "cat.png"), "--size", "1500"])
    assert result.exit_code == 0, result.output
    assert "wrote" in result.stderr and "cae-codec" in result.stdout
    return folder / "cat.compare.html"


def test_the_page_is_one_file_that_needs_no_network(page_file):
    text = page_file.read_text()
    assert "http://" not in text and "https://" not in text
    sources = text.count("data:image/webp;base64,")
    assert sources >= 3 and "data:image/png" not in text  # original and two codecs or more
    assert sources == text.count('class="thumb"')  # each picture once: the thumbnails share it


def test_the_page_in_a_browser_decodes_every_image_swipes_and_zooms(page_file):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_browser(), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 900, "height": 900})
        errors, requests = [], []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("request", lambda r: requests.append(r.url))
        page.goto(page_file.as_uri())
        page.wait_for_load_state("load")
        sizes = page.evaluate(
            "Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight])"
        )
        assert len(sizes) >= 2 + 3 and all(s == [True, W, H] for s in sizes)
        names = page.evaluate(
            "Array.from(document.querySelectorAll('#left-choice option')).map(o => o.value)"
        )
        assert names[:2] == ["original", "cae-codec"] and page.locator("table tr").count() == len(names)
        assert page.locator("#rd polyline").count() >= 2

        stage = page.locator("#stage")

        def shot() -> np.ndarray:
            return np.asarray(Image.open(io.BytesIO(stage.screenshot())).convert("RGB")).astype(int)

        def differ(a: np.ndarray, b: np.ndarray) -> float:
            """Mean difference away from the edges, where the swipe bar and the view's border sit."""
            h, w = min(a.shape[0], b.shape[0]), min(a.shape[1], b.shape[1])
            return float(np.abs(a[2 : h - 2, 4 : w - 4] - b[2 : h - 2, 4 : w - 4]).mean())

        page.locator("#slider").fill("0")
        assert page.evaluate("document.getElementById('clip').style.width") == "0%"
        right_only = shot()
        page.locator("#slider").fill("100")
        left_only = shot()
        assert differ(right_only, left_only) > 2  # the original against cae-codec's decode
        page.select_option("#right-choice", "original")
        page.locator("#slider").fill("0")
        assert differ(shot(), left_only) < 0.5  # the same picture on both sides

        page.click("#zoom-2")
        box = stage.bounding_box()
        assert (round(box["width"]), round(box["height"])) == (2 * W, 2 * H)
        doubled = shot()
        assert abs(doubled.shape[0] - 2 * H) <= 1 and abs(doubled.shape[1] - 2 * W) <= 1
        # 2:1 shows each pixel as a 2x2 block of the 1:1 picture.
        assert differ(doubled[::2, ::2], left_only) < 2 < differ(doubled[: H + 1, :W], left_only)
        page.click("#zoom-1")
        assert round(stage.bounding_box()["width"]) == W
        browser.close()
    assert not errors
    assert all(url.startswith(("file:", "data:")) for url in requests)


def test_compare_refuses_what_it_cannot_do_and_writes_nothing(tmp_path):
    Image.open(EXAMPLE).convert("RGB").crop((0, 0, 40, 30)).save(tmp_path / "a.png")
    runner = CliRunner()
    result = runner.invoke(main, ["compare", str(tmp_path / "a.png"), "--size", "10", "--codecs", "jpeg"])
    assert result.exit_code == 1 and "no codec can come down to 10 bytes" in result.stderr
    assert not (tmp_path / "a.compare.html").exists()
    for args, hint in (
        (["--size", "ten"], "--size"),
        (["--codecs", "gif"], "--codecs"),
        (["-o", str(tmp_path / "a.txt")], "-o"),
    ):
        result = runner.invoke(main, ["compare", str(tmp_path / "a.png"), *args])
        assert result.exit_code == 2 and hint in result.stderr
    (tmp_path / "a.compare.html").write_text("mine")
    result = runner.invoke(main, ["compare", str(tmp_path / "a.png"), "--codecs", "jpeg"])
    assert result.exit_code == 1 and "exists" in result.stderr
    assert (tmp_path / "a.compare.html").read_text() == "mine"
