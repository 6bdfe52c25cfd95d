"""Data sets: CIFAR-10 in its official python format (a local copy, or downloaded once into a cache),
folders of images, and random crops of a photo folder for training."""

from __future__ import annotations

import hashlib
import io
import math
import os
import pickle
import tarfile
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .config import DATA_DIR_ENV

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR10_FOLDER = "cifar-10-batches-py"
SPLITS = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}


class DataError(Exception):
    """A data set could not be found, fetched or read."""


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cae-codec"


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_cifar10(folder: Path) -> Path:
    """Fetch the official archive into `folder`, verify its MD5 and return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / CIFAR10_ARCHIVE
    part = target.with_suffix(".part")
    try:
        with urllib.request.urlopen(CIFAR10_URL, timeout=30) as response, part.open("wb") as out:
            while block := response.read(1 << 20):
                out.write(block)
    except OSError as e:
        part.unlink(missing_ok=True)
        raise DataError(
            f"cannot download {CIFAR10_URL} ({e}); put {CIFAR10_ARCHIVE} in {folder}, "
            f"or pass --data-dir / set {DATA_DIR_ENV} to a local copy"
        ) from None
    if (md5 := _md5(part)) != CIFAR10_MD5:
        part.unlink()
        raise DataError(f"downloaded {CIFAR10_URL} has MD5 {md5}, expected {CIFAR10_MD5}")
    part.replace(target)
    return target


def locate_cifar10(data_dir: str | Path | None = None, download: bool = True) -> Path:
    """The archive or extracted folder to read: from `data_dir`, $CAE_CODEC_DATA_DIR or the cache.

    `data_dir` may be the tar.gz itself, the extracted `cifar-10-batches-py` folder, or a folder
    holding either. Local copies are used as they are; only a download is checked against the MD5.
    """
    given = data_dir or os.environ.get(DATA_DIR_ENV)
    roots = [Path(given)] if given else [cache_dir()]
    for root in roots:
        for candidate in (root, root / CIFAR10_ARCHIVE, root / CIFAR10_FOLDER):
            if candidate.is_file() and candidate.name.endswith((".tar.gz", ".tgz", ".tar")):
                return candidate
            if candidate.is_dir() and (candidate / "batches.meta").is_file():
                return candidate
    if given:
        raise DataError(f"no {CIFAR10_ARCHIVE} or {CIFAR10_FOLDER}/ found at {given}")
    if not download:
        raise DataError(f"CIFAR-10 is not in {cache_dir()}; pass --data-dir or set {DATA_DIR_ENV}")
    return download_cifar10(cache_dir())


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles CIFAR batches only: dicts, lists, bytes and numpy arrays, never arbitrary code."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):  # noqa: ANN201 (pickle's signature)
        if (module, name) not in self.ALLOWED:
            raise DataError(f"CIFAR batch refers to {module}.{name}, which a data batch never needs")
        return super().find_class(module, name)


def _decode_batch(raw: bytes, name: str) -> np.ndarray:
    try:
        batch = _BatchUnpickler(io.BytesIO(raw), encoding="bytes").load()
        data = np.asarray(batch[b"data"], dtype=np.uint8)
    except DataError:
        raise
    except Exception as e:  # a damaged batch can fail in many ways inside pickle
        raise DataError(f"{name} is not a CIFAR-10 batch ({e})") from None
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(f"{name} holds data of shape {data.shape}, expected (rows, 3072)")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)


def _read_members(source: Path, names: list[str]) -> dict[str, bytes]:
    if source.is_dir():
        return {n: (source / n).read_bytes() for n in names if (source / n).is_file()}
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(source) as tar:
            for member in tar:
                base = member.name.rsplit("/", 1)[-1]
                if base in names and member.isfile():
                    found[base] = tar.extractfile(member).read()  # type: ignore[union-attr]
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DataError(f"cannot read {source}: {e}") from None
    return found


def load_cifar10(split: str = "train", data_dir: str | Path | None = None) -> np.ndarray:
    """All rows of a split as a uint8 array (rows, 32, 32, 3), in the official order."""
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")
    source = locate_cifar10(data_dir)
    members = _read_members(source, SPLITS[split])
    missing = [n for n in SPLITS[split] if n not in members]
    if missing:
        raise DataError(f"{source} lacks {', '.join(missing)}")
    return np.concatenate([_decode_batch(members[n], n) for n in SPLITS[split]])


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".gif")


def _on_white(image: Image.Image) -> Image.Image:
    """RGB as a viewer shows it: transparent parts over white, not the hidden colour beneath them."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba).convert("RGB")
    return image.convert("RGB")


def load_folder(folder: str | Path, limit: int | None = None) -> list[np.ndarray]:
    """The images of a folder (sorted by name) as uint8 RGB arrays, transparency over white; other
    files are ignored."""
    path = Path(folder)
    if not path.is_dir():
        raise DataError(f"{folder} is not a folder of images (and not a known data set name)")
    images = []
    for file in sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        try:
            with Image.open(file) as image:
                images.append(np.asarray(_on_white(image)))
        except (UnidentifiedImageError, OSError) as e:
            raise DataError(f"cannot read {file}: {e}") from None
        if limit and len(images) >= limit:
            break
    if not images:
        raise DataError(f"no images in {folder}")
    return images


# --- Kodak: the 24 photographs every learned-codec paper reports on ---

KODAK_URL = "http://r0k.us/graphics/kodak/kodak/kodim{:02d}.png"
# SHA-256 of kodim01.png .. kodim24.png as the project holds them (../shared/data/SHA256SUMS); a
# download that differs is refused rather than measured.
KODAK_SHA256 = (
    "6b4fbe6f3e8e0e20150d5b0c32248bf072e22b5989d415f96f796c5b7004a70f",
    "1788370471429d992750a09caf6702ac74e56962447de02520d4b161738c0369",
    "b9c800ee568f0b18c983817df08d9f7f24a7ddb3abfdc31bde9234c4fde83137",
    "0c60c62599ad33fd78b29c36013fbe4120946f6c327c0ef0ec6983297fb48d23",
    "ccf694ceb6bbf431e0009ed0d5573a8ff0915095b69ddfb527b91d8325897f5e",
    "f4212cc927d1d579c712843cf8320c7eccb571e5ea80456022ffe99d67e9cd5d",
    "7cdd6d63ae0a245f6f9d983d740e11c6808c2efc24f8351aad9b5f676c27b55a",
    "5a6a089bdb47605287c00d89ebf2a5312981eb998c94b5853d917c93a9066cdb",
    "4d8d801592aeaf446978bbd1c83b76c498242d0f684769311a4e7248289500bf",
    "7aca487dc83db732a5690b7affe8558e9dadf5bb44a4589ba2b607480a07228b",
    "c7c02bd6e942d1181518e3ce2d97cf0451e4494a5e9d6ddee276940e4875d746",
    "df571f5e66d1aefd764ea77855e81e3be61528c34962a0fd1d50557502162c1e",
    "797949ce1152ef157ff0a1231c95cb8ed7641615e0b0f5f77f851a44aee19e8d",
    "08a1898d5702f32e7d9f94a94651d74a62cb9325475775a558b388c8d98f1846",
    "416c475f39b0eb9203ce7f77d2af8824f5bffc1a86a4605865017f04c41639b9",
    "5d03303693decdf7a1e1e930b5ca6684283aa80a9e7d8d6a842a74fa5f790640",
    "19d90e98e5835efae20a6e17e22e5ac6814ee2c8efb32d188ea4359abaf9f5bd",
    "83df267dfec61e9b9d3756c422502160b2fab595650c73a8b12940540ad09ec5",
    "86560efe85a13413b228ef7e42dde0d439b25a94fb8e2d6fb1dc1631cf48853b",
    "1ae187d92b3a4483b6717f7fd08592846ffdfc340c6424f6756627a27f3d8ea7",
    "26e193795108c4b5ec47206ae4ff07a353d2492947f7a7ae8d380e042b74027b",
    "627b76fccf714b4ddffb739b2eb63ba2817cf5b5a8e222079542dcf2cfdda939",
    "85c67d7ea758cb0604fb6980ab0c65091a2eefa7b3b50cbb1bc702a60206dfe5",
    "9f1c26df52217bd49f998a720a2ffeba41a535cf826f4ae32e355fb2b0bbc0fe",
)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def locate_kodak(data_dir: str | Path | None = None, download: bool = True) -> Path:
    """The folder holding kodim01.png .. kodim24.png: `data_dir`, its kodak/, or a kodak/ beside it
    (a data folder with cifar10/ and kodak/ side by side); without `data_dir`, the cache."""
    names = [f"kodim{i:02d}.png" for i in range(1, 25)]
    given = Path(data_dir) if data_dir else None
    roots = [given, given / "kodak", given.parent / "kodak"] if given else [cache_dir() / "kodak"]
    for root in roots:
        if all((root / n).is_file() for n in names):
            return root
    if data_dir:
        raise DataError(f"{data_dir} does not hold kodim01.png .. kodim24.png")
    if not download:
        raise DataError(f"Kodak is not in {roots[0]}; pass --data-dir")
    return download_kodak(roots[0])


def download_kodak(folder: Path) -> Path:
    """Fetch the 24 Kodak PNGs into `folder`, each checked against its SHA-256."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, digest in enumerate(KODAK_SHA256, start=1):
        target = folder / f"kodim{i:02d}.png"
        if target.is_file() and _sha256(target) == digest:
            continue
        url, part = KODAK_URL.format(i), target.with_suffix(".part")
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                part.write_bytes(response.read())
        except OSError as e:
            part.unlink(missing_ok=True)
            raise DataError(f"cannot download {url} ({e}); pass --data-dir to a local copy") from None
        if (got := _sha256(part)) != digest:
            part.unlink()
            raise DataError(f"downloaded {url} has SHA-256 {got}, expected {digest}")
        part.replace(target)
    return folder


# --- training sources: what train.py draws batches from ---

MAX_DOWNSCALE = 2.0  # photo crops are taken from a region up to this many times larger, then shrunk
VAL_EVERY = 48  # every 48th photo (in sorted path order) is held out for validation: 16 of 768
VAL_CROP = 256  # validation uses a centre crop of this side from each held-out photo


def read_rgb(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(f"cannot read {path}: {e}") from None


def centre_crop(image: np.ndarray, side: int) -> np.ndarray:
    top, left = (image.shape[0] - side) // 2, (image.shape[1] - side) // 2
    return image[top : top + side, left : left + side]


def split_photos(folder: str | Path) -> tuple[list[Path], list[Path]]:
    """A photo folder's images (searched recursively, path order) as (training, held out): every
    VAL_EVERY-th photo is held out for validation."""
    files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"no images in {folder}")
    held_out = files[::VAL_EVERY]
    return [p for p in files if p not in set(held_out)], held_out


def validation_crops(held_out: list[np.ndarray]) -> np.ndarray:
    """The centre crops validation uses: VAL_CROP pixels a side, or the smallest photo's side, a
    multiple of 64."""
    side = min(VAL_CROP, *(min(im.shape[:2]) for im in held_out))
    return np.stack([centre_crop(im, side - side % 64) for im in held_out])


class PhotoCrops:
    """Random square crops of a folder of photos (searched recursively), for training.

    Each crop comes from a region 1 to MAX_DOWNSCALE times its side (log-uniform), shrunk to `crop`
    pixels, and is flipped left-right half the time; shrinking also hides the photos' mild JPEG
    noise. Every VAL_EVERY-th photo is held out: `validation` holds their centre crops.
    """

    def __init__(self, folder: str | Path, crop: int) -> None:
        training, held_out = split_photos(folder)
        val = validation_crops([read_rgb(p) for p in held_out])
        self._take([read_rgb(p) for p in training], val, crop, folder)

    def _take(self, images: list[np.ndarray], validation: np.ndarray, crop: int, where) -> None:
        """Keep the photos a crop fits in, and the validation crops."""
        self.crop = crop
        self.images = [im for im in images if min(im.shape[:2]) >= crop]
        if not self.images:
            raise DataError(f"no training photos in {where} are at least {crop} pixels on each side")
        self.validation = validation

    def batch(self, rng: np.random.Generator, size: int, crop: int | None = None) -> np.ndarray:
        """`size` random crops, uint8 (size, crop, crop, 3); `crop` at most the smallest photo's side."""
        return np.stack([self._one(rng, crop or self.crop) for _ in range(size)])

    def _one(self, rng: np.random.Generator, crop: int) -> np.ndarray:
        image = self.images[rng.integers(len(self.images))]
        h, w = image.shape[:2]
        most = max(1.0, min(MAX_DOWNSCALE, h / crop, w / crop))
        side = min(h, w, round(crop * math.exp(rng.uniform(0, math.log(most)))))
        top, left = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
        patch = image[top : top + side, left : left + side]
        if side != crop:
            patch = np.asarray(Image.fromarray(patch).resize((crop, crop), Image.Resampling.LANCZOS))
        return np.ascontiguousarray(patch[:, ::-1] if rng.random() < 0.5 else patch)
