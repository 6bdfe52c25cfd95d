"""Exact arithmetic for the layers that choose the entropy coder's tables (h_s, and the checkerboard's
g_cm and g_ep): their weights and activations are multiples of 2**-fraction_bits, every output is
floored back onto that grid, and every sum is computed without rounding, so encoder and decoder
agree on every machine, library and thread count.

Three ways give the same answer: float64 convolutions, exact for bounded fan-in; float32 matrix
products of integers split so that no partial sum can reach 2**24 (checked from the data before each
layer; where the check fails, the float64 way runs); and, on CPUs with int8 matrix units (AMX, VNNI),
int8 products of the integers' 7-bit digits summed in int32, which cannot overflow below
MAX_INT8_FAN_IN. The CPU picks the way; the integers out are the same.
"""

from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import cpu

EXACT_LIMIT = float(1 << 15)  # |activation| bound that keeps every sum exact in float64
WEIGHT_LIMIT = 8.0  # |weight| bound, applied when the weights are rounded onto the grid
_F32_EXACT = float(1 << 24)  # every integer below this is a float32
# Batches of planes smaller than this in all run in float64: there the float32 way's set-up costs
# more than it saves (a 32x32 image's z is 2x2; alone, it made small images decode 2x slower). A batch
# of 64 such images runs h_s's last two layers in float32, about 15 % faster than in float64.
_FLOAT32_MIN_AREA = 32 * 32
DIGIT_BITS = 7  # int8 digits: every digit is in -128..127
# Products summed per output below which int32 sums of digit products (each at most 2**14 in
# magnitude) cannot overflow; EXACT_FAN_IN (latent_codecs.py) is far below it.
MAX_INT8_FAN_IN = 1 << 17


def run_exact(layers, x: Tensor, fraction_bits: int) -> Tensor:
    """(Transposed) convolutions and ReLUs on multiples of 2**-fraction_bits, flooring each output back
    onto that grid. Returns float64 on the grid, the same on every machine and thread count."""
    unit = 2.0**fraction_bits
    limit = EXACT_LIMIT * unit
    ints = x.double().clamp(-EXACT_LIMIT, EXACT_LIMIT).mul(unit)  # the grid's integers
    for n, layer in enumerate(layers):
        if isinstance(layer, nn.ReLU):
            ints.clamp_(0, int(limit))
            continue
        # The int8 way works channels-last, and mostly in int32; between its layers the permutes are
        # views, not copies. The last layer's output comes channel-major, as callers read it.
        last = n == len(layers) - 1
        out = _int8_layer(layer, ints.permute(0, 2, 3, 1), unit, last) if use_int8() else None
        if out is not None:
            ints = out.clamp_(-int(limit), int(limit)).permute(0, 3, 1, 2)
            continue
        ints = ints.double()
        scaled = _float32_layer(layer, ints, unit)
        if scaled is None:
            scaled = _float64_layer(layer, ints / unit).mul_(unit)
        ints = scaled.floor_().clamp_(-limit, limit)
    return ints.double().div_(unit)


def use_int8() -> bool:
    """Whether run_exact multiplies int8 digits (where the CPU has int8 units; tests switch it)."""
    return _INT8[0]


_INT8 = [cpu.fast_int8()]


def _float64_layer(layer: nn.Conv2d | nn.ConvTranspose2d, x: Tensor) -> Tensor:
    """The layer in float64: exact because products and sums stay within 53 bits."""
    weight, bias = _weight(layer).double(), layer.bias.double()
    if isinstance(layer, nn.ConvTranspose2d):
        return F.conv_transpose2d(x, weight, bias, layer.stride, layer.padding, layer.output_padding)
    return F.conv2d(x, weight, bias, layer.stride, layer.padding)


def _weight(layer: nn.Module) -> Tensor:
    mask = getattr(layer, "mask", None)  # a checkerboard convolution's fixed zeros
    return layer.weight if mask is None else layer.weight * mask


def _float32_layer(layer: nn.Module, ints: Tensor, unit: float) -> Tensor | None:
    """The layer's output times `unit` (float64, not yet floored) from the grid integers `ints`, by
    float32 products of integers; None where the layer's shape is not covered or a partial sum could
    reach 2**24."""
    if ints.device.type != "cpu" or torch.get_float32_matmul_precision() != "highest":
        return None  # elsewhere a float32 product may be rounded to fewer bits
    if not ints.numel() or ints.shape[0] * ints.shape[2] * ints.shape[3] < _FLOAT32_MIN_AREA:
        return None
    weight = _grid_kernel(layer, unit)
    if weight is None:
        return None
    low, high = ints.amin(dim=(0, 2, 3)), ints.amax(dim=(0, 2, 3))
    shift = split_shift(weight, low, high)
    if shift is None:
        return None
    b, _, h, w = ints.shape
    sums = _conv_by_taps(ints.permute(0, 2, 3, 1), weight.float(), shift)  # (B, h+2r, w+2r, C'), f64
    transposed = isinstance(layer, nn.ConvTranspose2d)
    bias = layer.bias.double().repeat(4 if transposed else 1) * unit
    out = sums.div_(unit).add_(bias)[:, :h, :w]
    if transposed:  # four phases, phase-major, interleave into twice the size
        out = out.reshape(b, h, w, 2, 2, -1).permute(0, 1, 3, 2, 4, 5).reshape(b, 2 * h, 2 * w, -1)
    return out.permute(0, 3, 1, 2)


def _grid_kernel(layer: nn.Module, unit: float) -> Tensor | None:
    """The layer's stride-1 kernel in units of the grid (integers, float64); None where the shape is
    not covered or a weight is off the grid (only the float64 way reproduces the old results then)."""
    kernel = as_stride1_kernel(layer)
    if kernel is None:
        return None
    weight = kernel * unit
    return weight if torch.equal(weight, torch.round(weight)) else None


def as_stride1_kernel(layer: nn.Module) -> Tensor | None:
    """The layer as a stride-1 'same' convolution's kernel (C_out', C_in, k, k), float64: a transposed
    5x5/2 one becomes four 3x3 phases (C_out' = 4 C_out, phase-major), whose outputs interleave."""
    weight = _weight(layer).double()
    k = weight.shape[-1]
    if isinstance(layer, nn.ConvTranspose2d):
        if (k, layer.stride, layer.padding, layer.output_padding) != (5, (2, 2), (2, 2), (1, 1)):
            return None
        # Output row 2m + a takes input row m + d through tap a + 2 - 2d, for d in -1..1.
        phases = []
        for a in range(2):
            for b in range(2):
                phase = weight.new_zeros(weight.shape[1], weight.shape[0], 3, 3)
                for dy in (-1, 0, 1):
                    for dx in (-1, 0, 1):
                        ty, tx = a + 2 - 2 * dy, b + 2 - 2 * dx
                        if 0 <= ty < k and 0 <= tx < k:
                            phase[:, :, dy + 1, dx + 1] = weight[:, :, ty, tx].T
                phases.append(phase)
        return torch.cat(phases)
    if (
        isinstance(layer, nn.Conv2d)
        and layer.stride == (1, 1)
        and layer.padding == (k // 2, k // 2)
        and k % 2
    ):
        return weight
    return None


def split_shift(weight: Tensor, low: Tensor, high: Tensor) -> int | None:
    """The s for which x = upper * 2**s + lower, 0 <= lower < 2**s, keeps every partial sum of both
    halves below 2**24 in magnitude, for integers x between each input channel's `low` and `high`;
    0 when x needs no split; None when no s does (or x does not fit a float32)."""
    per_input = weight.abs().sum(dim=(2, 3))  # (C_out', C_in): sum of |w| over the taps
    peak = torch.maximum(high, -low)
    if peak.max() >= _F32_EXACT:
        return None
    if (per_input @ peak).max() < _F32_EXACT:
        return 0
    worst_row = per_input.sum(dim=1).max().item()
    shift = 0
    while (2.0 ** (shift + 1) - 1) * worst_row < _F32_EXACT:
        shift += 1
    if shift == 0:
        return None
    # floor(x / 2**s) is monotonic, so each channel's extremes bound the upper half.
    upper_peak = torch.maximum(torch.floor(high / 2.0**shift), -torch.floor(low / 2.0**shift))
    return shift if (per_input @ upper_peak).max() < _F32_EXACT else None


def _conv_by_taps(x: Tensor, weight: Tensor, shift: int) -> Tensor:
    """A stride-1 'same' convolution without bias of channels-last integers x (B, H, W, C), as one
    float32 matrix product per tap; with `shift`, of x's upper and lower halves, recombined in
    float64. Returns (B, H + 2r, W + 2r, C_out) float64, valid in [:, :H, :W].

    Each image is zero-padded into one flat array, so each tap reads one contiguous block; outputs in
    the padding and between images are computed and dropped.
    """
    b, h, w, c = x.shape
    r = weight.shape[-1] // 2
    ph, pw = h + 2 * r, w + 2 * r
    parts = 2 if shift else 1
    rows = parts * b * ph * pw
    flat = x.new_zeros(rows + 2 * r * pw + 2 * r, c, dtype=torch.float32)  # tail: read by the last taps
    interior = flat[:rows].view(parts, b, ph, pw, c)[:, :, r : r + h, r : r + w]
    if shift:
        interior[0] = torch.floor(x / 2.0**shift)
        interior[1] = x - interior[0].double() * 2.0**shift
    else:
        interior[0] = x
    taps = weight.permute(2, 3, 1, 0)  # (k, k, C_in, C_out)
    out = flat[:rows] @ taps[0, 0]
    for dy in range(2 * r + 1):
        for dx in range(2 * r + 1):
            if dy or dx:
                offset = dy * pw + dx
                out.addmm_(flat[offset : offset + rows], taps[dy, dx])
    out = out.view(parts, b, ph, pw, -1)
    return out[1].double().add_(out[0], alpha=2.0**shift) if shift else out[0].double()


def _int8_layer(layer: nn.Module, x: Tensor, unit: float, channel_major: bool = False) -> Tensor | None:
    """The layer's output on the grid, floored, from grid integers `x`, both (B, H, W, C) (int32 or
    float64 in, either out), by int8 products of their digits summed in int32; None where not
    covered. `x` is channels-last in memory, and so is the output unless `channel_major` (a
    convolution's, not a transposed one's, output as (C, B, H, W) in memory)."""
    b, h, w, _ = x.shape
    if x.device.type != "cpu" or b * h * w < _FLOAT32_MIN_AREA:
        return None
    prepared = _int8_weights(layer, unit)
    if prepared is None:
        return None
    k, w_digits, bias = prepared
    x_digits = _digits(x)
    if len(x_digits) * w_digits[0].shape[0] >= MAX_INT8_FAN_IN:
        return None
    transposed = isinstance(layer, nn.ConvTranspose2d)
    if channel_major and not transposed:
        return _int_conv(x_digits, w_digits, k, bias, unit, channel_major=True).permute(1, 2, 3, 0)
    out = _int_conv(x_digits, w_digits, k, bias, unit)
    if transposed:  # four phases, phase-major, interleave into twice the size
        out = out.reshape(b, h, w, 2, 2, -1).permute(0, 1, 3, 2, 4, 5).reshape(b, 2 * h, 2 * w, -1)
    return out


def _int8_weights(layer: nn.Module, unit: float) -> tuple[int, list[Tensor], Tensor] | None:
    """The layer's kernel side, its weights as int8 digits (taps then channels, by output channel)
    and its bias times `unit`; made once per layer and weights (every tile of every segment runs the
    same h_s), None where the int8 way does not cover the layer."""

    def make() -> tuple[int, list[Tensor], Tensor] | None:
        weight = _grid_kernel(layer, unit)
        if weight is None:
            return None
        fan_in = weight[0].numel()
        w_digits = _digits(weight.permute(2, 3, 1, 0).reshape(fan_in, -1))
        bias = layer.bias.detach().double().repeat(4 if isinstance(layer, nn.ConvTranspose2d) else 1) * unit
        return weight.shape[-1], w_digits, bias

    return per_layer(layer, ("int8", unit), make)


def per_layer(layer: nn.Module, key: tuple, make):
    """What `make` derives from a layer's weights, made once per layer, key and weights: every tile
    of an image runs the same layers, and the weights are compared, not trusted to stay put."""
    cached = _PER_LAYER.setdefault(layer, {}).get(key)
    if cached is not None and torch.equal(cached[0], layer.weight) and torch.equal(cached[1], layer.bias):
        return cached[2]
    value = make()
    _PER_LAYER[layer][key] = (layer.weight.detach().clone(), layer.bias.detach().clone(), value)
    return value


_PER_LAYER: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _digits(x: Tensor) -> list[Tensor]:
    """Integers x as int8 digits, least significant first: x = sum d_i 128**i, the last one signed."""
    x = x.to(torch.int32)  # every grid integer fits (EXACT_LIMIT * unit, WEIGHT_LIMIT * unit)
    low, high = x.aminmax() if x.numel() else (torch.tensor(0), torch.tensor(0))
    digits = []
    while low < -128 or high > 127:
        digits.append(torch.bitwise_and(x, (1 << DIGIT_BITS) - 1).to(torch.int8))
        x = x.bitwise_right_shift(DIGIT_BITS)
        low, high = low >> DIGIT_BITS, high >> DIGIT_BITS  # floor division is monotonic
    digits.append(x.to(torch.int8))
    return digits


def _int_conv(
    x_digits: list[Tensor],
    w_digits: list[Tensor],
    k: int,
    bias: Tensor,
    unit: float,
    channel_major: bool = False,
) -> Tensor:
    """A stride-1 'same' k x k convolution of channels-last integers given as int8 digits (each
    (B, H, W, C)) by weights given as int8 digits (each (k*k*C, C_out), taps then channels), plus
    `bias`, with the products divided by `unit`, floored. Returns (B, H, W, C_out) int32, or float64
    where an int32 could overflow; with `channel_major`, (C_out, B, H, W).

    One int8 matrix product does it all: each row holds every digit's window (digit-major: im2col
    through a strided view of the zero-padded images laid end to end), and the weights' column block
    s holds the weight digits j facing activation digits i with i + j = s, so each block sums the
    products of one power of 128 in int32. The blocks are carried into the floor exactly in int32
    (_int32_floor), or in float64 where an int32 could overflow. Channel-major, the same product
    is taken transposed, so no copy has to transpose its output afterwards.
    """
    b, h, w, c = x_digits[0].shape
    r = k // 2
    ph, pw = h + 2 * r, w + 2 * r
    rows = b * ph * pw
    na, nw, taps = len(x_digits), len(w_digits), k * k * c
    length = rows + 2 * r * pw + 2 * r  # tail: read by the last rows' windows
    flat = x_digits[0].new_zeros(na, length, c)
    interior = flat[:, :rows].view(na, b, ph, pw, c)[:, :, r : r + h, r : r + w]
    for i, d in enumerate(x_digits):
        interior[i] = d
    columns = flat.new_empty(rows, na * taps)
    for i, window in enumerate(columns.view(rows, na, k, k, c).unbind(1)):
        window.copy_(flat[i].as_strided((rows, k, k, c), (c, pw * c, c, 1)))
    cout = w_digits[0].shape[1]
    blocks = na + nw - 1
    weights = w_digits[0].new_zeros(na * taps, blocks * cout)
    for i in range(na):
        for j in range(nw):
            weights[i * taps : (i + 1) * taps, (i + j) * cout : (i + j + 1) * cout] = w_digits[j]
    if channel_major:
        products = torch._int_mm(weights.t().contiguous(), columns.t())  # (blocks x C_out, rows)
        powers = [products[s * cout : (s + 1) * cout] for s in range(blocks)]
        bias = bias[:, None]
    else:
        products = torch._int_mm(columns, weights)  # (rows, blocks x C_out) int32
        powers = [products[:, s * cout : (s + 1) * cout] for s in range(blocks)]
    bound = na * taps * (1 << 2 * DIGIT_BITS)  # of any power's |sum|
    if _int32_floor_fits(blocks, bound, unit, bias):
        out = _int32_floor(powers, bias, unit)
    else:
        out = powers[0].to(torch.float64)
        term = torch.empty_like(out)
        for s in range(1, blocks):  # exact: each an int32 times a power of two, each sum below 2**53
            out.add_(term.copy_(powers[s]), alpha=2.0 ** (DIGIT_BITS * s))
        out = out.div_(unit).add_(bias).floor_()
    if channel_major:
        return out.view(cout, b, ph, pw)[:, :, :h, :w]
    return out.view(b, ph, pw, cout)[:, :h, :w]


def _floor_steps(blocks: int, unit: float) -> list[tuple[int, int]]:
    """For each power s >= 1 of 128, (bits to drop from the sum so far, bits to shift the power left
    by) so that carrying from the lowest power upward gives floor(total / unit), unit = 2**F: a sum's
    low 7 bits never reach the floor while 7 or more bits remain to be dropped."""
    drop, steps, shift = int(unit).bit_length() - 1, [], 0
    for _ in range(1, blocks):
        if drop >= DIGIT_BITS:
            steps.append((DIGIT_BITS, 0))
            drop -= DIGIT_BITS
        else:
            shift += DIGIT_BITS - drop
            steps.append((drop, shift))
            drop = 0
    steps.append((drop, 0))  # what is left to drop at the end
    return steps


def _int32_floor_fits(blocks: int, bound: int, unit: float, bias: Tensor) -> bool:
    """Whether _int32_floor's every intermediate stays below 2**31 for sums of powers below `bound`."""
    if unit != 2.0 ** (int(unit).bit_length() - 1):
        return False
    peak = bound + float(bias.abs().max()) * unit
    for drop, shift in _floor_steps(blocks, unit)[:-1]:
        peak = peak / 2**drop + bound * 2**shift
        if peak >= 2**31:
            return False
    return peak < 2**31


def _int32_floor(powers: list[Tensor], bias: Tensor, unit: float) -> Tensor:
    """floor((sum_s powers[s] 128**s) / unit + bias) in int32, carrying from the lowest power up;
    _int32_floor_fits says where no intermediate can overflow."""
    acc = powers[0] + (bias * unit).to(torch.int32)  # bias * unit is an integer below 2**23
    steps = _floor_steps(len(powers), unit)
    for power, (drop, shift) in zip(powers[1:], steps, strict=False):
        acc = acc.bitwise_right_shift_(drop) if drop else acc
        acc = acc.add_(power, alpha=1 << shift) if shift else acc.add_(power)
    return acc.bitwise_right_shift_(steps[-1][0]) if steps[-1][0] else acc
