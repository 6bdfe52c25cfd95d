import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_CIFAR = REPO.parent / "shared" / "data" / "cifar10"
PHOTOS = REPO.parent / "shared" / "data" / "photos"


def write_cifar_archive(folder: Path, rows: int = 12, seed: int = 0) -> tuple[Path, dict[str, np.ndarray]]:
    """A tiny CIFAR-10 archive in the official pickle layout; returns it and the rows it holds."""
    rng = np.random.default_rng(seed)
    batches: dict[str, np.ndarray] = {}
    root = folder / "cifar-10-batches-py"
    root.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        images = rng.integers(0, 256, (rows, 32, 32, 3), dtype=np.uint8)
        images[0] = np.linspace(0, 255, 32, dtype=np.uint8)[None, :, None]  # a smooth ramp too
        batches[name] = images
        record = {
            b"batch_label": name.encode(),
            b"labels": list(range(rows)),
            b"data": images.transpose(0, 3, 1, 2).reshape(rows, -1),
            b"filenames": [b"x"] * rows,
        }
        (root / name).write_bytes(pickle.dumps(record, protocol=2))
    (root / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"a"] * 10}, protocol=2))
    archive = folder / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root, arcname="cifar-10-batches-py")
    return archive, batches


def at_level(level: float, levels: int = 8) -> float:
    """The 0-100 quality of a level (whole or fractional) of a bundle with `levels` levels."""
    from cae_codec.quality import of_level

    return of_level(level, levels)


TINY = ["--channels", "8", "--latent-channels", "4", "--batch-size", "4", "--val-rows", "4"]


def train(archive, out, *extra):
    """`cae-codec train` of a tiny network on a tiny archive; asserts that it succeeded."""
    from click.testing import CliRunner

    from cae_codec.cli import main

    result = CliRunner().invoke(main, ["train", "--data-dir", str(archive), "--out", str(out), *TINY, *extra])
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture
def tiny_cifar(tmp_path):
    return write_cifar_archive(tmp_path / "data")


@pytest.fixture(scope="session")
def cifar_dir() -> Path:
    given = os.environ.get("CAE_CODEC_DATA_DIR")
    path = Path(given) if given else SHARED_CIFAR
    if not path.exists():
        pytest.skip(f"no CIFAR-10 copy at {path}; set CAE_CODEC_DATA_DIR")
    return path


def sample_image(width: int, height: int, mode: str, seed: int = 0) -> np.ndarray:
    """A smooth image with some texture, so reconstructions are meaningful."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = 128 + 80 * np.sin(xx / 5.0) * np.cos(yy / 7.0)
    rgb = np.stack([base, base[::-1] * 0.5 + 60, 255 - base], axis=-1) + rng.normal(0, 6, (height, width, 3))
    rgb = rgb.clip(0, 255).astype(np.uint8)
    if mode == "L":
        return rgb[:, :, 0]
    if mode == "RGBA":
        alpha = rng.integers(0, 256, (height, width, 1), dtype=np.uint8)
        return np.concatenate([rgb, alpha], axis=2)
    return rgb


@pytest.fixture(scope="session")
def tiny_hyper(tmp_path_factory) -> Path:
    """A small untrained hyperprior bundle (user id range), so the hyperprior path is always tested."""
    import torch

    from cae_codec import model, weights
    from cae_codec.export import export

    torch.manual_seed(0)
    net = model.build(model.ModelConfig(N=16, M=8, levels=2, hyper_N=8, hyper_M=4))
    path = tmp_path_factory.mktemp("weights") / "tiny-hyper.pt"
    rows = np.random.default_rng(0).integers(0, 256, (24, 32, 32, 3), dtype=np.uint8)
    export(net, path, (0.01, 0.05), weights.FIRST_USER_ID + 7, "tiny-hyper", 2, rows)
    return path


def write_photo_folder(folder: Path, count: int = 50, size: tuple[int, int] = (150, 100)) -> Path:
    """A folder of small photo-like JPEGs in two subfolders; image i has a colour cast of its own."""
    from PIL import Image

    for i in range(count):
        sub = folder / ("a" if i % 2 else "b")
        sub.mkdir(parents=True, exist_ok=True)
        image = sample_image(*size, "RGB", seed=i)
        Image.fromarray(image).save(sub / f"p{i:03d}.jpg", quality=95)
    return folder


@pytest.fixture(scope="session")
def tiny_photo(tmp_path_factory) -> Path:
    """A small untrained stride-16 hyperprior bundle: the photo models' code path."""
    import torch

    from cae_codec import model, weights
    from cae_codec.export import export

    torch.manual_seed(0)
    net = model.build(model.ModelConfig(N=8, M=8, levels=2, stride=16, hyper_N=8, hyper_M=4))
    path = tmp_path_factory.mktemp("weights") / "tiny-photo.pt"
    images = np.stack([sample_image(128, 128, "RGB", seed=s) for s in range(4)])
    export(net, path, (0.01, 0.05), weights.FIRST_USER_ID + 8, "tiny-photo", 2, images)
    return path


@pytest.fixture(scope="session")
def tiny_checkerboard(tmp_path_factory) -> Path:
    """A small untrained checkerboard bundle whose context model is switched on (random g_ep output)."""
    import torch

    from cae_codec import model, weights
    from cae_codec.export import export

    torch.manual_seed(0)
    config = model.ModelConfig(N=16, M=8, levels=2, hyper_N=8, hyper_M=4, prior="checkerboard")
    net = model.build(config)
    with torch.no_grad():
        net.g_ep[-1].weight.normal_(0, 0.3)
    path = tmp_path_factory.mktemp("weights") / "tiny-checkerboard.pt"
    rows = np.random.default_rng(0).integers(0, 256, (24, 32, 32, 3), dtype=np.uint8)
    export(net, path, (0.01, 0.05), weights.FIRST_USER_ID + 9, "tiny-checkerboard", 2, rows)
    return path


def display_p3_profile() -> bytes:
    """A Display P3 ICC profile (version 2, matrix/TRC), built here as phones tag their photos: the
    D50-adapted P3 primaries and the sRGB tone curve."""
    import struct

    def s15(v: float) -> bytes:
        return struct.pack(">i", round(v * 65536))

    def xyz(x: float, y: float, z: float) -> bytes:
        return b"XYZ " + bytes(4) + s15(x) + s15(y) + s15(z)

    def text(kind: bytes, value: str) -> bytes:
        if kind == b"desc":
            ascii_ = value.encode() + b"\0"
            return b"desc" + bytes(4) + struct.pack(">I", len(ascii_)) + ascii_ + bytes(4 + 4 + 2 + 1 + 67)
        return b"text" + bytes(4) + value.encode() + b"\0"

    curve = b"para" + bytes(4) + struct.pack(">HH", 3, 0)
    curve += b"".join(s15(v) for v in (2.4, 1 / 1.055, 0.055 / 1.055, 1 / 12.92, 0.04045))
    tags = [
        (b"desc", text(b"desc", "Display P3")),
        (b"cprt", text(b"text", "No copyright, use freely")),
        (b"wtpt", xyz(0.96420, 1.0, 0.82491)),
        (b"rXYZ", xyz(0.51512, 0.24120, -0.00105)),
        (b"gXYZ", xyz(0.29198, 0.69225, 0.04189)),
        (b"bXYZ", xyz(0.15710, 0.06657, 0.78407)),
        (b"rTRC", curve),
        (b"gTRC", curve),
        (b"bTRC", curve),
    ]
    table, body, offset = b"", b"", 128 + 4 + 12 * len(tags)
    for sig, data in tags:
        data += bytes(-len(data) % 4)
        table += sig + struct.pack(">II", offset + len(body), len(data))
        body += data
    size = offset + len(body)
    header = struct.pack(">I4sI4s4s4s", size, b"lcms", 0x02100000, b"mntr", b"RGB ", b"XYZ ")
    header += bytes(12) + b"acsp" + b"APPL" + bytes(4) + bytes(4) + bytes(4) + bytes(8) + bytes(4) + bytes(4)
    header += s15(0.9642) + s15(1.0) + s15(0.8249) + b"lcms"
    header += bytes(128 - len(header))
    return header + struct.pack(">I", len(tags)) + table + body
