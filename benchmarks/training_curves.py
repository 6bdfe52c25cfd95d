"""Plot validation loss per quality level against step from training CSV logs (`train --log`).

    python benchmarks/training_curves.py OUT.png LOG.csv[:LABEL] ... [--baseline 0.909,1.208,...]

The model cards show these curves; the baseline draws another model's loss on the same
validation data as dashed lines.
"""

from __future__ import annotations

import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from cae_codec.training.curves import read_log  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("logs", nargs="+", help="CSV log, optionally :label")
    parser.add_argument("--baseline", help="per-level losses of a reference model, comma-separated")
    parser.add_argument("--baseline-label", default="baseline")
    args = parser.parse_args()
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    colours = plt.cm.viridis([i / 7 for i in range(8)])
    for n, spec in enumerate(args.logs):
        path, _, label = spec.partition(":")
        series = read_log(path)["val"]
        levels = sorted(int(k[6:]) for k in series if k.startswith("loss_q"))
        for q in levels:
            points = sorted(series[f"loss_q{q}"].items())
            ax.plot(
                [s for s, _ in points],
                [v for _, v in points],
                marker="o",
                markersize=3,
                color=colours[q - 1],
                linestyle=("-", ":", "-.")[n % 3],
                label=f"{label or path} q{q}" if q in (levels[0], levels[-1]) else None,
            )
    if args.baseline:
        for q, v in enumerate(float(x) for x in args.baseline.split(",")):
            ax.axhline(
                v,
                color=colours[q],
                linestyle="--",
                linewidth=0.8,
                label=f"{args.baseline_label} (dashed)" if q == 0 else None,
            )
    ax.set(xlabel="step", ylabel="validation loss (lambda*255^2*MSE + bpp)", yscale="log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center right")
    fig.tight_layout()
    fig.savefig(args.out)


if __name__ == "__main__":
    main()
