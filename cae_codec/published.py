"""Published rate-distortion points on Kodak, drawn beside our own measurements for comparison.

Source: CompressAI's published Kodak results (InterDigitalInc/CompressAI, results/image/kodak/,
compressai-<model>_mse_cuda.json, commits 3d3c9bbd and 128f0039): the models of its zoo trained for
MSE, mean bpp (whole bitstream) and mean RGB PSNR over the 24 images, qualities 1 to 8.
"""

from __future__ import annotations

SOURCE = "CompressAI published Kodak results (results/image/kodak/compressai-*_mse_cuda.json)"

# name: (bpp, PSNR dB), quality 1 .. 8
KODAK: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "bmshj2018-factorized": (
        (0.1226, 0.1885, 0.2878, 0.4404, 0.6481, 0.9670, 1.3512, 1.8333),
        (26.909, 28.218, 29.617, 31.277, 32.956, 35.381, 37.397, 39.621),
    ),
    "bmshj2018-hyperprior": (
        (0.1313, 0.2089, 0.3199, 0.4784, 0.6687, 0.9388, 1.2592, 1.6602),
        (27.582, 29.197, 30.972, 32.838, 34.526, 36.743, 38.584, 40.557),
    ),
    "mbt2018-mean": (
        (0.1239, 0.1980, 0.3072, 0.4606, 0.6617, 0.9144, 1.2342, 1.6191),
        (27.699, 29.359, 31.129, 32.951, 34.968, 36.911, 38.838, 40.633),
    ),
}
