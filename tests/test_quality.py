"""The 0-100 quality scale, qualities between levels, and targets of size, PSNR and MS-SSIM."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import at_level, sample_image
from PIL import Image

import cae_codec
from cae_codec import metrics, quality, targets, weights
from cae_codec.cli import main
from cae_codec.container import FRACTION, unpack

REPO = Path(__file__).resolve().parent.parent
KODAK = REPO.parent / "shared" / "data" / "kodak"
CHELSEA = np.asarray(Image.open(REPO / "examples" / "chelsea.png").convert("RGB"))[80:200, 150:310]
EIGHTHS = [at_level(1 + i / 8) for i in range(57)]  # level 1 to 8 in eighths


@pytest.fixture(scope="module")
def kodak_crops() -> list[np.ndarray]:
    if not KODAK.is_dir():
        pytest.skip(f"no Kodak images at {KODAK}")
    return [
        np.asarray(Image.open(KODAK / f"kodim{i:02d}.png").convert("RGB"))[:128, :192] for i in (1, 5, 23)
    ]


def test_levels_sit_at_integer_qualities_and_every_integer_is_its_own_position():
    assert quality.anchors(8) == [0, 14, 29, 43, 57, 71, 86, 100]
    assert [quality.position(q, 8) for q in quality.anchors(8)] == [(k, 0) for k in range(1, 9)]
    assert len({quality.position(q, 8) for q in range(101)}) == 101
    assert quality.position(21.5, 8) == (2, 128) and quality.position(100, 8) == (8, 0)
    assert quality.position(50, 1) == (1, 0) and quality.anchors(2) == [0, 100]
    for index in range(7 * FRACTION + 1):  # every position is named by its own quality
        at = quality.Position(1 + index // FRACTION, index % FRACTION)
        assert quality.position(quality.of_position(*at, 8), 8) == at
    assert quality.describe(2, 128, 8) == "21.5 (level 2.5)" and quality.describe(6, 0, None) == "level 6"


def test_a_file_between_levels_records_its_fraction_and_whole_levels_are_unchanged():
    image = sample_image(60, 50, "RGB")
    between = unpack(cae_codec.compress(image, quality=50))
    assert (between.header.level, between.header.fraction) == (4, 128)  # halfway from 43 to 57
    assert between.header.tables == 5  # the wider tables of the level above: no escapes
    whole = cae_codec.compress(image, quality=43)
    assert whole[1] & 0xF == 1 and cae_codec.read_header(whole).position == 4
    assert np.asarray(cae_codec.decompress(whole)).shape == (50, 60, 3)
    # The batch API gives the same files between levels.
    assert cae_codec.compress_many([image, image], quality=50) == [cae_codec.compress(image, quality=50)] * 2


def test_rate_and_psnr_rise_along_every_eighth_of_the_scale(kodak_crops):
    rates, psnrs = [], []
    for q in EIGHTHS:
        files = cae_codec.compress_many(kodak_crops, q)
        decoded = cae_codec.decompress_many(files)
        rates.append(np.mean([len(f) for f in files]))
        psnrs.append(
            np.mean([metrics.psnr(a, np.asarray(b)) for a, b in zip(kodak_crops, decoded, strict=True)])
        )
    assert len(set(rates)) == 57
    assert np.all(np.diff(rates) > 0) and np.all(np.diff(psnrs) > 0)


def test_a_file_between_levels_decodes_with_segments(tiny_hyper):
    array = sample_image(203, 150, "RGB")
    cut = cae_codec.compress(array, 30, weights=tiny_hyper, segment=64)
    header = unpack(cut).header
    assert cut[1] & 0xF == 3 and header.segments == 12 and header.fraction > 0
    whole = cae_codec.decompress(cae_codec.compress(array, 30, weights=tiny_hyper), weights=tiny_hyper)
    decoded = cae_codec.decompress(cut, weights=tiny_hyper)
    assert metrics.psnr(array, np.asarray(decoded)) > metrics.psnr(array, np.asarray(whole)) - 0.3


def test_target_size_gives_the_highest_quality_that_fits():
    image = CHELSEA
    top = len(cae_codec.compress(image, quality=100))
    for size in (top // 2, top // 3):
        data, reached = targets.compress_to(image, targets.Target("size", size))
        assert 0.97 * size <= len(data) <= size and reached.bytes == len(data)
        assert cae_codec.read_header(data).position == pytest.approx(reached.level)
        step = quality.of_level(reached.level + 1 / FRACTION, 8)
        assert len(cae_codec.compress(image, quality=step)) > size  # one 256th higher would not fit
    with pytest.raises(targets.TargetError, match="no quality fits 10 bytes: quality 0 takes"):
        targets.compress_to(image, targets.Target("size", 10))


def test_quality_targets_give_the_smallest_file_that_reaches_them():
    image = CHELSEA
    for kind, value, measure in (("psnr", 35.0, metrics.psnr), ("ms-ssim", 0.985, metrics.ms_ssim)):
        data, reached = targets.compress_to(image, targets.Target(kind, value))
        decoded = np.asarray(cae_codec.decompress(data))
        assert measure(image, decoded) >= value and reached.level > 1
        below = cae_codec.compress(image, quality=quality.of_level(reached.level - 1 / FRACTION, 8))
        assert measure(image, np.asarray(cae_codec.decompress(below))) < value  # one 256th lower does not
    with pytest.raises(targets.TargetError, match="no quality reaches psnr 80 dB: quality 100 gives"):
        targets.compress_to(image, targets.Target("psnr", 80))
    with pytest.raises(ValueError, match="cannot be met"):
        targets.compress_to(image, targets.Target("ms-ssim", 1.5))


@pytest.mark.parametrize(
    "text, size", [("40KB", 40_000), ("40kb", 40_000), ("1.5MB", 1_500_000), ("64KiB", 65_536), ("900", 900)]
)
def test_sizes_read_like_cwebps(text, size):
    assert targets.parse_size(text) == size


def test_the_command_line_reports_what_a_target_reached_and_writes_nothing_it_cannot_meet(tmp_path):
    png = tmp_path / "a.png"
    Image.fromarray(sample_image(96, 64, "RGB", seed=2)).save(png)
    runner = CliRunner()
    result = runner.invoke(main, ["compress", str(png), "--target-size", "2KB", "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["bytes"] <= 2000 and record["target"]["kind"] == "size" and record["target"]["tries"] > 2
    assert 0 <= record["quality"] <= 100
    result = runner.invoke(main, ["compress", str(png), "--target-psnr", "28", "-o", str(tmp_path / "p.cae")])
    assert result.exit_code == 0 and "(target psnr 28" in result.stdout and "PSNR" in result.stdout
    result = runner.invoke(main, ["compress", str(png), "--target-size", "20", "-o", str(tmp_path / "t.cae")])
    assert result.exit_code == 1 and "no quality fits 20 bytes" in result.stderr
    assert not (tmp_path / "t.cae").exists()


def test_thin_images_are_folded_and_cost_time_in_proportion_to_their_pixels():
    from cae_codec import codec

    assert codec.fold_count(1_000_000, 1, 64) == 64  # 15,625 x 64: exactly the pad multiple's rows
    assert codec.fold_count(768, 512, 64) == 1
    assert codec.fold_count(65, 1000, 64) == 1  # a short side of a whole pad multiple is never folded
    for width, height in ((5000, 1), (3, 2001), (999, 7), (1, 1000)):
        array = sample_image(width, height, "RGBA")
        data = cae_codec.compress(array)
        header = unpack(data).header
        m = weights.load(weights_id=header.weights_id).model.config.pad_multiple
        padded = math.prod(-(-side // m) * m for side in header.coded_size)
        assert header.fold > 1 and padded <= 2 * width * height + 2 * m * m
        back = np.asarray(cae_codec.decompress(data))
        assert back.shape == array.shape and np.array_equal(back[..., 3], array[..., 3])
        assert metrics.psnr(array[..., :3], back[..., :3]) > 15
        rgb = array[..., :3]
        assert np.array_equal(codec.unfold(codec.fold(rgb, header.fold), width, height, header.fold), rgb)
