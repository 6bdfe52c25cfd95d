"""The exact layers' float32 way must give the float64 way's answer, bit for bit, or step aside."""

import pytest
import torch
from torch import nn

from cae_codec import exact

UNIT = 2.0**10


def _on_grid(layer: nn.Module, spread: float, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in layer.parameters():
            p.uniform_(-spread, spread)
            p.copy_(torch.round(p * UNIT) / UNIT)
    return layer


def _grid_input(shape: tuple[int, ...], peak: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.floor((torch.rand(shape, generator=g, dtype=torch.float64) * 2 - 1) * peak * UNIT)


def _float64_answer(layer: nn.Module, ints: torch.Tensor) -> torch.Tensor:
    return torch.floor(exact._float64_layer(layer, ints / UNIT) * UNIT)


LAYERS = {
    "conv 3x3": lambda: nn.Conv2d(24, 16, 3, padding=1),
    "deconv 5x5/2": lambda: nn.ConvTranspose2d(24, 16, 5, stride=2, padding=2, output_padding=1),
    "conv 1x1": lambda: nn.Conv2d(24, 16, 1),
}


@pytest.mark.parametrize("name", LAYERS)
@pytest.mark.parametrize("seed", [0, 1])
def test_float32_way_splits_and_equals_float64(name, seed):
    # Weights and inputs large enough that one float32 product could round, so the split is needed.
    layer = _on_grid(LAYERS[name](), spread=0.5, seed=seed)
    ints = _grid_input((2, 24, 33, 37), peak=60.0, seed=seed)
    weight = exact.as_stride1_kernel(layer) * UNIT
    assert exact.split_shift(weight, ints.amin(dim=(0, 2, 3)), ints.amax(dim=(0, 2, 3))) > 0
    fast = exact._float32_layer(layer, ints, UNIT)
    assert fast is not None
    assert torch.equal(torch.floor(fast), _float64_answer(layer, ints))


def test_float32_way_steps_aside_when_a_sum_could_round():
    layer = _on_grid(LAYERS["conv 3x3"](), spread=7.9, seed=0)
    ints = _grid_input((1, 24, 32, 32), peak=30000.0, seed=0)
    assert exact._float32_layer(layer, ints, UNIT) is None
    # ... and run_exact still answers, by the float64 way.
    out = exact.run_exact([layer], ints / UNIT, 10)
    assert torch.equal(out * UNIT, _float64_answer(layer, ints).clamp(-(2.0**25), 2.0**25))


def test_float32_way_refuses_weights_off_the_grid():
    layer = _on_grid(LAYERS["conv 3x3"](), spread=0.5, seed=0)
    with torch.no_grad():
        layer.weight[0, 0, 0, 0] += 0.25 / UNIT
    assert exact._float32_layer(layer, _grid_input((1, 24, 32, 32), 2.0, 0), UNIT) is None


def test_split_shift_keeps_both_halves_below_two_to_the_24():
    weight = torch.full((4, 3, 3, 3), 1000.0)  # sum of |w| over one output's taps: 27,000
    low, high = torch.full((3,), -5000.0), torch.full((3,), 90000.0)
    shift = exact.split_shift(weight, low, high)
    assert shift is not None and shift > 0
    assert (2**shift - 1) * 27000 < 2**24 and (90000 // 2**shift) * 27000 < 2**24
    assert exact.split_shift(weight, low, torch.full((3,), 2.0**24)) is None  # not a float32


def test_transposed_kernel_phases_match_the_layer():
    layer = _on_grid(LAYERS["deconv 5x5/2"](), spread=0.5, seed=3)
    ints = _grid_input((1, 24, 32, 40), peak=1.0, seed=3)
    assert exact._float32_layer(layer, ints, UNIT).shape == (1, 16, 64, 80)
    assert exact.as_stride1_kernel(nn.ConvTranspose2d(4, 4, 3, stride=2)) is None  # not covered


def test_small_batches_of_small_planes_take_the_float64_way():
    # There the float32 way's set-up costs more than it saves; a batch of small planes pays it once.
    layer = _on_grid(LAYERS["conv 3x3"](), spread=0.5, seed=0)
    assert exact._float32_layer(layer, _grid_input((2, 24, 16, 16), 2.0, 0), UNIT) is None
    assert exact._float32_layer(layer, _grid_input((8, 24, 16, 16), 2.0, 0), UNIT) is not None
    assert exact._float32_layer(layer, _grid_input((1, 24, 32, 32), 2.0, 0), UNIT) is not None


@pytest.mark.parametrize("name", LAYERS)
@pytest.mark.parametrize("peak", [1.0, 60.0, 30000.0])
@pytest.mark.parametrize("channel_major", [False, True])
def test_int8_way_equals_float64(name, peak, channel_major):
    # Any magnitude the grid allows: the digits grow with it (past 2 digits each, the powers are
    # carried in float64, not int32), the answer may not change; nor may the output's layout.
    layer = _on_grid(LAYERS[name](), spread=7.9, seed=int(peak))
    ints = _grid_input((2, 24, 33, 37), peak=peak, seed=1).clamp(-(2.0**25), 2.0**25)
    out = exact._int8_layer(layer, ints.permute(0, 2, 3, 1), UNIT, channel_major)
    assert out is not None
    assert torch.equal(out.permute(0, 3, 1, 2).double(), _float64_answer(layer, ints))


def test_digits_rebuild_their_integers():
    x = torch.tensor([0, 1, -1, 127, 128, -128, -129, 2**25, -(2**25), 123456789 % 2**25])
    digits = exact._digits(x)
    assert all(d.dtype == torch.int8 for d in digits)
    assert torch.equal(sum(d.long() << (7 * i) for i, d in enumerate(digits)), x)


@pytest.mark.parametrize("name", ["cae-msh8-photo-v5", "cae-msh8-photo-v7"])
def test_every_way_gives_the_shipped_hyper_synthesis_the_same_integers(monkeypatch, name):
    # The exact h_s of a shipped photo model on a real hyper-latent (z of a Kodak-like photo, with the
    # magnitudes h_s meets): int8 digits, split float32 products and float64 agree bit for bit.
    from cae_codec import weights

    model = weights.load(name).model
    g = torch.Generator().manual_seed(0)
    z = torch.randint(-12, 13, (1, 32, 20, 28), generator=g).double()
    answers = []
    for int8, float32 in ((True, True), (False, True), (False, False)):
        monkeypatch.setattr(exact, "_INT8", [int8])
        if not float32:
            monkeypatch.setattr(exact, "_float32_layer", lambda *args: None)
        answers.append(exact.run_exact(model.h_s, z, model.config.fraction_bits))
    assert torch.equal(answers[0], answers[1]) and torch.equal(answers[1], answers[2])


def test_int8_weights_follow_the_layers_weights_however_changed():
    layer = nn.Conv2d(4, 4, 3, padding=1)
    with torch.no_grad():
        layer.weight.copy_(torch.round(layer.weight * UNIT) / UNIT)
        layer.bias.copy_(torch.round(layer.bias * UNIT) / UNIT)
    first = exact._int8_weights(layer, UNIT)
    assert exact._int8_weights(layer, UNIT) is first  # made once
    layer.weight.data[0, 0, 0, 0] += 1 / UNIT  # through .data: no version bump
    second = exact._int8_weights(layer, UNIT)
    assert second is not first
    assert not torch.equal(second[1][0], first[1][0])


@pytest.mark.parametrize("blocks", [1, 2, 3, 4])
def test_int32_floor_carries_exactly(blocks):
    generator = torch.Generator().manual_seed(blocks)
    bound = 1 << 22 if blocks < 4 else 1 << 10
    powers = [
        torch.randint(-bound, bound, (500, 6), generator=generator, dtype=torch.int32) for _ in range(blocks)
    ]
    bias = torch.randint(-(1 << 13), 1 << 13, (6,), generator=generator).double()  # in grid units
    assert exact._int32_floor_fits(blocks, bound, UNIT, bias)
    got = exact._int32_floor([p.clone() for p in powers], bias, UNIT)
    total = sum(p.long() * 128**s for s, p in enumerate(powers)) + (bias * UNIT).long()
    assert torch.equal(got.long(), torch.div(total, int(UNIT), rounding_mode="floor"))


def test_int32_floor_declines_sums_that_could_overflow():
    bias = torch.zeros(1, dtype=torch.float64)
    assert exact._int32_floor_fits(3, 1 << 24, UNIT, bias)  # the shipped h_s: 2 x 864 taps
    assert not exact._int32_floor_fits(3, 1 << 27, UNIT, bias)
    assert not exact._int32_floor_fits(5, 1 << 24, UNIT, bias)
    assert not exact._int32_floor_fits(3, 1 << 20, 1000.0, bias)  # not a power of two
