"""Two training logs of the same run in bfloat16 and in float32, drawn side by side per level.

    cae-codec train ... --steps 500 --eval-every 100 --precision bf16 --log bf16.csv
    cae-codec train ... --steps 500 --eval-every 100 --precision fp32 --log fp32.csv
    python benchmarks/precision_curves.py bf16.csv fp32.csv benchmarks/results/cifar-bf16-vs-fp32

Writes NAME.png (validation loss against step, one panel per level) and NAME.csv (both logs).
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path


def validation(path: Path) -> dict[int, list[tuple[int, float]]]:
    """level -> [(step, validation loss)] of a training log."""
    out: dict[int, list[tuple[int, float]]] = {}
    with path.open() as f:
        for row in csv.DictReader(f):
            if row["split"] == "val" and row["metric"].startswith("loss_q"):
                out.setdefault(int(row["metric"][6:]), []).append((int(row["step"]), float(row["value"])))
    return out


def main(bf16: Path, fp32: Path, name: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = {"bfloat16": validation(bf16), "float32": validation(fp32)}
    levels = sorted(runs["float32"])
    fig, axes = plt.subplots(2, (len(levels) + 1) // 2, figsize=(12, 5), sharex=True)
    for ax, level in zip(axes.flat, levels, strict=False):
        for label, run in runs.items():
            steps, losses = zip(*run[level], strict=True)
            ax.plot(steps, losses, marker="o", markersize=3, label=label)
        ax.set_title(f"level {level}", fontsize=9)
        ax.tick_params(labelsize=7)
    axes.flat[0].legend(fontsize=8)
    fig.supxlabel("step (batch 64 of 32x32, from cae-msh8-v3)")
    fig.supylabel("validation loss (lambda D + bpp)")
    fig.tight_layout()
    fig.savefig(name.with_suffix(".png"), dpi=110)
    with name.with_suffix(".csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["precision", "level", "step", "val_loss"])
        for label, run in runs.items():
            for level, points in sorted(run.items()):
                writer.writerows([label, level, step, loss] for step, loss in points)


if __name__ == "__main__":
    main(*map(Path, sys.argv[1:4]))
