import io

import numpy as np
import pytest
from conftest import sample_image
from PIL import Image

from cae_codec import benchmark, metrics


def test_jpeg_payload_excludes_headers():
    buffer = io.BytesIO()
    Image.fromarray(sample_image(32, 32, "RGB")).save(buffer, format="JPEG", quality=50)
    data = buffer.getvalue()
    payload = benchmark.jpeg_payload_size(data)
    sos = data.rfind(b"\xff\xda")
    assert data.endswith(b"\xff\xd9")
    assert payload == len(data[sos + 2 + int.from_bytes(data[sos + 2 : sos + 4], "big") : -2])
    assert 0 < payload < len(data) - 300  # Pillow's default tables alone are several hundred bytes


def test_measure_agrees_with_numpy():
    images = [sample_image(32, 32, "RGB", seed=s) for s in range(3)]
    point, payload = benchmark.measure_classic(images, "jpeg", [40])
    assert payload.codec == "jpeg-payload" and payload.psnr == point.psnr and payload.bpp < point.bpp
    sizes, psnrs = [], []
    for image in images:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=40)
        decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())))
        sizes.append(8 * (len(buffer.getvalue()) - 18) / 1024)  # without JFIF's 18-byte APP0 segment
        psnrs.append(10 * np.log10(255**2 / np.mean((decoded.astype(float) - image) ** 2)))
    assert abs(point.bpp - np.mean(sizes)) < 1e-9
    assert abs(point.psnr - np.mean(psnrs)) < 1e-9
    assert point.images == 3


def test_interpolate_inside_and_outside():
    points = _curve("x", [(1.0, 20), (3.0, 30)])
    assert benchmark.interpolate(points, "psnr", "bpp", 25) == 2.0
    assert benchmark.interpolate(points, "bpp", "psnr", 0.5) is None
    assert benchmark.interpolate(points, "bpp", "psnr", 3.5) is None


def test_psnr_of_identical_images_is_infinite():
    image = sample_image(4, 4, "RGB")
    assert metrics.psnr(image, image) == float("inf")


def _curve(name, pairs):
    return [benchmark.Point(name, i, bpp, psnr, 0, 0, 0, 0, 1) for i, (bpp, psnr) in enumerate(pairs)]


def test_bd_rate_and_psnr_known_answers():
    psnrs = [26.0, 29.0, 32.0, 35.0, 38.0]
    anchor = _curve("a", [(0.3 * np.exp(0.12 * p), p) for p in psnrs])
    half = _curve("t", [(0.15 * np.exp(0.12 * p), p) for p in psnrs])
    assert abs(benchmark.bd_rate(anchor, half) - (-50.0)) < 1e-6
    assert abs(benchmark.bd_rate(half, anchor) - 100.0) < 1e-6
    better = _curve("t", [(p.bpp, p.psnr + 1.0) for p in anchor])
    assert abs(benchmark.bd_psnr(anchor, better) - 1.0) < 1e-9
    assert benchmark.bd_rate(anchor, _curve("t", [(1, 10.0), (2, 12.0)])) is None  # no overlap


def test_ssim_matches_scikit_image():
    # Reference values from scikit-image 0.26.0: structural_similarity(a, b, gaussian_weights=True,
    # sigma=1.5, use_sample_covariance=False, data_range=255[, channel_axis=2]).
    y, x = np.mgrid[0:48, 0:40]
    a = np.stack(
        [(x * 7 + y * 13) % 256, (x * y) % 256, 128 + 100 * np.sin(x / 4.0) * np.cos(y / 6.0)], axis=-1
    )
    a = a.astype(np.uint8)
    b = (a.astype(np.int64) + ((x * 31 + y * 17) % 41 - 20)[..., None]).clip(0, 255).astype(np.uint8)
    assert abs(metrics.ssim(a, b) - 0.9121479702649298) < 1e-12
    assert abs(metrics.ssim(a[..., 2], b[..., 2]) - 0.8459081200146226) < 1e-12
    assert metrics.ssim(a, a) == 1.0
    assert np.isnan(metrics.ssim(a[:10], b[:10]))


def test_jpeg2000_is_measured_as_lossy_jpeg2000_is_meant_to_run():
    """The 9/7 wavelet and the colour transform: Pillow's defaults would double JPEG 2000's bits."""
    rng = np.random.default_rng(4)
    base = np.cumsum(rng.normal(0, 1, (96, 96)), 1) + rng.normal(0, 3, (96, 96))
    base = (base - base.min()) / np.ptp(base) * 200
    rgb = np.stack([base, 0.9 * base + 10, 0.7 * base + 30], axis=2).astype(np.uint8)
    spec = benchmark.CLASSICS["jpeg2000"]
    ours = len(benchmark.pillow_encoder(spec, 34)(rgb))
    plain = io.BytesIO()
    Image.fromarray(rgb).save(plain, format="JPEG2000", quality_mode="dB", quality_layers=[34])
    assert ours < 0.6 * len(plain.getvalue())
    gray = benchmark.pillow_encoder(spec, 34)(rgb[:, :, 0])  # no colour transform for one channel
    assert Image.open(io.BytesIO(gray)).mode == "L"


@pytest.mark.parametrize("name", ["jpegxl", "heif"])
def test_optional_peers_measure_through_their_pillow_plugins(name):
    pytest.importorskip(benchmark.CLASSICS[name].plugin)  # the test extra installs both
    assert benchmark.available(name)
    image = sample_image(48, 40, "RGB")
    low, high = benchmark.measure_classic([image], name, qualities=[10, 90])
    assert low.codec == high.codec == name
    assert low.bpp < high.bpp and low.psnr < high.psnr


def test_a_peer_without_its_plugin_is_unavailable(monkeypatch):
    import importlib

    real = importlib.import_module

    def missing(module, *args):
        if module == "pillow_jxl":
            raise ImportError(module)
        return real(module, *args)

    monkeypatch.setattr(importlib, "import_module", missing)
    assert not benchmark.available("jpegxl")


def test_worker_processes_measure_what_one_process_measures():
    images = [sample_image(32, 32, "RGB", seed=s) for s in range(5)]
    one = benchmark.measure_classics(images, ["jpeg", "webp"], {"jpeg": [30, 70], "webp": [50]}, workers=1)
    ticks = []
    two = benchmark.measure_classics(
        images, ["jpeg", "webp"], {"jpeg": [30, 70], "webp": [50]}, tick=ticks.append, workers=2
    )
    assert [p.label for p in two] == ["jpeg", "jpeg-payload", "jpeg", "jpeg-payload", "webp"]
    assert [(p.label, p.quality, p.bpp, p.psnr, p.ssim) for p in one] == [
        (p.label, p.quality, p.bpp, p.psnr, p.ssim) for p in two
    ]
    assert sum(ticks) == len(images) * 3 and all(p.images == 5 for p in two)


def test_cae_rows_agree_between_coders_and_processes():
    images = [sample_image(32, 32, "RGB", seed=s) for s in range(6)]
    one = benchmark.measure_cae(images, [2, 5], batch=4)
    two = benchmark.measure_cae(images, [2, 5], batch=4, workers=2)
    assert [(p.label, p.quality) for p in one] == [(p.label, p.quality) for p in two]
    assert [p.label for p in one] == ["cae-codec/auto"] * 2 + ["cae-codec/zstd"] * 2 + ["cae-codec/range"] * 2
    for a, b in zip(one, two, strict=True):
        assert abs(a.bpp - b.bpp) < 0.02 and abs(a.psnr - b.psnr) < 0.01
    auto, zstd, rng = one[0], one[2], one[4]
    assert auto.psnr == zstd.psnr == rng.psnr  # one decode's pixels, whichever coder wrote the file
    assert auto.bpp <= min(zstd.bpp, rng.bpp) + 1e-12 and one[1].bpp > auto.bpp
    assert 0 < auto.entropy_bpp < 2 * auto.bpp


def test_pchip_integral_matches_scipy():
    # Reference values from scipy 1.17.1: PchipInterpolator(x, y).integrate(lo, hi).
    rates = [np.log(v) for v in (0.21, 0.35, 0.55, 0.81, 1.4, 2.6)]
    cases = [
        ([26.0, 28.5, 31.0, 33.2, 36.9, 41.3], rates, 27.0, 40.0, -2.7503531265913894),
        ([1, 2, 3, 5], [1, 4, 2, 2.5], 1.5, 4.5, 7.941080729166667),  # not monotone: flat at the turn
        ([0, 1, 2], [0, 1, 0], 0, 2, 1.3333333333333335),
        ([0, 1], [0, 2], 0.25, 0.75, 0.5),
    ]
    for x, y, lo, hi, want in cases:
        assert abs(benchmark.pchip_integral(x, y, lo, hi) - want) < 1e-12
    # The order of the points does not matter.
    assert abs(benchmark.pchip_integral([3, 1, 5, 2], [2, 1, 2.5, 4], 1.5, 4.5) - 7.941080729166667) < 1e-12


def test_peer_files_carry_no_metadata_and_stripping_keeps_their_pixels():
    from cae_codec import peers

    image = sample_image(48, 32, "RGB")
    for name, spec in peers.CLASSICS.items():
        if not peers.available(name):
            continue
        data = benchmark.pillow_encoder(spec, spec.qualities[len(spec.qualities) // 2])(image)
        for mark in (b"JFIF", b"Exif", b"xmpmeta", b"acsp", b"OpenJPEG"):  # acsp: any ICC profile
            assert mark not in data, (name, mark)
        if spec.strip:
            buffer = io.BytesIO()
            quality = spec.qualities[3]
            Image.fromarray(image).save(
                buffer,
                format=spec.fmt,
                **{spec.quality_key: [quality] if spec.quality_key == "quality_layers" else quality},
                **spec.options,
                **spec.color_options,
            )
            whole, stripped = buffer.getvalue(), spec.strip(buffer.getvalue())
            assert len(stripped) < len(whole)
            assert np.array_equal(benchmark.decode_pillow(whole), benchmark.decode_pillow(stripped))
    assert peers.settings()["avif"]["options"] == {"speed": 0}


def test_results_give_cae_codecs_quality_on_the_public_scale_with_its_level(cifar_dir):
    """A point's quality is what compress(quality=) takes: feeding it back gives the same file."""
    import cae_codec
    from cae_codec.datasets import load_cifar10

    images = list(load_cifar10("test", cifar_dir)[:4])
    points = benchmark.measure_cae(images, qualities=[3], coders=("auto",))
    point = points[0]
    assert point.level == 3 and point.quality == pytest.approx(29, abs=0.5)
    files = cae_codec.compress_many(images, quality=point.quality)
    bpp = np.mean([8 * len(f) / (32 * 32) for f in files])
    assert bpp == pytest.approx(point.bpp)
    old = benchmark.Point.from_dict({**point.to_dict(), "quality": 3, "level": None})
    assert (old.quality, old.level) == (point.quality, 3)
