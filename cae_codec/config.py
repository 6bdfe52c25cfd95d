"""The settings a user chooses, importable without torch so the command line starts fast: the
training configuration, the kinds of network, the coders and the codec's limits."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .container import CODERS

DATA_DIR_ENV = "CAE_CODEC_DATA_DIR"  # where CIFAR-10 is found when --data-dir is not given

PRIORS = ("factorized", "mean-scale", "checkerboard")  # entropy models (ModelConfig.prior)
STRIDES = (4, 16)  # supported total downsamplings of g_a

AUTO = "auto"  # not a coder: compress tries each coder worth trying and keeps the smaller file
# auto tries zstd only on images larger than this. Up to it zstd never made the smaller file: not in
# 4,064 CIFAR-10 test files nor in 768 files of photos shrunk to 32-256 px, where at 320 px it won 2
# of 128 (benchmarks/coders.py). Skipping it makes a 32x32 image's encode about a fifth faster.
ZSTD_MIN_PIXELS = 256 * 256
# ... and only at levels up to this one: above it zstd never made the smaller file of a photo (0 of 24
# Kodak photos and 0 of 5 others at each of levels 6-8, benchmarks/results/coders.md), and skipping it
# makes a large photo's encode at the default quality (level 6) about a fifth faster.
ZSTD_MAX_LEVEL = 5
CODER_CHOICES = (AUTO, *CODERS)
# How g_a and g_s compute on images over BATCH_PIXELS: "auto" uses bfloat16 where the CPU has bf16
# units (AMX, AVX512-BF16), float32 elsewhere. Files do not depend on it: any decodes on any machine.
PRECISIONS = ("auto", "bf16", "fp32")
# 134 megapixels (16384 x 8192): cameras' 24-61 MP and 100 MP panoramas pass. Memory is bounded by
# tiles and segments, not by the image (a 45 MP photo codes within about 2.5 GB either way).
DEFAULT_MAX_PIXELS = 1 << 27
# Images up to this area share forward passes in the batch API. Larger ones always run alone, and only
# they run channels-last (faster here, but its float rounding would differ between a batch and one
# image, so a small image would decode differently alone and in a folder).
BATCH_PIXELS = 256 * 256

# Quality levels of every shipped model (a test checks), so that -q is checked before torch loads.
SHIPPED_LEVELS = 8  # every shipped bundle's quality levels
FIRST_USER_ID = 1 << 16  # weights ids below this are reserved for weights that ship with the package

LOSSES = ("mse", "l1", "bce", "ms-ssim")  # distortion terms training can use (losses.py)

# Lambdas of CompressAI's factorized-prior ladder: loss = lambda * 255^2 * MSE + bpp.
DEFAULT_LAMBDAS = (0.0018, 0.0035, 0.0067, 0.0130, 0.0250, 0.0483, 0.0932, 0.1800)


def shipped_dir() -> Path:
    """Where the shipped weights live: inside the installed package, or `weights/` in a checkout."""
    installed = Path(__file__).parent / "weights"
    return installed if installed.is_dir() else Path(__file__).parent.parent / "weights"


@dataclass
class TrainConfig:
    out: Path | None  # the weight file written at the end; None: no export (a timed window's run)
    data_dir: str | None = None
    steps: int = 20000
    minutes: float | None = None  # train this long (the schedule follows the clock), at most `steps`
    batch_size: int = 64
    lr: float = 3e-4
    seed: int = 0
    val_rows: int = 256
    eval_every: int = 500
    lambdas: tuple[float, ...] = DEFAULT_LAMBDAS
    N: int = 128
    M: int = 64
    hyper_N: int = 0  # 0: factorized prior; else the hidden channels of the hyperprior's h_a and h_s
    hyper_M: int = 32  # channels of the hyper-latent z (with hyper_N)
    prior: str = ""  # model.PRIORS; "" follows hyper_N (factorized, or mean-scale)
    stride: int = 4  # total downsampling of g_a: 4 for the CIFAR models, 16 for photo models
    photos: Path | None = None  # train on random crops of the photos in this folder, not on CIFAR-10
    crop: int = 128  # side of the photo crops (a multiple of 64)
    loss: str = "mse"  # the distortion term, one of LOSSES; the rate term is always bpp
    balance_levels: bool = False  # weigh each level's loss by 1 / its running mean (LevelBalance)
    noise: float = 0.0  # Gaussian noise (std, in 8-bit levels) added to inputs: a denoising codec
    device: str = "cpu"  # where training runs: cpu, cuda or cuda:N (export always runs on the CPU)
    # PRECISIONS: "auto" trains the transforms in bfloat16 on a CPU with bf16 units (float32 master
    # weights; latents, densities, rate and loss in float32), float32 elsewhere.
    precision: str = "auto"
    checkpoint_minutes: float = 5.0  # also checkpoint after this much wall time, so a kill loses little
    checkpoint: str | Path | None = None  # a file, or a folder (ending in /) of parts small enough to commit
    checkpoint_optimizer: bool = True  # False: checkpoints hold the network without Adam's moments
    log_csv: Path | None = None
    init_from: Path | None = None  # start from this checkpoint's or bundle's network (the parts that fit)
    first_rows: int | None = None  # the first N rows of each 10,000-row training batch (the exact ones)
    first_rows_share: float = 1.0  # fraction of each batch drawn from those rows; the rest from all rows
    weights_id: int | None = None
    name: str | None = None
    default_quality: int | None = None  # default: three quarters of the way up the levels
