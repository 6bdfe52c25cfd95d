"""An older checkout against this one on one image: interleaved, each call in a fresh process.

    git worktree add /tmp/v050 e60aa64
    python benchmarks/against_release.py /tmp/v050 photo.png [--repeats 2]

Prints each run, then the best times, file sizes, PSNR and peak RSS of each, and the speed-ups.
Both run with the weights of their own checkout and their own defaults (max_pixels raised so any
size runs); PyTorch is imported before the clock starts, the weights and everything else after.
Pause background work first: the two must share a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = str(Path(__file__).resolve().parents[1])

CHILD = r"""
import sys, time, resource, json
sys.path.insert(0, sys.argv[1])
import torch  # imported by the first call of either version otherwise: about 1 s that is not the codec's
import cae_codec
from PIL import Image
import numpy as np
source, kind = sys.argv[2], sys.argv[3]
if kind == "enc":
    image = Image.open(source); image.load()
    start = time.perf_counter(); data = cae_codec.compress(image, max_pixels=10**9)
    out = {"s": time.perf_counter() - start, "bytes": len(data)}
    open(sys.argv[4], "wb").write(data)
else:
    data = open(source, "rb").read()
    start = time.perf_counter(); image = cae_codec.decompress(data, max_pixels=10**9)
    out = {"s": time.perf_counter() - start}
    reference = np.asarray(Image.open(sys.argv[4]).convert("RGB"), dtype=np.float64)
    out["psnr"] = 10 * np.log10(255**2 / ((np.asarray(image, dtype=np.float64) - reference) ** 2).mean())
out["rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out))
"""


def run(tree: str, *args: str) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, tree, *args], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", help="the older checkout (a git worktree)")
    parser.add_argument("image")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    trees = {"old": args.old, "new": HERE}
    runs: dict[str, dict[str, list[dict]]] = {name: {"enc": [], "dec": []} for name in trees}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for name, tree in trees.items():
                packed = f"{tmp}/{name}.cae"
                runs[name]["enc"].append(run(tree, args.image, "enc", packed))
                runs[name]["dec"].append(run(tree, packed, "dec", args.image))
                print(name, repeat, runs[name]["enc"][-1], runs[name]["dec"][-1], flush=True)
    best = {name: {k: min(r["s"] for r in v) for k, v in got.items()} for name, got in runs.items()}
    for name, got in runs.items():
        rss = [max(r["rss_mib"] for r in got[k]) for k in ("enc", "dec")]
        print(
            f"{name}: encode {best[name]['enc']:.2f} s, decode {best[name]['dec']:.2f} s, "
            f"{got['enc'][0]['bytes']} bytes, PSNR {got['dec'][0]['psnr']:.3f} dB, "
            f"peak RSS {rss[0]:.0f} / {rss[1]:.0f} MiB"
        )
    print(
        f"speed-up: encode {best['old']['enc'] / best['new']['enc']:.2f}x, "
        f"decode {best['old']['dec'] / best['new']['dec']:.2f}x"
    )


if __name__ == "__main__":
    main()
