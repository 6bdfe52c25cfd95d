"""The networks: convolutional autoencoders with per-level gains and a learned entropy model.

CAE has a factorized prior (Ballé et al. 2017); HyperCAE adds a mean-scale hyperprior (Minnen et
al. 2018) whose synthesis runs in exact integer arithmetic, so encoder and decoder agree on every
machine; CheckerboardCAE adds a checkerboard context model (He et al. 2021), also exact.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import PRIORS, STRIDES
from .exact import EXACT_LIMIT, WEIGHT_LIMIT, as_stride1_kernel, per_layer, run_exact


@dataclass(frozen=True)
class ModelConfig:
    """Every shape the weights depend on; stored inside each weight file."""

    N: int = 96  # channels of the hidden layers
    M: int = 64  # channels of the latent
    levels: int = 8  # quality levels, each with its own gain vector and entropy model
    stride: int = 4  # total downsampling of g_a: an HxW image gives an (H/4)x(W/4)xM latent
    hyper_N: int = 0  # hidden channels of h_a and h_s; 0 means no hyperprior (a factorized prior)
    hyper_M: int = 0  # channels of the hyper-latent z, at 1/4 of the latent's side
    fraction_bits: int = 10  # h_s weights and activations are multiples of 2**-fraction_bits
    # Hidden channels of h_s where they differ from h_a's (0: hyper_N); an h_s distilled narrower
    # decodes faster (weights/README.md, cae-msh8-photo-v7).
    hyper_s_N: int = 0
    # The entropy model, naming a latent codec (latent_codecs.py); weights written before this field
    # existed imply it from hyper_N.
    prior: str = ""

    def __post_init__(self) -> None:
        if not self.prior:
            object.__setattr__(self, "prior", "mean-scale" if self.hyper_N else "factorized")
        if self.prior not in PRIORS:
            raise ValueError(f"prior must be one of {', '.join(PRIORS)}, not {self.prior!r}")
        if (self.prior == "factorized") != (self.hyper_N == 0):
            raise ValueError(f"a {self.prior} prior needs hyper_N {'> 0' if self.hyper_N == 0 else '= 0'}")

    def to_dict(self) -> dict[str, int | str]:
        d = asdict(self)
        if not self.hyper_s_N:
            del d["hyper_s_N"]  # so bundles without a narrower h_s still load in 0.6 and before
        return d

    @property
    def pad_multiple(self) -> int:
        """Image sides are padded to a multiple of this (the total downsampling down to z or y)."""
        return self.stride * (HYPER_STRIDE if self.hyper_N else 1)


HYPER_STRIDE = 4  # h_a halves the latent's side twice
SCALE_MIN, SCALE_MAX, SCALE_LEVELS = 0.11, 256.0, 64  # the scale table of the Gaussian conditional
# With bf16, g_s's last layer runs in bfloat16 up to this 0-based level (quality 86): its pixels move
# by at most one step, Kodak's mean PSNR by -0.004 to +0.006 dB at qualities 14-86, for a fifth of
# g_s's time. At quality 100 it lost 0.009 dB, so the top level keeps float32 there.
BF16_PIXELS_TO_LEVEL = 6


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
        norm = F.conv2d(x.square(), gamma, beta)  # the same values as x * x, a faster kernel in bf16
        if torch.is_inference_mode_enabled():  # the same values, two fewer full-size tensors
            norm.sqrt_()
            return x.mul_(norm) if self.inverse else x.div_(norm)
        norm = torch.sqrt(norm)
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

    def layers(self) -> list[tuple[Tensor, Tensor, Tensor | None]]:
        """Each layer's (softplus of the matrix, bias, tanh of the factor or None), shaped (C, out, in)."""
        factors = [torch.tanh(f) for f in self.factors] + [None]
        return list(zip((F.softplus(m) for m in self.matrices), self.biases, factors, strict=True))

    def logits_cdf(self, v: Tensor) -> Tensor:
        """Logit of the cumulative density at v, shaped (C, 1, K)."""
        return _logits_cdf(self.layers(), v)

    def likelihood(self, y: Tensor) -> Tensor:
        """Probability mass of the unit bin around each element of y (B, C, H, W)."""
        b, c, h, w = y.shape
        p = _bin_mass(self.layers(), y.permute(1, 0, 2, 3).reshape(c, 1, -1))
        return p.reshape(c, b, h, w).permute(1, 0, 2, 3)

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


# How the codec tiles large images for each stride: (tile side in px, halo around an analysis tile in
# px, halo around a synthesis tile in latent px). Each halo reaches past its transform's receptive
# field (g_a: 10 px at stride 4, 61 px at stride 16; g_s: 3 and 2 latent px) and is a multiple of the
# stride, so tiles stitch to a whole-image pass up to float rounding. At stride 4 the halos were 16 px
# and 8 latent px until 0.6: the tighter ones cut g_s's work on a large image by 9 %. A plane of up to
# 1.5 tiles' area runs whole (tiling.WHOLE), which keeps a 768x512 photo in one piece.
TILING = {4: (512, 12, 4), 16: (1024, 64, 4)}

# Side in px of the segments a large image's file is cut into (docs/format.md, version 2): each is
# entropy-coded alone, so memory stays bounded by a segment, and a multiple of every pad multiple.
SEGMENT = {4: 1024, 16: 2048}


def _transforms(N: int, M: int, stride: int) -> tuple[nn.Sequential, nn.Sequential]:
    """g_a and g_s for a stride: the CIFAR models' 4 (two 5x5/2 stages and a 3x3 to the latent), or
    the photo models' 16 (four 5x5/2 stages, as in Ballé et al. 2018). A stride-16 model's first two
    g_a stages and last two g_s stages have a stride-4 model's shapes, so one can warm-start the other.
    """
    if stride == 4:
        g_a = nn.Sequential(
            _conv(3, N, 5, stride=2), GDN(N), _conv(N, N, 5, stride=2), GDN(N), _conv(N, M, 3)
        )
        g_s = nn.Sequential(
            _conv(M, N, 3), GDN(N, inverse=True), _deconv(N, N, 5), GDN(N, inverse=True), _deconv(N, 3, 5)
        )
        return g_a, g_s
    if stride != 16:
        raise ValueError(f"stride must be one of {STRIDES}, not {stride}")
    g_a = nn.Sequential(
        _conv(3, N, 5, 2), GDN(N), _conv(N, N, 5, 2), GDN(N), _conv(N, N, 5, 2), GDN(N), _conv(N, M, 5, 2)
    )
    g_s = nn.Sequential(
        _deconv(M, N, 5), GDN(N, inverse=True), _deconv(N, N, 5), GDN(N, inverse=True),
        _deconv(N, N, 5), GDN(N, inverse=True), _deconv(N, 3, 5),
    )  # fmt: skip
    return g_a, g_s


class _GainedAutoencoder(nn.Module):
    """g_a and g_s with one gain vector per quality level (Cui et al. 2021) on the latent."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        N, M, L = config.N, config.M, config.levels
        self.g_a, self.g_s = _transforms(N, M, config.stride)
        # Log-gains start spread over a factor of 16 so the levels begin at distinct rates.
        start = torch.linspace(math.log(0.25), math.log(4.0), L)
        self.log_gain = nn.Parameter(start[:, None].repeat(1, M))
        self.log_inv_gain = nn.Parameter(-start[:, None].repeat(1, M))

    def gain(self, level: Tensor) -> Tensor:
        return _at_level(self.log_gain, level).exp()[:, :, None, None]

    def inv_gain(self, level: Tensor) -> Tensor:
        return _at_level(self.log_inv_gain, level).exp()[:, :, None, None]

    def analysis(self, x: Tensor, level: Tensor, bf16: bool = False) -> Tensor:
        """Image in [0,1] to the scaled, unquantized latent for each image's level (0-based; a
        float level lies between two, as a quality between levels does); `bf16`: see _run."""
        return _run(self.g_a, x, bf16, pixels_in=True) * self.gain(level)

    def synthesis(self, y_hat: Tensor, level: Tensor, bf16: bool = False) -> Tensor:
        """Quantized latent back to an image in roughly [0,1]; `bf16`: see _run."""
        pixels = bf16 and bool(level.max() <= BF16_PIXELS_TO_LEVEL)
        return _run(self.g_s, y_hat * self.inv_gain(level), bf16, bf16_out=pixels)


def _run(
    layers: nn.Sequential, x: Tensor, bf16: bool, pixels_in: bool = False, bf16_out: bool = False
) -> Tensor:
    """The layers on x; with `bf16` (inference on CPUs with bfloat16 units) in bfloat16 but for the
    last layer, whose output (a latent, or the pixels) bfloat16's 8 bits would round, unless
    `bf16_out`. Pixels in [0,1] (`pixels_in`) go in as the integers 0-255, which bfloat16 holds
    exactly, against weights divided by 255. On Kodak that keeps PSNR within 0.01 dB of float32's at
    the default quality, where plain autocast lost 0.08 dB."""
    if not bf16:
        return _last_layer(layers[-1], layers[:-1](x))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        if pixels_in:
            first = layers[0]
            x = F.conv2d(x.mul(255).round_(), first.weight / 255, first.bias, first.stride, first.padding)
            layers = layers[1:]
        x = layers[:-1](x)
    phases = _phases_of(layers[-1]) if bf16_out else None
    if phases is not None:  # pixels by phases, in bfloat16
        return _by_phases(phases, x).float()
    return _last_layer(layers[-1], x.float())


def _last_layer(layer: nn.Module, x: Tensor) -> Tensor:
    """The layer on x; in inference, a 5x5/2 transposed convolution to a few channels (g_s's pixels)
    as the same sums in another order: a 3x3 convolution to its four output phases, interleaved by
    pixel_shuffle. oneDNN runs that 2x faster than the transposed one (a 14 MP decode's g_s -20 %)."""
    phases = _phases_of(layer)
    return layer(x) if phases is None else _by_phases(phases, x)


def _by_phases(phases: tuple[Tensor, Tensor], x: Tensor) -> Tensor:
    """_phases_of's kernel and bias on x, in x's dtype, interleaved into twice the size."""
    kernel, bias = phases
    return F.pixel_shuffle(F.conv2d(x, kernel.to(x.dtype), bias.to(x.dtype), padding=1), 2)


def _phases_of(layer: nn.Module) -> tuple[Tensor, Tensor] | None:
    """The layer's phase kernel and bias, where _last_layer runs it by phases (inference only)."""
    if not isinstance(layer, nn.ConvTranspose2d) or layer.out_channels > 4 or torch.is_grad_enabled():
        return None
    return per_layer(layer, ("phases",), lambda: _phases(layer))


def _phases(layer: nn.ConvTranspose2d) -> tuple[Tensor, Tensor] | None:
    """The transposed layer's 3x3 phase kernel in pixel_shuffle's channel-major order, and its bias."""
    kernel = as_stride1_kernel(layer)
    if kernel is None:
        return None
    c = layer.out_channels  # phase-major channels to pixel_shuffle's channel-major order
    kernel = kernel.view(4, c, *kernel.shape[1:]).transpose(0, 1).reshape(4 * c, *kernel.shape[1:])
    return kernel.float(), layer.bias.detach().repeat_interleave(4)


def _at_level(log_gains: Tensor, level: Tensor) -> Tensor:
    """Each image's row of log-gains; a fractional level mixes the two levels around it linearly in
    the log domain (Cui et al. 2021), so the rate moves smoothly between them."""
    if not level.is_floating_point():
        return log_gains[level]
    low = level.floor().long().clamp(0, len(log_gains) - 1)
    high = (low + 1).clamp(max=len(log_gains) - 1)
    t = (level - low).to(log_gains.dtype)[:, None]
    return log_gains[low] * (1 - t) + log_gains[high] * t


def _quantize(v: Tensor, noise: bool) -> Tensor:
    """Additive uniform noise (for the rate in training) or rounding with a straight-through gradient."""
    if noise:
        return v + torch.empty_like(v).uniform_(-0.5, 0.5)
    return v + (torch.round(v) - v).detach()


def _factorized_bits(densities: nn.ModuleList, v: Tensor, level: Tensor) -> Tensor:
    """Bits of each image's tensor under its level's factorized density, every level in one pass:
    the levels' parameters are stacked and gathered per image, so no step waits on the host."""
    per_level = [d.layers() for d in densities]
    layers = [
        tuple(None if part[0] is None else torch.stack(part)[level] for part in zip(*same, strict=True))
        for same in zip(*per_level, strict=True)
    ]  # each part (B, C, out, in): image b's level's parameters
    b, c = v.shape[:2]
    return -torch.log2(_bin_mass(layers, v.reshape(b, c, 1, -1))).sum(dim=(1, 2, 3))


def _logits_cdf(layers: list[tuple[Tensor, Tensor, Tensor | None]], v: Tensor) -> Tensor:
    """The factorized density's cumulative logit at v (..., C, 1, K), for parameters (..., C, out, in)."""
    for matrix, bias, factor in layers:
        v = torch.matmul(matrix, v) + bias
        if factor is not None:
            v = v + factor * torch.tanh(v)
    return v


def _bin_mass(layers: list[tuple[Tensor, Tensor, Tensor | None]], v: Tensor) -> Tensor:
    """P(v - 1/2 < V < v + 1/2) under the factorized density `layers`, at least 1e-9."""
    lower = _logits_cdf(layers, v - 0.5)
    upper = _logits_cdf(layers, v + 0.5)
    # Subtracting in the tail where both sigmoids are near 1 loses precision; flip the sign there.
    sign = -torch.sign(lower + upper).detach()
    return torch.abs(torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower)).clamp_min(1e-9)


class CAE(_GainedAutoencoder):
    """Convolutional autoencoder with a factorized prior and one gain vector per quality level.

    x (B,3,H,W) in [0,1] -> g_a -> y (B,M,H/4,W/4) -> * gain[q] -> Q -> y_hat (integers)
        -> entropy model p_q(y_hat) gives the rate
    y_hat -> / gain[q] -> g_s -> x_hat (B,3,H,W)

    Each level has its own factorized density because the latent's spread differs per level.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.densities = nn.ModuleList(FactorizedDensity(config.M) for _ in range(config.levels))

    @property
    def factorized(self) -> nn.ModuleList:
        """Per level, the factorized density of the tensor coded first (here y)."""
        return self.densities

    def forward(
        self, x: Tensor, level: Tensor, noise: bool = True, bf16: bool = False
    ) -> tuple[Tensor, Tensor]:
        """x_hat and the bits of each image's latent. With noise (training), the rate sees noise and
        the decoder straight-through rounding (Minnen & Singh 2020); without, both see rounding.
        `bf16`: the transforms in bfloat16 (_run), the latent, densities and rate in float32."""
        y = self.analysis(x, level, bf16)
        y_hat = _quantize(y, noise=False)
        bits = _factorized_bits(self.densities, _quantize(y, noise) if noise else y_hat, level)
        return self.synthesis(y_hat, level, bf16), bits


def gaussian_likelihood(v: Tensor, sigma: Tensor) -> Tensor:
    """P(v - 1/2 < V < v + 1/2) for V ~ N(0, sigma), computed on the lower tail for precision."""
    v = v.abs()
    upper = torch.special.ndtr((0.5 - v) / sigma)
    lower = torch.special.ndtr((-0.5 - v) / sigma)
    return (upper - lower).clamp_min(1e-9)


class HyperCAE(_GainedAutoencoder):
    """The gained autoencoder with a mean-scale hyperprior (Minnen et al. 2018).

    x -> g_a -> * gain[q] -> y (B,M,H/4,W/4) -> h_a -> z (B,Z,H/16,W/16) -> Q -> z_hat
        -> factorized p_q(z_hat)
    z_hat -> h_s -> (mu, log sigma), each (B,M,H/4,W/4)
    y -> Q around mu -> y_hat -> Gaussian N(mu, sigma) convolved with U(-1/2, 1/2) gives its rate
    y_hat -> / gain[q] -> g_s -> x_hat

    h_a and h_s are shared by all levels; z has a factorized density per level. The codec runs h_s
    with `exact_hyper_synthesis`, in integer arithmetic, because the decoder must reproduce mu and
    the scale index bit for bit before it can parse y.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        M, Nh, Z = config.M, config.hyper_N, config.hyper_M
        self.h_a = nn.Sequential(
            _conv(M, Nh, 3), nn.ReLU(), _conv(Nh, Nh, 5, stride=2), nn.ReLU(), _conv(Nh, Z, 5, stride=2)
        )
        Ns = config.hyper_s_N or Nh
        self.h_s = nn.Sequential(
            _deconv(Z, Ns, 5), nn.ReLU(), _deconv(Ns, Ns, 5), nn.ReLU(), _conv(Ns, 2 * M, 3)
        )
        self.z_densities = nn.ModuleList(FactorizedDensity(Z) for _ in range(config.levels))

    @property
    def factorized(self) -> nn.ModuleList:
        """Per level, the factorized density of the tensor coded first (here z)."""
        return self.z_densities

    def hyper_analysis(self, y: Tensor, bf16: bool = False) -> Tensor:
        """y to the unquantized hyper-latent z; `bf16`: see _run."""
        return _run(self.h_a, y, bf16)

    def hyper_synthesis(self, z_hat: Tensor, bf16: bool = False) -> tuple[Tensor, Tensor]:
        """z_hat to (mu, log sigma) in float, as in training; `bf16`: see _run."""
        mu, log_sigma = _run(self.h_s, z_hat, bf16).chunk(2, dim=1)
        return mu, log_sigma

    @property
    def exact_parts(self) -> tuple[nn.Module, ...]:
        """The layers that pick the entropy coder's tables, so must compute exactly (h_s)."""
        return (self.h_s,)

    @torch.no_grad()
    def exact_hyper_synthesis(self, z_hat: Tensor) -> Tensor:
        """h_s in float64 on values that are all multiples of 2**-fraction_bits, so every product and
        sum is exact and the result does not depend on the machine, the library or the thread count.

        Needs weights rounded by `round_exact_parts`. Returns float64 (B, 2M, h, w): mu in channels
        0..M-1, log sigma in M..2M-1 (maybe channels-last).
        """
        return run_exact(self.h_s, z_hat, self.config.fraction_bits)

    @torch.no_grad()
    def round_exact_parts(self) -> None:
        """Round the exact layers' weights and biases to multiples of 2**-fraction_bits (at export)."""
        unit = 2.0**self.config.fraction_bits
        for part in self.exact_parts:
            for p in part.parameters():
                p.copy_(torch.round(p.clamp(-WEIGHT_LIMIT, WEIGHT_LIMIT) * unit) / unit)
            for layer in part.modules():
                if isinstance(layer, CheckerboardConv):
                    layer.weight.mul_(layer.mask)

    def y_parameters(self, y: Tensor, z_hat: Tensor, bf16: bool = False) -> tuple[Tensor, Tensor]:
        """(mu, log sigma) of every value of y, in float, as in training; here from z alone."""
        return self.hyper_synthesis(z_hat, bf16)

    def forward(
        self, x: Tensor, level: Tensor, noise: bool = True, bf16: bool = False
    ) -> tuple[Tensor, Tensor]:
        """x_hat and the bits of each image's y and z, as in CAE.forward."""
        y = self.analysis(x, level, bf16)
        z = self.hyper_analysis(y, bf16)
        z_hat = _quantize(z, noise=False)
        bits = _factorized_bits(self.z_densities, _quantize(z, noise) if noise else z_hat, level)
        mu, log_sigma = self.y_parameters(y, z_hat, bf16)
        sigma = log_sigma.exp().clamp(SCALE_MIN, SCALE_MAX)
        y_hat = _quantize(y - mu, noise=False) + mu
        residual = _quantize(y - mu, noise) if noise else y_hat - mu
        bits = bits - torch.log2(gaussian_likelihood(residual, sigma)).sum(dim=(1, 2, 3))
        return self.synthesis(y_hat, level, bf16), bits


class CheckerboardConv(nn.Conv2d):
    """A 5x5 convolution that sees only the neighbours of the other colour of a checkerboard."""

    def __init__(self, cin: int, cout: int, k: int = 5) -> None:
        super().__init__(cin, cout, k, padding=k // 2)
        offsets = torch.arange(k)[:, None] + torch.arange(k)[None, :]
        self.register_buffer(
            "mask", (offsets % 2 == 1).float().expand(cout, cin, k, k).clone(), persistent=False
        )

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight * self.mask, self.bias, padding=self.padding)


def anchors(height: int, width: int) -> Tensor:
    """The checkerboard's anchor positions (coded first): where row + column is even. (1,1,h,w) bool."""
    rows, cols = torch.arange(height)[:, None], torch.arange(width)[None, :]
    return ((rows + cols) % 2 == 0)[None, None]


class CheckerboardCAE(HyperCAE):
    """The mean-scale hyperprior model with a checkerboard context model (He et al. 2021).

    z_hat -> h_s -> hyper (B,2M,h,w)
    anchors (row + column even):  (mu, log sigma) = hyper + g_ep([hyper, 0])
    y_hat at anchors -> g_cm (5x5, sees anchors only) -> ctx (B,2M,h,w)
    the others:                   (mu, log sigma) = hyper + g_ep([hyper, ctx])

    Both halves of y decode in parallel, each in one pass. g_ep and g_cm run exactly like h_s. g_ep's
    last layer starts at zero, so a new model begins as the hyperprior model it warm-starts from.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        M = config.M
        self.g_cm = CheckerboardConv(M, 2 * M)
        self.g_ep = nn.Sequential(
            _conv(4 * M, 3 * M, 1), nn.ReLU(), _conv(3 * M, 3 * M, 1), nn.ReLU(), _conv(3 * M, 2 * M, 1)
        )
        nn.init.zeros_(self.g_ep[-1].weight)
        nn.init.zeros_(self.g_ep[-1].bias)

    @property
    def exact_parts(self) -> tuple[nn.Module, ...]:
        return (self.h_s, self.g_cm, self.g_ep)

    def entropy_parameters(self, hyper: Tensor, ctx: Tensor) -> Tensor:
        return hyper + self.g_ep(torch.cat([hyper, ctx], dim=1))

    @torch.no_grad()
    def exact_entropy_parameters(self, hyper: Tensor, y_hat: Tensor | None) -> Tensor:
        """(mu, log sigma) stacked, float64 and exact, where they are used: at the anchors for `y_hat`
        None, else at the others from the anchors' y_hat. Zero elsewhere. `hyper` is (1,2M,h,w)."""
        bits = self.config.fraction_bits
        anchor = anchors(*hyper.shape[2:])[0, 0]
        where = anchor if y_hat is None else ~anchor
        columns = hyper[0][:, where]
        ctx = torch.zeros_like(columns) if y_hat is None else self._exact_context(y_hat, where)
        # g_ep is pointwise, so it runs on the (4M, n) columns as on a 1-pixel-wide image.
        params = run_exact(self.g_ep, torch.cat([columns, ctx])[None, :, :, None], bits)[0, :, :, 0]
        out = torch.zeros_like(hyper[0])
        out[:, where] = columns + params
        return out[None]

    def _exact_context(self, y_hat: Tensor, where: Tensor) -> Tensor:
        """g_cm at the positions `where`, tap by tap: only its 12 unmasked taps, each an exact product."""
        k = self.g_cm.kernel_size[0]
        unit = 2.0**self.config.fraction_bits
        padded = F.pad(y_hat[0].double().clamp(-EXACT_LIMIT, EXACT_LIMIT), (k // 2,) * 4)
        h, w = y_hat.shape[2:]
        ctx = self.g_cm.bias.double()[:, None].expand(-1, int(where.sum())).clone()
        for dy, dx in zip(*torch.nonzero(self.g_cm.mask[0, 0], as_tuple=True), strict=True):
            ctx += self.g_cm.weight[:, :, dy, dx].double() @ padded[:, dy : dy + h, dx : dx + w][:, where]
        return torch.floor(ctx * unit).div(unit).clamp(-EXACT_LIMIT, EXACT_LIMIT)

    def y_parameters(self, y: Tensor, z_hat: Tensor, bf16: bool = False) -> tuple[Tensor, Tensor]:
        """(mu, log sigma): the anchors' from z alone, the others' with the rounded anchors as context
        (g_cm and g_ep in float32 always)."""
        hyper = _run(self.h_s, z_hat, bf16)
        anchor = anchors(*y.shape[2:]).to(y.device)
        first = self.entropy_parameters(hyper, torch.zeros_like(hyper))
        mu, _ = first.chunk(2, dim=1)
        y_anchor = (_quantize(y - mu, noise=False) + mu) * anchor
        second = self.entropy_parameters(hyper, self.g_cm(y_anchor))
        mu, log_sigma = torch.where(anchor, first, second).chunk(2, dim=1)
        return mu, log_sigma


def build(config: ModelConfig) -> CAE | HyperCAE:
    """The network a config describes."""
    return {"factorized": CAE, "mean-scale": HyperCAE, "checkerboard": CheckerboardCAE}[config.prior](config)


def scale_table() -> np.ndarray:
    """The Gaussian conditional's scales, log-spaced (as in CompressAI), float64."""
    return np.exp(np.linspace(math.log(SCALE_MIN), math.log(SCALE_MAX), SCALE_LEVELS))


def _kind(layer: nn.Module) -> str:
    """A layer as the papers draw it: conv 5x5/2, deconv 5x5 x2, GDN, IGDN, ReLU."""
    if isinstance(layer, nn.ConvTranspose2d):
        return f"deconv {layer.kernel_size[0]}x{layer.kernel_size[1]} x{layer.stride[0]}"
    if isinstance(layer, nn.Conv2d):
        stride = f"/{layer.stride[0]}" if layer.stride[0] > 1 else ""
        masked = "masked " if isinstance(layer, CheckerboardConv) else ""
        return f"{masked}conv {layer.kernel_size[0]}x{layer.kernel_size[1]}{stride}"
    if isinstance(layer, GDN):
        return "IGDN" if layer.inverse else "GDN"
    return type(layer).__name__


@torch.no_grad()
def summary(model: CAE | HyperCAE, height: int, width: int) -> list[tuple[str, str, tuple[int, ...], int]]:
    """(name, kind, output shape C x H x W, parameters) of every layer, in data-flow order, for an
    HxW image (sides a multiple of config.pad_multiple)."""
    rows: list[tuple[str, str, tuple[int, ...], int]] = []

    def run(name: str, layers, x: Tensor) -> Tensor:
        for i, layer in enumerate(layers):
            x = layer(x)
            rows.append(
                (f"{name}.{i}", _kind(layer), tuple(x.shape[1:]), sum(p.numel() for p in layer.parameters()))
            )
        return x

    y = run("g_a", model.g_a, torch.zeros(1, 3, height, width))
    if isinstance(model, HyperCAE):
        hyper = run("h_s", model.h_s, run("h_a", model.h_a, y))
        if isinstance(model, CheckerboardCAE):
            run("g_ep", model.g_ep, torch.cat([hyper, run("g_cm", [model.g_cm], y)], dim=1))
    run("g_s", model.g_s, y)
    return rows
