import numpy as np
import pytest
import torch
from torch import nn

from cae_codec import model


def _hyper(seed: int = 0) -> model.HyperCAE:
    torch.manual_seed(seed)
    net = model.build(model.ModelConfig(N=16, M=6, levels=2, hyper_N=5, hyper_M=3))
    for p in net.h_s.parameters():  # spread the weights so sums carry many significant bits
        p.data.uniform_(-1.5, 1.5)
    net.round_exact_parts()
    return net


def _reference_h_s(net: model.HyperCAE, z: np.ndarray) -> np.ndarray:
    """h_s in plain int64 arithmetic, in units of 2**-fraction_bits: the exact answer."""
    frac = net.config.fraction_bits
    unit, limit = 1 << frac, (1 << 15) << frac
    x = z.astype(np.int64) * unit
    for layer in net.h_s:
        if isinstance(layer, nn.ReLU):
            x = np.clip(x, 0, limit)
            continue
        w = np.round(layer.weight.detach().double().numpy() * unit).astype(np.int64)
        b = np.round(layer.bias.detach().double().numpy() * unit).astype(np.int64)
        k = w.shape[2]
        pad = k // 2
        c, h, wd = x.shape
        if isinstance(layer, nn.ConvTranspose2d):
            s = layer.stride[0]
            full = np.zeros((w.shape[1], (h - 1) * s + k + 1, (wd - 1) * s + k + 1), dtype=np.int64)
            for i in range(k):
                for j in range(k):
                    full[:, i : i + (h - 1) * s + 1 : s, j : j + (wd - 1) * s + 1 : s] += np.einsum(
                        "chw,co->ohw", x, w[:, :, i, j]
                    )
            out = full[:, pad : pad + h * s, pad : pad + wd * s]
        else:
            padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
            out = np.zeros((w.shape[0], h, wd), dtype=np.int64)
            for i in range(k):
                for j in range(k):
                    out += np.einsum("chw,oc->ohw", padded[:, i : i + h, j : j + wd], w[:, :, i, j])
        out = out + b[:, None, None] * unit
        x = np.clip(np.floor_divide(out, unit), -limit, limit)
    return x


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exact_hyper_synthesis_equals_integer_arithmetic(seed):
    net = _hyper(seed)
    z = np.random.default_rng(seed).integers(-40, 40, (3, 3, 5))
    got = net.exact_hyper_synthesis(torch.from_numpy(z)[None].double())[0].numpy()
    got *= 1 << net.config.fraction_bits
    expected = _reference_h_s(net, z)
    assert np.abs(expected).max() > 1 << 20  # the sums really use many bits
    np.testing.assert_array_equal(got, expected.astype(np.float64))


def test_exact_hyper_synthesis_is_the_same_on_any_thread_count():
    net = _hyper()
    z = torch.from_numpy(np.random.default_rng(5).integers(-30, 30, (1, 3, 16, 16))).double()
    before = torch.get_num_threads()
    try:
        outs = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            outs.append(net.exact_hyper_synthesis(z))
    finally:
        torch.set_num_threads(before)
    assert torch.equal(outs[0], outs[1])


def test_rounded_h_s_sits_on_its_grid_and_stays_close():
    torch.manual_seed(0)
    net = model.build(model.ModelConfig(N=16, M=6, levels=2, hyper_N=5, hyper_M=3))
    before = [p.detach().clone() for p in net.h_s.parameters()]
    net.round_exact_parts()
    unit = 2.0**net.config.fraction_bits
    for old, new in zip(before, net.h_s.parameters(), strict=True):
        assert torch.equal(new * unit, torch.round(new * unit))
        assert (new - old).abs().max() <= 0.5 / unit


def test_training_pass_gives_bits_and_an_image_for_both_priors():
    x = torch.rand(3, 3, 32, 32)
    level = torch.tensor([0, 1, 1])
    for config in (
        model.ModelConfig(N=8, M=4, levels=2),
        model.ModelConfig(N=8, M=4, levels=2, hyper_N=4, hyper_M=2),
    ):
        net = model.build(config)
        x_hat, bits = net(x, level)
        assert x_hat.shape == x.shape and bits.shape == (3,) and (bits > 0).all()
        bits.sum().backward()
        assert net.g_a[0].weight.grad is not None


def test_gaussian_likelihood_sums_to_one():
    v = torch.arange(-60, 61, dtype=torch.float64)[:, None]
    sigma = torch.tensor([[0.11, 0.7, 3.0, 9.0]], dtype=torch.float64)
    total = model.gaussian_likelihood(v, sigma).sum(dim=0)
    assert torch.allclose(total, torch.ones(4, dtype=torch.float64), atol=1e-6)


def test_config_names_its_prior_and_older_configs_imply_it():
    from cae_codec.model import ModelConfig

    assert ModelConfig(hyper_N=0).prior == "factorized"
    assert ModelConfig(hyper_N=8, hyper_M=4).prior == "mean-scale"  # weights saved before the field
    assert ModelConfig(hyper_N=8, hyper_M=4).to_dict()["prior"] == "mean-scale"
    with pytest.raises(ValueError, match="needs hyper_N > 0"):
        ModelConfig(prior="mean-scale")
    with pytest.raises(ValueError, match="needs hyper_N > 0"):
        ModelConfig(prior="checkerboard")
    with pytest.raises(ValueError, match="needs hyper_N = 0"):
        ModelConfig(prior="factorized", hyper_N=8)
    with pytest.raises(ValueError, match="prior must be one of"):
        ModelConfig(prior="autoregressive", hyper_N=8)


def test_h_s_fan_in_is_bounded_for_exactness():
    from cae_codec import latent_codecs
    from cae_codec.model import ModelConfig, build

    shipped = build(ModelConfig(N=8, M=64, hyper_N=96, hyper_M=32))  # id 3's h_s
    photo = build(ModelConfig(N=8, M=192, stride=16, hyper_N=128, hyper_M=96))
    assert latent_codecs.max_fan_in(shipped.h_s) == 864 and latent_codecs.max_fan_in(photo.h_s) == 1152
    wide = build(ModelConfig(N=8, M=8, hyper_N=4096, hyper_M=4))
    with pytest.raises(ValueError, match="fan-in 36864"):
        latent_codecs.MeanScaleHyperprior().load_tables(wide, {})


def _bits_level_by_level(densities: nn.ModuleList, v: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
    """The rate as it was computed before the batched pass: one density call per level present."""
    bits = torch.zeros(v.shape[0])
    for q in level.unique().tolist():
        rows = level == q
        bits[rows] = -torch.log2(densities[q].likelihood(v[rows])).sum(dim=(1, 2, 3))
    return bits


def test_batched_densities_give_the_bits_of_the_per_level_loop():
    torch.manual_seed(0)
    densities = nn.ModuleList(model.FactorizedDensity(6) for _ in range(4))
    with torch.no_grad():  # distinct levels, as after training
        for q, d in enumerate(densities):
            for p in d.parameters():
                p.add_(0.3 * q * torch.randn_like(p))
    v = 4 * torch.randn(10, 6, 3, 5)
    level = torch.tensor([3, 0, 0, 2, 1, 3, 3, 0, 2, 1])
    want = _bits_level_by_level(densities, v, level)
    got = model._factorized_bits(densities, v, level)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-3)
    # ... and the same gradients, so training follows the same path.
    v.requires_grad_(True)
    (g_loop,) = torch.autograd.grad(_bits_level_by_level(densities, v, level).sum(), v)
    (g_batched,) = torch.autograd.grad(model._factorized_bits(densities, v, level).sum(), v)
    torch.testing.assert_close(g_batched, g_loop, rtol=1e-4, atol=1e-5)
    assert not torch.equal(want[level == 0], _bits_level_by_level(densities, v, level.roll(1))[level == 0])


def test_last_transposed_layer_as_phases_gives_the_layers_output():
    torch.manual_seed(3)
    layer = nn.ConvTranspose2d(16, 3, 5, stride=2, padding=2, output_padding=1)
    x = torch.randn(2, 16, 9, 13)
    with torch.no_grad():
        as_phases = model._last_layer(layer, x)
        direct = layer(x)
    assert as_phases.shape == direct.shape == (2, 3, 18, 26)
    torch.testing.assert_close(as_phases, direct, rtol=1e-5, atol=1e-5)
    assert model._last_layer(layer, x).grad_fn is not None  # training keeps the module's own path


def test_bf16_pixels_only_up_to_their_level(monkeypatch):
    # In bf16, g_s's last layer runs in bfloat16 up to BF16_PIXELS_TO_LEVEL (pixels off by bfloat16's
    # rounding, about one 8-bit step at most) and in float32 above it (the earlier layers' result).
    torch.manual_seed(4)
    net = model.build(model.ModelConfig(N=16, M=6, levels=3)).eval()
    monkeypatch.setattr(model, "BF16_PIXELS_TO_LEVEL", 1)
    y = torch.randn(1, 6, 8, 8)
    calls = []
    real = model._run
    monkeypatch.setattr(model, "_run", lambda *a, **k: calls.append(k.get("bf16_out")) or real(*a, **k))
    with torch.inference_mode():
        low, high = (net.synthesis(y, torch.tensor([q]), bf16=True) for q in (1.0, 1.5))
        float32_last = real(net.g_s, y * net.inv_gain(torch.tensor([1.0])), True)
    assert calls == [True, False]
    assert low.dtype == high.dtype == torch.float32
    assert not torch.equal(low, float32_last)
    assert (low - float32_last).abs().max() < 2**-7 * max(1.0, float(float32_last.abs().max()))
