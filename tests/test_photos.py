"""Photo models: the crop source, stride-16 networks, training on a folder, tiling, Kodak."""

import hashlib
import io
import urllib.request

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import sample_image, write_photo_folder

import cae_codec
from cae_codec import benchmark, codec, datasets, model, published, weights
from cae_codec.cli import main
from cae_codec.training import init_network


def test_photo_crops_hold_out_every_48th_photo_and_sample_crops(tmp_path):
    folder = write_photo_folder(tmp_path / "photos", count=50)
    source = datasets.PhotoCrops(folder, crop=64)
    files = sorted(p for p in folder.rglob("*.jpg"))
    assert len(source.images) == 50 - len(files[::48]) == 48
    assert source.validation.shape == (2, 64, 64, 3)  # the smallest side, 100, down to a multiple of 64
    batch = source.batch(np.random.default_rng(0), 5)
    assert batch.shape == (5, 64, 64, 3) and batch.dtype == np.uint8
    again = source.batch(np.random.default_rng(0), 5)
    assert np.array_equal(batch, again)  # the seed decides everything
    assert source.batch(np.random.default_rng(1), 3, crop=96).shape == (3, 96, 96, 3)


def test_photo_crops_are_flipped_and_downscaled(tmp_path):
    from PIL import Image

    folder = tmp_path / "one"
    folder.mkdir()
    ramp = np.tile(np.arange(256, dtype=np.uint8)[None, :, None], (256, 1, 3))  # brightness = column
    for i in range(2):
        Image.fromarray(ramp).save(folder / f"r{i}.png")
    source = datasets.PhotoCrops(folder, crop=64)
    crops = source.batch(np.random.default_rng(0), 40).astype(int)
    rows = crops[:, 0, :, 0]
    steps = rows[:, -1] - rows[:, 0]
    assert (steps > 0).any() and (steps < 0).any()  # some crops are flipped left-right
    assert np.abs(steps).max() > 70  # some cover more than 64 columns: downscaled regions


def test_photo_folder_without_photos_is_a_data_error(tmp_path):
    with pytest.raises(datasets.DataError, match="no images"):
        datasets.PhotoCrops(tmp_path, crop=64)


def test_only_strides_4_and_16_exist():
    with pytest.raises(ValueError, match="stride must be one of"):
        model.build(model.ModelConfig(N=8, M=8, stride=8))


def test_a_stride_16_model_warm_starts_from_a_stride_4_bundle(tiny_hyper):
    small = weights.load(tiny_hyper).model.state_dict()
    net = model.build(model.ModelConfig(N=16, M=12, levels=2, stride=16, hyper_N=8, hyper_M=4))
    filled = init_network(net, tiny_hyper)
    state = net.state_dict()
    # g_a lines up from the input, g_s from the output: the stages nearest the pixels.
    assert torch.equal(state["g_a.2.weight"], small["g_a.2.weight"])
    assert torch.equal(state["g_s.6.weight"], small["g_s.4.weight"])
    assert torch.equal(state["g_s.4.weight"], small["g_s.2.weight"])
    assert "g_a.4.weight" not in filled and "g_s.0.weight" not in filled


def test_photo_model_round_trip_and_padding(tiny_photo):
    for size in [(150, 100), (64, 64), (33, 65)]:
        image = sample_image(*size, "RGB", seed=3)
        for coder in ("zstd", "range"):
            data = cae_codec.compress(image, quality=100, weights=tiny_photo, coder=coder)
            back = np.asarray(cae_codec.decompress(data, weights=tiny_photo))
            assert back.shape == image.shape
    w = weights.load(tiny_photo)
    assert codec.latent_shape(w, 100, 150) == (8, 8, 12)  # padded to 128x192, a multiple of 64


def test_stride_16_tiles_give_the_whole_image_latent(tiny_photo):
    w = weights.load(tiny_photo)
    x = codec.to_tensor(sample_image(320, 192, "RGB", seed=5), w.model.config.pad_multiple)
    whole = codec.encode_latent(w, x, 2)
    tiled = codec.encode_latent(w, x, 2, tile=128)
    assert np.array_equal(whole.z, tiled.z)
    assert np.abs(whole.y - tiled.y).max() <= 1 and (whole.y != tiled.y).mean() < 0.01
    pixels = codec.decode_latent(w, whole, 2)
    assert torch.allclose(pixels, codec.decode_latent(w, whole, 2, tile=128), atol=1e-4)


def test_train_on_a_photo_folder_resumes_and_writes_usable_weights(tmp_path):
    folder = write_photo_folder(tmp_path / "photos", count=10, size=(140, 130))
    out, ckpt, log = tmp_path / "photo.pt", tmp_path / "run.ckpt", tmp_path / "log.csv"
    args = ["train", "--photos", str(folder), "--out", str(out), "--stride", "16", "--channels", "8"]
    args += [
        "--latent-channels",
        "8",
        "--hyper-channels",
        "8",
        "--hyper-latent-channels",
        "4",
        "--crop",
        "64",
    ]
    args += ["--batch-size", "2", "--lambdas", "0.01,0.05", "--eval-every", "2", "--checkpoint", str(ckpt)]
    args += ["--log", str(log)]
    for steps in ("2", "3"):
        result = CliRunner().invoke(main, [*args, "--steps", steps, "--force"])
        assert result.exit_code == 0, result.output
        assert torch.load(ckpt, weights_only=True)["step"] == int(steps)
    w = weights.load(out)
    assert w.model.config.stride == 16 and w.hyper and w.zstd_layouts[0].dictionary is not None
    image = sample_image(100, 70, "RGB")
    assert cae_codec.decompress(cae_codec.compress(image, weights=out), weights=out).size == (100, 70)
    assert "psnr_q2" in log.read_text()


def test_crop_must_be_a_multiple_of_64(tmp_path):
    folder = write_photo_folder(tmp_path / "photos", count=3)
    result = CliRunner().invoke(
        main, ["train", "--photos", str(folder), "--out", str(tmp_path / "x.pt"), "--crop", "100"]
    )
    assert result.exit_code == 1 and "multiple of 64" in result.stderr


def test_train_defaults_are_the_training_configs():
    from cae_codec.config import TrainConfig

    params = {p.name: p.default for p in main.commands["train"].params}
    config = TrainConfig(out=None)
    for option, field in (("hyper_M", "hyper_M"), ("N", "N"), ("M", "M"), ("crop", "crop")):
        assert params[option] == getattr(config, field)


def _fake_kodak(folder):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(1, 25):
        (folder / f"kodim{i:02d}.png").write_bytes(b"x")
    return folder


def test_kodak_is_found_in_its_folder_beside_or_below(tmp_path):
    kodak = _fake_kodak(tmp_path / "data" / "kodak")
    (tmp_path / "data" / "cifar10").mkdir()
    for given in (kodak, tmp_path / "data", tmp_path / "data" / "cifar10"):
        assert datasets.locate_kodak(given) == kodak
    with pytest.raises(datasets.DataError, match="kodim01.png"):
        datasets.locate_kodak(tmp_path / "elsewhere")


def test_kodak_download_checks_every_file(tmp_path, monkeypatch):
    payloads = {i: f"image {i}".encode() for i in range(1, 25)}
    monkeypatch.setattr(
        datasets, "KODAK_SHA256", tuple(hashlib.sha256(payloads[i]).hexdigest() for i in payloads)
    )
    served = []

    def urlopen(url, timeout):
        served.append(url)
        number = int(url[-6:-4])
        return io.BytesIO(payloads[number] if number != 7 else b"tampered")

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    with pytest.raises(datasets.DataError, match="kodim07.png has SHA-256"):
        datasets.download_kodak(tmp_path / "kodak")
    assert served[0] == "http://r0k.us/graphics/kodak/kodak/kodim01.png"
    assert not (tmp_path / "kodak" / "kodim07.png").exists()
    payloads[7] = b"image 7"
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: io.BytesIO(payloads[int(url[-6:-4])]))
    assert datasets.download_kodak(tmp_path / "kodak") == tmp_path / "kodak"
    assert (tmp_path / "kodak" / "kodim24.png").read_bytes() == b"image 24"


def test_published_curves_join_the_summary_and_bd_rates():
    points = benchmark.published_points()
    assert len(points) == 8 * len(published.KODAK)
    hyper = benchmark.curve(points, "bmshj2018-hyperprior (published)")
    factorized = benchmark.curve(points, "bmshj2018-factorized (published)")
    # The hyperprior paper's own claim: it saves bits against the factorized prior at equal PSNR.
    assert benchmark.bd_rate(factorized, hyper) < -10
    ours = [
        benchmark.Point("cae-codec", p.quality, p.bpp * 1.1, p.psnr, 0, 0, 0, 0, 24, "auto") for p in hyper
    ]
    text = benchmark.summary(ours + points)
    assert "cae-codec/auto vs bmshj2018-hyperprior (published): BD-rate +10.0 %" in text


def test_the_codec_picks_the_photo_model_for_large_images(tiny_photo, monkeypatch):
    digest = hashlib.sha256(tiny_photo.read_bytes()).hexdigest()
    entry = weights.Shipped(weights.FIRST_USER_ID + 8, "tiny-photo", tiny_photo.name, digest)
    monkeypatch.setattr(weights, "REGISTRY", {**weights.REGISTRY, entry.id: entry})
    monkeypatch.setattr(weights, "PHOTO_ID", entry.id)
    monkeypatch.setattr(weights, "PHOTO_MIN_PIXELS", 64 * 64)
    shipped = weights.shipped_dir()
    monkeypatch.setattr(weights, "shipped_dir", lambda: tiny_photo.parent)
    (tiny_photo.parent / "cae-msh8-v3.pt").write_bytes((shipped / "cae-msh8-v3.pt").read_bytes())
    large, small = sample_image(64, 64, "RGB"), sample_image(63, 64, "RGB")
    assert cae_codec.read_header(cae_codec.compress(large)).weights_id == entry.id
    assert cae_codec.read_header(cae_codec.compress(small)).weights_id == weights.DEFAULT_ID
    pinned = cae_codec.compress(large, weights="cae-msh8-v3")  # naming weights still overrides
    assert cae_codec.read_header(pinned).weights_id == weights.DEFAULT_ID
    assert cae_codec.decompress(cae_codec.compress(large)).size == (64, 64)  # found by its id
