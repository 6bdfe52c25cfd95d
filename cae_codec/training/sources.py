"""Where training batches come from: CIFAR-10's training rows, or random crops of a photo folder."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..config import TrainConfig
from ..datasets import MAX_DOWNSCALE, VAL_CROP, PhotoCrops, load_cifar10

DICTIONARY_ROWS = 3000  # training rows whose latents train each level's zstd dictionary
DICTIONARY_CROPS = 96  # or, for photos, training crops (VAL_CROP pixels a side)
VAL_BATCH = 4  # validation rows come from the start of data_batch_5 (training rows 40000..)


def split_rows(
    train: np.ndarray, val_rows: int, first_rows: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Hold out `val_rows` rows of the training batches (never the test batch) for validation.

    With `first_rows`, training keeps only the first that many rows of each 10,000-row batch.
    """
    start = VAL_BATCH * 10000 if len(train) >= 50000 else 0
    index = np.arange(len(train))
    keep = (index < start) | (index >= start + val_rows)
    if first_rows is not None:
        keep &= index % 10000 < first_rows
    return train[keep], train[start : start + val_rows]


def sample_batch(
    rng: np.random.Generator, pools: tuple[np.ndarray, np.ndarray], share: float, size: int
) -> np.ndarray:
    """A batch with about `share` of its rows from pools[0] (the exact rows) and the rest from pools[1]."""
    from_first = rng.random(size) < share
    rows = [pool[rng.integers(0, len(pool), size)] for pool in pools]
    return np.where(from_first[:, None, None, None], rows[0], rows[1])


class CifarRows:
    """Training batches of CIFAR-10 rows (optionally mixing in only the exact first rows), with flips."""

    def __init__(self, cfg: TrainConfig) -> None:
        all_rows = load_cifar10("train", cfg.data_dir)
        self.rows, self.validation = split_rows(all_rows, cfg.val_rows, cfg.first_rows)
        self.pools = (self.rows, split_rows(all_rows, cfg.val_rows)[0])
        self.share = cfg.first_rows_share if cfg.first_rows is not None else 1.0

    def batch(self, rng: np.random.Generator, size: int) -> np.ndarray:
        batch = sample_batch(rng, self.pools, self.share, size)
        flip = rng.random(size) < 0.5
        batch[flip] = batch[flip, :, ::-1]
        return np.ascontiguousarray(batch)

    def dictionary_images(self, seed: int) -> np.ndarray:
        return self.rows[np.random.default_rng(seed).permutation(len(self.rows))[:DICTIONARY_ROWS]]

    def on(self, device: torch.device) -> None:
        """CIFAR rows are small enough to come from the host: no device-side source."""
        return None


class PhotoSource(PhotoCrops):
    """Random crops of a photo folder (datasets.PhotoCrops) as a training source."""

    def dictionary_images(self, seed: int) -> np.ndarray:
        side = min(VAL_CROP, *(min(im.shape[:2]) for im in self.images))
        return self.batch(np.random.default_rng(seed), DICTIONARY_CROPS, side - side % 64)

    def on(self, device: torch.device) -> DeviceCrops:
        """The same photos held on `device`, where batches are cut without the host."""
        return DeviceCrops(self.images, self.crop, device)


class DeviceCrops:
    """PhotoSource's crops cut on the training device from photos held there as uint8.

    Each crop is drawn as PhotoSource draws it (a region 1 to MAX_DOWNSCALE times its side, a random
    place, a flip half the time) and resampled bilinearly: exact at 1x, a 2x2 box at 2x, where
    PhotoSource uses Lanczos. The host only draws 5 numbers a crop.
    """

    def __init__(self, images: list[np.ndarray], crop: int, device: torch.device) -> None:
        self.crop, self.device = crop, device
        self.sizes = np.array([im.shape[:2] for im in images])
        height, width = self.sizes.max(axis=0)
        self.window = min(math.ceil(MAX_DOWNSCALE * crop), height, width)  # the largest region
        self.photos = torch.zeros((len(images), height, width, 3), dtype=torch.uint8, device=device)
        for i, image in enumerate(images):
            self.photos[i, : image.shape[0], : image.shape[1]] = torch.from_numpy(image).to(device)

    def batch(self, rng: np.random.Generator, size: int) -> torch.Tensor:
        """`size` crops on the device, float (size, 3, crop, crop) in [0, 1]."""
        index = rng.integers(len(self.sizes), size=size)
        h, w = self.sizes[index, 0], self.sizes[index, 1]
        most = np.clip(np.minimum(h, w) / self.crop, 1.0, MAX_DOWNSCALE)
        scale = np.exp(rng.uniform(0, 1, size) * np.log(most))  # log-uniform in [1, most]
        side = np.minimum(np.minimum(h, w), np.round(self.crop * scale)).astype(np.int64)
        top, left = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
        return self.cut(index, top, left, side, rng.random(size) < 0.5)

    def cut(self, index, top, left, side, flip) -> torch.Tensor:
        """The crops of photos `index` at (top, left), `side` pixels square, mirrored where `flip`."""
        # Each region is read through a window of fixed size that starts at it, or as close as fits.
        row0 = np.minimum(top, self.photos.shape[1] - self.window)
        col0 = np.minimum(left, self.photos.shape[2] - self.window)
        numbers = torch.from_numpy(np.stack([index, row0, col0, top - row0, left - col0, side, flip]))
        index, row0, col0, dy, dx, side, flip = to_device(numbers.long(), self.device).unbind()
        span = torch.arange(self.window, device=self.device)
        rows, cols = row0[:, None] + span, col0[:, None] + span
        windows = self.photos[index[:, None, None], rows[:, :, None], cols[:, None, :]]  # (B, W, W, 3)
        windows = windows.permute(0, 3, 1, 2).float().div_(255)
        # Sample centres in window pixels, then in grid_sample's units (-1 and 1: the outer edges).
        centres = (torch.arange(self.crop, device=self.device) + 0.5) / self.crop
        ys = (dy[:, None] + side[:, None] * centres) / self.window * 2 - 1
        xs = (dx[:, None] + side[:, None] * centres) / self.window * 2 - 1
        xs = torch.where(flip[:, None].bool(), xs.flip(1), xs)
        n = self.crop
        grid = torch.stack([xs[:, None, :].expand(-1, n, -1), ys[:, :, None].expand(-1, -1, n)], dim=-1)
        return F.grid_sample(windows, grid.float(), mode="bilinear", align_corners=False)


def make_source(cfg: TrainConfig) -> CifarRows | PhotoSource:
    """The training data a config names: a photo folder, else CIFAR-10's training batches."""
    if cfg.photos is None:
        return CifarRows(cfg)
    if cfg.crop % 64:
        raise ValueError(f"crop must be a multiple of 64, not {cfg.crop}")
    return PhotoSource(cfg.photos, cfg.crop)


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor on `device`; to a GPU through pinned memory, so the copy waits for nothing."""
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (B,H,W,3) to float (B,3,H,W) in [0,1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255)
