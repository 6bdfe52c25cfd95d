"""Distortion terms for training: loss = lambda * scale * D(x_hat, x) + bpp, per image.

Each D is scaled to MSE's units (255^2 * MSE, CompressAI's convention) so one lambda ladder
(config.DEFAULT_LAMBDAS) gives comparable rates whichever term is chosen.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ..metrics import MS_SSIM_WEIGHTS

_WINDOW, _SIGMA = 11, 1.5


def _gaussian(channels: int) -> Tensor:
    t = torch.arange(_WINDOW, dtype=torch.float32) - _WINDOW // 2
    g = torch.exp(-(t**2) / (2 * _SIGMA**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, _WINDOW, _WINDOW).contiguous()


def _ssim_parts(a: Tensor, b: Tensor, window: Tensor) -> tuple[Tensor, Tensor]:
    """Per image: mean SSIM and mean contrast-structure term, on images in [0, 1]."""
    c1, c2 = 0.01**2, 0.03**2
    groups = a.shape[1]
    mu_a, mu_b = F.conv2d(a, window, groups=groups), F.conv2d(b, window, groups=groups)
    var_a = F.conv2d(a * a, window, groups=groups) - mu_a**2
    var_b = F.conv2d(b * b, window, groups=groups) - mu_b**2
    cov = F.conv2d(a * b, window, groups=groups) - mu_a * mu_b
    cs = (2 * cov + c2) / (var_a + var_b + c2)
    ssim = (2 * mu_a * mu_b + c1) / (mu_a**2 + mu_b**2 + c1) * cs
    return ssim.mean(dim=(1, 2, 3)), cs.mean(dim=(1, 2, 3))


def ms_ssim(a: Tensor, b: Tensor) -> Tensor:
    """MS-SSIM per image, over as many of the 5 scales as the image allows (weights renormalised):
    a 32x32 image has 2, a 176x176 one all 5."""
    scales = max(1, min(5, 1 + int(math.log2(min(a.shape[2:]) / _WINDOW))))
    weights = torch.tensor(MS_SSIM_WEIGHTS[:scales], device=a.device)
    weights = weights / weights.sum()
    window = _gaussian(a.shape[1]).to(a.device)
    terms = []
    for s in range(scales):
        ssim, cs = _ssim_parts(a, b, window)
        terms.append(ssim if s == scales - 1 else cs)
        a, b = F.avg_pool2d(a, 2), F.avg_pool2d(b, 2)
    # A negative contrast term (possible early in training) would make the fractional powers undefined.
    stacked = torch.stack(terms, dim=1).clamp_min(1e-6)
    return torch.prod(stacked**weights, dim=1)


def _bce(x_hat: Tensor, x: Tensor) -> Tensor:
    """Binary cross-entropy less its minimum (the entropy of x): about e^2 / (2 x (1 - x)) for small e."""
    p = x_hat.clamp(1e-4, 1 - 1e-4)
    q = x.clamp(1e-4, 1 - 1e-4)
    kl = q * torch.log(q / p) + (1 - q) * torch.log((1 - q) / (1 - p))
    return kl.mean(dim=(1, 2, 3))


# name -> (D per image, scale): mse as CompressAI; bce to equal MSE at mid-grey (e^2 / (2 * 0.25));
# l1 to match MSE's slope at an error of 5 levels (about 34 dB); ms-ssim as CompressAI's MS-SSIM
# ladder, whose lambdas are about 1,300 times its MSE ones.
DISTORTIONS = {
    "mse": (lambda x_hat, x: (x_hat - x).square().mean(dim=(1, 2, 3)), 255.0**2),
    "l1": (lambda x_hat, x: (x_hat - x).abs().mean(dim=(1, 2, 3)), 2 * 5 * 255.0),
    "bce": (_bce, 255.0**2 / 2),
    "ms-ssim": (lambda x_hat, x: 1 - ms_ssim(x_hat.clamp(0, 1), x), 1300.0),
}


def distortion(name: str, x_hat: Tensor, x: Tensor) -> Tensor:
    """The scaled distortion term of each image (B,)."""
    fn, scale = DISTORTIONS[name]
    return scale * fn(x_hat, x)
