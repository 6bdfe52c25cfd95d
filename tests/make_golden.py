"""Regenerate tests/data/golden-*: .cae files made by shipped weights and what they decode to.

Run only when a new shipped bundle is added; files made by existing bundles must never change.
    python tests/make_golden.py
"""

from pathlib import Path

import numpy as np

import cae_codec

DATA = Path(__file__).parent / "data"


def main() -> None:
    DATA.mkdir(exist_ok=True)
    y, x = np.mgrid[0:24, 0:36]
    rgb = np.stack([x * 7, y * 10, (x + y) * 4], axis=-1).astype(np.uint8)
    rgba = np.dstack([rgb, (x * y % 256).astype(np.uint8)])
    for name, image, quality in (("rgb-q6", rgb, 6), ("rgba-q2", rgba, 2)):
        data = cae_codec.compress(image, quality=quality)
        (DATA / f"golden-{name}.cae").write_bytes(data)
        cae_codec.decompress(data).save(DATA / f"golden-{name}.png")


if __name__ == "__main__":
    main()
