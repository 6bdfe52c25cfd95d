from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import at_level, sample_image
from PIL import Image

import cae_codec
from cae_codec import codec, config, latent_codecs, metrics, weights
from cae_codec.container import unpack
from cae_codec.datasets import load_cifar10

DATA = Path(__file__).parent / "data"


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA"])
@pytest.mark.parametrize("size", [(1, 1), (17, 31), (32, 32), (451, 300)])
def test_round_trip_keeps_size_mode_and_alpha(mode, size):
    width, height = size
    array = sample_image(width, height, mode)
    data = cae_codec.compress(array, quality=at_level(4))
    image = cae_codec.decompress(data)
    assert image.size == (width, height)
    assert image.mode == mode
    if mode == "RGBA":
        np.testing.assert_array_equal(np.asarray(image)[:, :, 3], array[:, :, 3])


def test_pil_and_array_inputs_give_the_same_file():
    array = sample_image(40, 24, "RGB")
    assert cae_codec.compress(array) == cae_codec.compress(Image.fromarray(array))


def test_header_records_weights_quality_and_coder():
    data = cae_codec.compress(sample_image(32, 32, "RGB"), quality=29, coder="range")  # level 3 of 8
    header = cae_codec.read_header(data)
    assert (header.weights_id, header.level, header.fraction, header.coder) == (
        weights.DEFAULT_ID,
        3,
        0,
        "range",
    )
    assert (header.width, header.height, header.mode) == (32, 32, "RGB")


@pytest.mark.parametrize("size", [(32, 32), (120, 80), (272, 256)])
def test_auto_coder_keeps_the_smaller_file_of_the_coders_worth_trying(size, monkeypatch):
    image = sample_image(*size, "RGB")
    each = {c: cae_codec.compress(image, quality=at_level(4), coder=c) for c in ("zstd", "range")}
    tried = []
    real = codec.encode_symbols
    monkeypatch.setattr(codec, "encode_symbols", lambda w, s, q, c: tried.append(c) or real(w, s, q, c))
    auto = cae_codec.compress(image, quality=at_level(4))  # auto is the default
    # zstd never made the smaller file of a small image in benchmarks/coders.py, so auto skips it there
    worth = ("zstd", "range") if size[0] * size[1] > config.ZSTD_MIN_PIXELS else ("range",)
    assert tuple(dict.fromkeys(tried)) == worth
    smaller = min(worth, key=lambda c: len(each[c]))
    assert auto == each[smaller] and cae_codec.read_header(auto).coder == smaller
    assert cae_codec.compress_many([image, image], quality=at_level(4)) == [auto, auto]
    assert np.array_equal(
        np.asarray(cae_codec.decompress(auto)), np.asarray(cae_codec.decompress(each["zstd"]))
    )
    with pytest.raises(ValueError, match="coder must be one of auto, zstd, range"):
        cae_codec.compress(image, coder="huffman")


def test_default_quality_is_the_bundles():
    array = sample_image(32, 32, "RGB")
    w = weights.load()
    assert cae_codec.read_header(cae_codec.compress(array)).position == w.default_quality


def test_cifar_test_rows_reach_24_db_and_quality_orders_rate(cifar_dir):
    rows = load_cifar10("test", cifar_dir)[:48]
    sizes, psnrs = [], []
    for level in (2, 6):
        files = [cae_codec.compress(row, quality=at_level(level)) for row in rows]
        decoded = [np.asarray(cae_codec.decompress(f)) for f in files]
        sizes.append(np.mean([len(f) for f in files]))
        psnrs.append(np.mean([metrics.psnr(a, b) for a, b in zip(rows, decoded, strict=True)]))
    assert psnrs[1] >= 24.0
    assert sizes[0] < sizes[1] and psnrs[0] < psnrs[1]


def test_palette_and_other_modes_are_converted():
    rgb = sample_image(20, 12, "RGB")
    palette = Image.fromarray(rgb).convert("P")
    assert cae_codec.decompress(cae_codec.compress(palette)).mode == "RGB"
    palette.info["transparency"] = 0
    assert cae_codec.decompress(cae_codec.compress(palette)).mode == "RGBA"
    assert cae_codec.decompress(cae_codec.compress(Image.fromarray(rgb).convert("CMYK"))).mode == "RGB"
    assert cae_codec.decompress(cae_codec.compress(Image.fromarray(rgb).convert("LA"))).mode == "RGBA"


def test_sixteen_bit_keeps_high_byte():
    high = np.array([[0, 0x1234, 0xFF00, 0xFFFF]], dtype=np.uint16)
    image = Image.fromarray(high)
    assert image.mode in codec.SIXTEEN_BIT
    rgb, alpha, mode = codec.split_image(image)
    assert mode == "L" and alpha is None
    np.testing.assert_array_equal(rgb[0, :, 0], [0, 0x12, 0xFF, 0xFF])


def test_quality_out_of_range_is_refused():
    for quality in (-1, 100.01, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="quality must be a number from 0 to 100"):
            cae_codec.compress(sample_image(8, 8, "RGB"), quality=quality)


def test_pixel_limit_applies_both_ways():
    array = sample_image(64, 64, "RGB")
    with pytest.raises(ValueError, match="limit"):
        cae_codec.compress(array, max_pixels=64 * 64 - 1)
    data = cae_codec.compress(array)
    with pytest.raises(cae_codec.FormatError, match="limit"):
        cae_codec.decompress(data, max_pixels=100)


def test_bad_arrays_are_refused():
    with pytest.raises(TypeError):
        cae_codec.compress(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(TypeError):
        cae_codec.compress(np.zeros((4, 4, 3), np.float32))


def test_file_from_unknown_weights_is_refused_by_id():
    data = bytearray(cae_codec.compress(sample_image(8, 8, "RGB")))
    data[3] = 100  # the shipped weights id -> 100, which is not installed
    from cae_codec.container import reseal

    with pytest.raises(cae_codec.FormatError, match="id 100, which are not installed"):
        cae_codec.decompress(reseal(bytes(data)))


def test_format_error_is_a_value_error():
    assert issubclass(cae_codec.FormatError, ValueError)
    with pytest.raises(cae_codec.FormatError):
        cae_codec.decompress(b"not a cae file at all")


@pytest.mark.parametrize("coder", ["zstd", "range"])
@pytest.mark.parametrize("kind", ["shipped", "hyper", "checkerboard"])
@pytest.mark.parametrize("size", [(40, 36), (5, 3), (70, 33)])
def test_integers_in_file_are_those_encoded(coder, kind, size, tiny_hyper, tiny_checkerboard):
    path = {"shipped": None, "hyper": tiny_hyper, "checkerboard": tiny_checkerboard}[kind]
    array = sample_image(*size, "RGB")
    # Without a path, the shipped model the codec picks for this size.
    w = weights.load(path) if path else weights.load(weights_id=weights.default_id(*size))
    level = min(5, w.levels)
    symbols = codec.encode_latent(w, codec.to_tensor(array, w.model.config.pad_multiple), level)
    f = unpack(cae_codec.compress(array, quality=at_level(level, w.levels), coder=coder, weights=path))
    back = codec.decode_symbols(w, f.color, f.header)
    np.testing.assert_array_equal(back.y, symbols.y)
    if w.hyper:
        np.testing.assert_array_equal(back.z, symbols.z)
    assert back.y.shape == codec.latent_shape(w, f.header.height, f.header.width)


def test_compress_is_repeatable():
    array = sample_image(48, 40, "RGB")
    assert cae_codec.compress(array) == cae_codec.compress(array)


GOLDEN = sorted(p.stem for p in DATA.glob("golden-id*.cae"))


def test_every_shipped_bundle_has_golden_files():
    assert {int(name.split("-")[1][2:]) for name in GOLDEN} == set(weights.REGISTRY)


@pytest.mark.parametrize("name", GOLDEN)
def test_files_from_shipped_weights_keep_decoding(name):
    # Made by tests/make_golden.py when each bundle shipped. Float rounding on another CPU may move
    # the decoder's output slightly, so pixels may differ a little; mode, size and alpha may not.
    data = (DATA / f"{name}.cae").read_bytes()
    expected = Image.open(DATA / f"{name}.png")
    assert cae_codec.read_header(data).weights_id == int(name.split("-")[1][2:])
    decoded = cae_codec.decompress(data)
    assert (decoded.mode, decoded.size) == (expected.mode, expected.size)
    diff = np.abs(np.asarray(decoded, dtype=int) - np.asarray(expected, dtype=int))
    assert diff.mean() < 0.5 and diff.max() <= 16
    if decoded.mode == "RGBA":
        assert np.array_equal(np.asarray(decoded)[..., 3], np.asarray(expected)[..., 3])


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA"])
def test_range_coder_round_trip_matches_zstd(mode):
    array = sample_image(37, 29, mode)
    via_zstd = cae_codec.compress(array, quality=at_level(5))
    via_range = cae_codec.compress(array, quality=at_level(5), coder="range")
    assert cae_codec.read_header(via_range).coder == "range"
    assert np.array_equal(
        np.asarray(cae_codec.decompress(via_zstd)), np.asarray(cae_codec.decompress(via_range))
    )


def test_range_coder_is_close_to_the_model_estimate(cifar_dir):
    w = weights.load()
    total_bits = total_estimate = 0.0
    for row in load_cifar10("test", cifar_dir)[:24]:
        f = unpack(cae_codec.compress(row, quality=at_level(4), coder="range"))
        symbols = codec.decode_symbols(w, f.color, f.header)
        total_bits += 8 * len(f.color)
        total_estimate += codec.latent_bits(w, symbols, 4)
    assert total_bits < 1.05 * total_estimate


def test_unknown_coder_is_refused():
    with pytest.raises(ValueError, match="coder"):
        cae_codec.compress(sample_image(8, 8, "RGB"), coder="huffman")


@pytest.mark.parametrize("kind", ["shipped", "hyper", "checkerboard"])
def test_tiled_network_passes_match_whole_image_passes(kind, tiny_hyper, tiny_checkerboard):
    array = sample_image(203, 150, "RGB")
    w = weights.load({"shipped": None, "hyper": tiny_hyper, "checkerboard": tiny_checkerboard}[kind])
    quality = min(5, w.levels)
    x = codec.to_tensor(array, w.model.config.pad_multiple)
    whole = codec.encode_latent(w, x, quality, tile=10**6)
    tiled = codec.encode_latent(w, x, quality, tile=64)
    assert np.mean(whole.y != tiled.y) < 1e-3  # float rounding may flip a rare value, no more
    if w.hyper:
        assert np.mean(whole.z != tiled.z) < 1e-3
        # h_s is exact, so its tiles must agree bit for bit.
        features_whole = latent_codecs.hyper_features(w, whole.z, quality, tile=10**6)
        features_tiled = latent_codecs.hyper_features(w, whole.z, quality, tile=64)
        assert torch.equal(features_whole, features_tiled)
        # So are the context model's passes: the same integers give the same means and tables.
        same = w.latent.walk(w, features_whole, lambda part: whole.y.ravel()[part.positions], tile=64)
        assert torch.equal(same.params[0], whole.params[0])
        assert np.array_equal(same.params[1], whole.params[1])
    a = codec.to_pixels(codec.decode_latent(w, whole, quality, tile=10**6), 150, 203)
    b = codec.to_pixels(codec.decode_latent(w, whole, quality, tile=64), 150, 203)
    assert np.abs(a.astype(int) - b).max() <= 2


def test_huge_claimed_size_is_refused_before_allocating():
    import time

    from cae_codec.container import CaeFile, Header, pack

    forged = pack(CaeFile(Header("RGB", "zstd", 3, 1, 100_000, 100_000), b"\x00" * 16, None))
    start = time.perf_counter()
    with pytest.raises(cae_codec.FormatError, match="over the limit"):
        cae_codec.decompress(forged)
    assert time.perf_counter() - start < 1.0


def test_same_bytes_with_one_or_two_threads():
    # The library must not pin the thread count; the caller's choice may not change any byte.
    array = sample_image(70, 45, "RGBA")
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            data = cae_codec.compress(array, quality=at_level(6))
            results.append((data, np.asarray(cae_codec.decompress(data)).tobytes()))
    finally:
        torch.set_num_threads(before)
    assert results[0] == results[1]


def test_a_photo_of_up_to_one_and_a_half_tiles_runs_in_one_piece():
    from cae_codec.tiling import _tiles

    assert [core for core, _ in _tiles(512, 768, 512, 16)] == [(0, 0, 512, 768)]
    boxes = list(_tiles(768, 768, 512, 16))
    assert len(boxes) == 4 and boxes[0] == ((0, 0, 384, 384), (0, 0, 400, 400))


def test_tiles_are_even_with_no_sliver():
    from cae_codec.tiling import _tiles

    # A 1,024 px segment with g_a's 12 px halo each side: three tiles of 352 px a side (a multiple
    # of the stride 4), not 512 + 512 + 24 with a whole halo each.
    cores = [core for core, _ in _tiles(1048, 1048, 512, 12, multiple=4)]
    assert sorted({c[2] - c[0] for c in cores}) == [344, 352] and len(cores) == 9
    assert all(c[0] % 4 == 0 and c[1] % 4 == 0 for c in cores)
    assert sum((c[2] - c[0]) * (c[3] - c[1]) for c in cores) == 1048 * 1048  # cover it once


def test_only_images_too_large_for_a_batch_run_channels_last(monkeypatch):
    # Channels-last rounds differently in a batch than alone, so images the batch API may group
    # must never use it: else a small image would decode differently alone and in a folder.
    seen = []
    real = codec.run_tiled

    def spy(*args):
        seen.append(args[7])
        return real(*args)

    monkeypatch.setattr(codec, "run_tiled", spy)
    for side, expected in ((32, False), (256, False), (257, True)):
        seen.clear()
        cae_codec.decompress(cae_codec.compress(sample_image(side, 256, "RGB"), quality=at_level(1)))
        assert seen == [expected, expected]  # g_a, then g_s


def test_bf16_files_are_alike_and_the_same_on_any_thread_count():
    # Over 256x256 pixels g_a and g_s may run in bfloat16: the bytes still may not depend on the
    # thread count, the file decodes in float32 too, and the pictures stay within 0.05 dB.
    array = sample_image(320, 240, "RGB")
    before = torch.get_num_threads()
    files = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            files.append(cae_codec.compress(array, precision="bf16"))
    finally:
        torch.set_num_threads(before)
    assert files[0] == files[1]
    fp32 = cae_codec.compress(array, precision="fp32")
    assert abs(len(files[0]) - len(fp32)) <= 0.01 * len(fp32)
    reference = metrics.psnr(array, np.asarray(cae_codec.decompress(fp32, precision="fp32")))
    for precision in ("bf16", "fp32"):
        decoded = np.asarray(cae_codec.decompress(files[0], precision=precision))
        assert abs(metrics.psnr(array, decoded) - reference) < 0.05


def test_precision_is_one_of_three():
    with pytest.raises(ValueError, match="precision must be one of auto, bf16, fp32"):
        cae_codec.compress(sample_image(8, 8, "RGB"), precision="fp16")
    with pytest.raises(ValueError, match="precision must be one of"):
        cae_codec.decompress(b"", precision="half")


def test_progress_counts_every_segment_and_tile_of_a_large_image():
    array = sample_image(300, 200, "RGB")
    seen = []
    data = cae_codec.compress(array, segment=64, progress=lambda done, total: seen.append((done, total)))
    segments = len(unpack(data).segments)
    assert segments > 1 and seen == [(i, segments) for i in range(1, segments + 1)]
    seen.clear()
    cae_codec.decompress(data, progress=lambda done, total: seen.append((done, total)))
    total = seen[0][1]
    assert total > segments and seen == [(i, total) for i in range(1, total + 1)]


def test_heic_from_a_phone_opens_and_says_what_it_needs_otherwise(tmp_path, monkeypatch):
    pillow_heif = pytest.importorskip("pillow_heif", reason="pillow-heif (the test extra) is not installed")
    pillow_heif.register_heif_opener()
    path = tmp_path / "phone.heic"
    Image.fromarray(sample_image(80, 64, "RGB")).save(path, quality=90)
    back = cae_codec.decompress(cae_codec.compress(path))
    assert back.size == (80, 64)
    # Without pillow-heif: one clear line, not "not an image file".
    from PIL import UnidentifiedImageError

    def refuse(*args, **kwargs):
        raise UnidentifiedImageError("no opener")

    codec._heif_opener.cache_clear()
    monkeypatch.setattr(codec, "_heif_opener", lambda: False)
    monkeypatch.setattr(codec.Image, "open", refuse)
    with pytest.raises(ValueError, match="HEIF/HEIC image, which needs pillow-heif"):
        codec.read_image(path)


def test_auto_tries_zstd_on_large_images_only_where_it_ever_won(monkeypatch):
    """Above level 5 zstd never made the smaller file of a photo (benchmarks/results/coders.md), so
    auto codes a large image with the range coder alone there; up to it, with both."""
    image = sample_image(272, 256, "RGB")
    tried = []
    real = codec.encode_symbols
    monkeypatch.setattr(codec, "encode_symbols", lambda w, s, q, c: tried.append(c) or real(w, s, q, c))
    for level, expected in (
        (config.ZSTD_MAX_LEVEL, ("zstd", "range")),
        (config.ZSTD_MAX_LEVEL + 1, ("range",)),
    ):
        tried.clear()
        cae_codec.compress(image, quality=at_level(level))
        assert tuple(dict.fromkeys(tried)) == expected
    tried.clear()
    cae_codec.compress(image, quality=at_level(config.ZSTD_MAX_LEVEL + 1), coder="zstd")  # asked for: kept
    assert tried == ["zstd"]
