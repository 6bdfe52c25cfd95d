"""Training: rate-distortion optimisation of the networks, on CIFAR-10 rows or on photo crops.

loop.py runs the steps and validates; sources.py draws the batches (on the GPU for photos there);
state.py saves and resumes a run, also as parts small enough to commit; window.py is one timed run
on a lent GPU; losses.py holds the distortion terms and curves.py draws a run's log.
"""

from .loop import (
    LevelBalance,
    Progress,
    add_noise,
    curves_path,
    evaluate,
    init_network,
    process_rank,
    rd_loss,
    train,
    training_device,
)
from .sources import sample_batch, split_rows

__all__ = [
    "LevelBalance",
    "Progress",
    "add_noise",
    "curves_path",
    "evaluate",
    "init_network",
    "process_rank",
    "rd_loss",
    "sample_batch",
    "split_rows",
    "train",
    "training_device",
]
