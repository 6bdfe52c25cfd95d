"""Training curves: the CSV log that `train --log` writes, read back and drawn as a PNG beside it."""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path


def read_log(path: Path) -> dict[str, dict[str, dict[int, float]]]:
    """split ("train" or "val") -> metric -> {step: value}."""
    series: dict[str, dict[str, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
    with Path(path).open(newline="") as f:
        for row in csv.DictReader(f):
            series[row["split"]][row["metric"]][int(row["step"])] = float(row["value"])
    return series


def plot_log(log: Path, out: Path) -> bool:
    """Loss (training and validation), bpp and PSNR per level against step; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    series = read_log(log)
    val, train = series["val"], series["train"]
    levels = sorted(int(k[6:]) for k in val if k.startswith("loss_q"))
    fig, axes = plt.subplots(1, 3, figsize=(13, 4), dpi=100)
    colours = plt.cm.viridis([i / max(1, len(levels) - 1) for i in range(len(levels))])
    for ax, metric, label in zip(
        axes,
        ("loss", "bpp", "psnr"),
        ("loss (lambda*255^2*MSE + bpp)", "bpp (model estimate)", "PSNR (dB)"),
        strict=True,
    ):
        for colour, q in zip(colours, levels, strict=True):
            points = sorted(val.get(f"{metric}_q{q}", {}).items())
            if points:
                steps, values = zip(*points, strict=True)
                ax.plot(steps, values, marker="o", markersize=3, color=colour, label=f"q{q}")
        if metric == "loss" and train.get("loss"):
            steps, values = zip(*sorted(train["loss"].items()), strict=True)
            # Markers too: a log with one validation so far has a single training point.
            ax.plot(steps, values, color="black", linestyle="--", marker="x", label="training (all levels)")
        ax.set(xlabel="step", ylabel=f"validation {label}", yscale="log" if metric == "loss" else "linear")
        ax.grid(alpha=0.3)
    handles, names = axes[0].get_legend_handles_labels()
    # Beside the plots, never over the high levels' curves.
    fig.legend(handles, names, fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.suptitle(f"{Path(log).name}: validation per quality level")
    fig.tight_layout()
    tmp = out.with_name(out.name + ".tmp.png")
    fig.savefig(tmp, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(out)
    return True
