"""Time compress and decompress with 1 and 2 torch threads, in-process (no start-up) and through the
CLI (with start-up): a 32x32 CIFAR image, chelsea (451x300) and a 768x512 Kodak photo.

    python benchmarks/threads.py [--shared ../shared/data] [--label idle]

Appends to benchmarks/results/threads.json; run it on an idle and on a busy machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import cae_codec
from cae_codec.benchmark import best_of

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--label", default="idle")
    args = parser.parse_args()
    shared = Path(args.shared)
    images = {
        "32x32": np.asarray(Image.open(shared / "photos" / "chelsea.png").convert("RGB"))[100:132, 200:232],
        "chelsea 451x300": np.asarray(Image.open(shared / "photos" / "chelsea.png").convert("RGB")),
        "kodim01 768x512": np.asarray(Image.open(shared / "kodak" / "kodim01.png").convert("RGB")),
    }
    rows = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for name, image in images.items():
            data = cae_codec.compress(image)  # warm: weights loaded, kernels chosen
            encode = best_of(lambda image=image: cae_codec.compress(image))
            decode = best_of(lambda data=data: cae_codec.decompress(data))
            rows.append({"threads": threads, "image": name, "encode_s": encode, "decode_s": decode})
            print(
                f"{args.label}, {threads} thread(s), {name}: encode {encode * 1000:.0f} ms, "
                f"decode {decode * 1000:.0f} ms (in-process)",
                flush=True,
            )
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "kodim01.png"
        Image.fromarray(images["kodim01 768x512"]).save(source)
        for threads in (1, 2):
            command = [
                sys.executable,
                "-m",
                "cae_codec",
                "--threads",
                str(threads),
                "compress",
                str(source),
                "-f",
            ]
            cli = best_of(lambda command=command: subprocess.run(command, check=True, capture_output=True))
            rows.append({"threads": threads, "image": "kodim01 via the CLI", "compress_s": cli})
            print(
                f"{args.label}, {threads} thread(s), kodim01: `cae-codec compress` {cli:.2f} s with start-up"
            )
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "threads.json"
    record = json.loads(path.read_text()) if path.exists() else {}
    record[args.label] = {"torch": torch.__version__, "rows": rows}
    path.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
