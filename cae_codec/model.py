"""The network: a convolutional autoencoder with a factorized entropy model and per-level gains."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class ModelConfig:
    """Every shape the weights depend on; stored inside each weight file."""

    N: int = 96  # channels of the hidden layers
    M: int = 64  # channels of the latent
    levels: int = 8  # quality levels, each with its own gain vector and entropy model
    stride: int = 4  # total downsampling of g_a: an HxW image gives an (H/4)x(W/4)xM latent

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


class GDN(nn.Module):
    """Generalized divisive normalization (Ballé et al. 2016); `inverse` gives IGDN."""

    def __init__(self, channels: int, inverse: bool = False) -> None:
        super().__init__()
        self.inverse = inverse
        # Parametrized as squares so beta and gamma stay non-negative without clamping gradients.
        self.beta = nn.Parameter(torch.ones(channels))
        self.gamma = nn.Parameter(0.1 * torch.eye(channels).view(channels, channels, 1, 1).sqrt())

    def forward(self, x: Tensor) -> Tensor:
        beta = self.beta.square() + 1e-6
        gamma = self.gamma.square()
        norm = torch.sqrt(F.conv2d(x * x, gamma, beta))
        return x * norm if self.inverse else x / norm


class FactorizedDensity(nn.Module):
    """A learned per-channel density for the quantized latent (Ballé et al. 2018, appendix 6.1).

    `likelihood(y)` is P(y - 1/2 < Y < y + 1/2) for each element, channel by channel.
    """

    def __init__(self, channels: int, filters: tuple[int, ...] = (3, 3, 3), init_scale: float = 10.0):
        super().__init__()
        dims = (1, *filters, 1)
        scale = init_scale ** (1 / (len(dims) - 1))
        self.matrices = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.factors = nn.ParameterList()
        for i in range(len(dims) - 1):
            init = math.log(math.expm1(1 / scale / dims[i + 1]))
            self.matrices.append(nn.Parameter(torch.full((channels, dims[i + 1], dims[i]), init)))
            self.biases.append(nn.Parameter(torch.rand(channels, dims[i + 1], 1) - 0.5))
            if i < len(dims) - 2:
                self.factors.append(nn.Parameter(torch.zeros(channels, dims[i + 1], 1)))

    def logits_cdf(self, v: Tensor) -> Tensor:
        """Logit of the cumulative density at v, shaped (C, 1, K)."""
        logits = v
        for i, matrix in enumerate(self.matrices):
            logits = torch.matmul(F.softplus(matrix), logits) + self.biases[i]
            if i < len(self.factors):
                logits = logits + torch.tanh(self.factors[i]) * torch.tanh(logits)
        return logits

    def likelihood(self, y: Tensor) -> Tensor:
        """Probability mass of the unit bin around each element of y (B, C, H, W)."""
        b, c, h, w = y.shape
        v = y.permute(1, 0, 2, 3).reshape(c, 1, -1)
        lower = self.logits_cdf(v - 0.5)
        upper = self.logits_cdf(v + 0.5)
        # Subtracting in the tail where both sigmoids are near 1 loses precision; flip the sign there.
        sign = -torch.sign(lower + upper).detach()
        p = torch.abs(torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower))
        return p.clamp_min(1e-9).reshape(c, b, h, w).permute(1, 0, 2, 3)

    @torch.no_grad()
    def pmf_grid(self, centre: Tensor, half_width: int) -> Tensor:
        """P(Y = centre_c + k) for k in -half_width..half_width: a (C, 2*half_width+1) table."""
        k = torch.arange(-half_width, half_width + 1, dtype=torch.float32)
        values = centre.float()[:, None] + k[None, :]
        return self.likelihood(values[None, :, None, :])[0, :, 0, :]

    @torch.no_grad()
    def medians(self) -> Tensor:
        """Per-channel median, where the CDF's logit crosses zero (found by bisection)."""
        c = self.matrices[0].shape[0]
        lo, hi = torch.full((c, 1, 1), -1e4), torch.full((c, 1, 1), 1e4)
        for _ in range(60):
            mid = (lo + hi) / 2
            below = self.logits_cdf(mid) < 0
            lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
        return ((lo + hi) / 2).flatten()


def _conv(cin: int, cout: int, k: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2)


def _deconv(cin: int, cout: int, k: int, stride: int = 2) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(cin, cout, k, stride=stride, padding=k // 2, output_padding=stride - 1)


class CAE(nn.Module):
    """Convolutional autoencoder with a factorized prior and one gain vector per quality level.

    x (B,3,H,W) in [0,1] -> g_a -> y (B,M,H/4,W/4) -> * gain[q] -> Q -> y_hat (integers)
        -> entropy model p_q(y_hat) gives the rate
    y_hat -> / gain[q] -> g_s -> x_hat (B,3,H,W)

    The gains (Cui et al. 2021) let one network serve `levels` rates, each trained with its own
    lambda; each level has its own factorized density because the latent's spread differs per level.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        N, M, L = config.N, config.M, config.levels
        self.g_a = nn.Sequential(
            _conv(3, N, 5, stride=2), GDN(N), _conv(N, N, 5, stride=2), GDN(N), _conv(N, M, 3)
        )
        self.g_s = nn.Sequential(
            _conv(M, N, 3), GDN(N, inverse=True), _deconv(N, N, 5), GDN(N, inverse=True), _deconv(N, 3, 5)
        )
        # Log-gains start spread over a factor of 16 so the levels begin at distinct rates.
        start = torch.linspace(math.log(0.25), math.log(4.0), L)
        self.log_gain = nn.Parameter(start[:, None].repeat(1, M))
        self.log_inv_gain = nn.Parameter(-start[:, None].repeat(1, M))
        self.densities = nn.ModuleList(FactorizedDensity(M) for _ in range(L))

    def gain(self, level: Tensor) -> Tensor:
        return self.log_gain[level].exp()[:, :, None, None]

    def inv_gain(self, level: Tensor) -> Tensor:
        return self.log_inv_gain[level].exp()[:, :, None, None]

    def analysis(self, x: Tensor, level: Tensor) -> Tensor:
        """Image in [0,1] to the scaled, unquantized latent for each image's level (0-based)."""
        return self.g_a(x) * self.gain(level)

    def synthesis(self, y_hat: Tensor, level: Tensor) -> Tensor:
        """Quantized latent back to an image in roughly [0,1]."""
        return self.g_s(y_hat * self.inv_gain(level))

    def forward(self, x: Tensor, level: Tensor) -> tuple[Tensor, Tensor]:
        """Training pass: returns x_hat and the bits of each image's latent (noise for the rate,
        straight-through rounding for the decoder, as in Minnen & Singh 2020)."""
        y = self.analysis(x, level)
        y_noisy = y + torch.empty_like(y).uniform_(-0.5, 0.5)
        y_hat = y + (torch.round(y) - y).detach()
        bits = torch.zeros(x.shape[0], device=x.device)
        for q in level.unique().tolist():
            rows = level == q
            p = self.densities[q].likelihood(y_noisy[rows])
            bits[rows] = -torch.log2(p).sum(dim=(1, 2, 3))
        return self.synthesis(y_hat, level), bits
