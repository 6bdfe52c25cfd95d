"""CIFAR-10 in its official python format: find a local copy or download it once into a cache."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR10_FOLDER = "cifar-10-batches-py"
DATA_DIR_ENV = "CAE_CODEC_DATA_DIR"
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


def load_folder(folder: str | Path, limit: int | None = None) -> list[np.ndarray]:
    """The images of a folder (sorted by name) as uint8 RGB arrays; other files are ignored."""
    path = Path(folder)
    if not path.is_dir():
        raise DataError(f"{folder} is not a folder of images (and not a known data set name)")
    images = []
    for file in sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        try:
            with Image.open(file) as image:
                images.append(np.asarray(image.convert("RGB")))
        except (UnidentifiedImageError, OSError) as e:
            raise DataError(f"cannot read {file}: {e}") from None
        if limit and len(images) >= limit:
            break
    if not images:
        raise DataError(f"no images in {folder}")
    return images
