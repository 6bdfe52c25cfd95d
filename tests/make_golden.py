"""Make tests/data/golden-id{N}-*: .cae files made by shipped weights id N and what they decode to.

Run once, when shipped bundle N is added; files made by existing bundles must never change.
    python tests/make_golden.py 3
"""

import sys
from pathlib import Path

import numpy as np

import cae_codec
from cae_codec import weights

DATA = Path(__file__).parent / "data"


def main(weights_id: int) -> None:
    DATA.mkdir(exist_ok=True)
    path = weights.resolve(weights_id=weights_id)
    y, x = np.mgrid[0:24, 0:36]
    rgb = np.stack([x * 7, y * 10, (x + y) * 4], axis=-1).astype(np.uint8)
    rgba = np.dstack([rgb, (x * y % 256).astype(np.uint8)])
    cases = (("rgb-q6", rgb, 6, "zstd"), ("rgba-q2", rgba, 2, "zstd"), ("rgb-q4-range", rgb, 4, "range"))
    for name, image, quality, coder in cases:
        data = cae_codec.compress(image, quality=quality, weights=path, coder=coder)
        stem = DATA / f"golden-id{weights_id}-{name}"
        if stem.with_suffix(".cae").exists():
            raise SystemExit(f"{stem}.cae exists; golden files are never remade")
        stem.with_suffix(".cae").write_bytes(data)
        cae_codec.decompress(data).save(stem.with_suffix(".png"))


if __name__ == "__main__":
    main(int(sys.argv[1]))
