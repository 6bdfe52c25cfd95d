"""The checkerboard context model: its two passes, its exactness and its warm start."""

import numpy as np
import pytest
import torch
from conftest import sample_image

import cae_codec
from cae_codec import codec, latent_codecs, model, weights
from cae_codec.container import unpack


def _latent(w, array, quality=2):
    return codec.encode_latent(w, codec.to_tensor(array, w.model.config.pad_multiple), quality)


def test_the_anchors_are_half_the_positions_coded_first():
    passes = latent_codecs.LATENT_CODECS["checkerboard"].passes((2, 3, 4))
    first, second = (np.isin(np.arange(24), p).reshape(2, 3, 4) for p in passes)
    assert first.sum() == second.sum() == 12 and not (first & second).any()
    np.testing.assert_array_equal(first[0], [[1, 0, 1, 0], [0, 1, 0, 1], [1, 0, 1, 0]])
    np.testing.assert_array_equal(first[0], first[1])


def test_only_the_other_positions_depend_on_the_anchors(tiny_checkerboard):
    w = weights.load(tiny_checkerboard)
    symbols = _latent(w, sample_image(64, 48, "RGB"))
    hyper = latent_codecs.hyper_features(w, symbols.z, 2)
    changed = symbols.y.copy()
    anchor = model.anchors(*changed.shape[1:])[0].expand(changed.shape).numpy()
    changed[anchor] += 3
    walks = [
        w.latent.walk(w, hyper, lambda part, y=y: y.ravel()[part.positions]) for y in (symbols.y, changed)
    ]
    mu, moved = walks[0].params[0], walks[1].params[0]
    assert torch.equal(mu[torch.from_numpy(anchor)], moved[torch.from_numpy(anchor)])
    assert not torch.equal(mu[torch.from_numpy(~anchor)], moved[torch.from_numpy(~anchor)])


@pytest.mark.parametrize("coder", ["zstd", "range"])
def test_a_checkerboard_file_decodes_to_the_encoders_reconstruction(coder, tiny_checkerboard):
    array = sample_image(70, 45, "RGB")
    w = weights.load(tiny_checkerboard)
    symbols = _latent(w, array)
    expected = codec.to_pixels(codec.decode_latent(w, symbols, 2), 45, 70)
    data = cae_codec.compress(array, quality=100, coder=coder, weights=tiny_checkerboard)
    assert unpack(data).header.coder == coder
    np.testing.assert_array_equal(np.asarray(cae_codec.decompress(data, weights=tiny_checkerboard)), expected)


def test_training_forward_matches_the_codec(tiny_checkerboard):
    """The network that is trained and the codec that ships agree on y_hat and on the rate."""
    w = weights.load(tiny_checkerboard)
    array = sample_image(64, 64, "RGB")
    symbols = _latent(w, array)
    x = codec.to_tensor(array, w.model.config.pad_multiple)
    with torch.no_grad():
        x_hat, bits = w.model(x, torch.tensor([1]), noise=False)
    assert abs(float(bits[0]) - w.latent.bits(w, symbols, 2)) < 0.01 * float(bits[0])
    decoded = codec.decode_latent(w, symbols, 2)
    assert (decoded - x_hat).abs().max() < 0.02


def test_a_new_context_model_starts_as_its_hyperprior():
    torch.manual_seed(3)
    hyper = model.build(model.ModelConfig(N=16, M=8, levels=2, hyper_N=8, hyper_M=4))
    board = model.build(model.ModelConfig(N=16, M=8, levels=2, hyper_N=8, hyper_M=4, prior="checkerboard"))
    board.load_state_dict(hyper.state_dict(), strict=False)
    x, level = torch.rand(2, 3, 32, 32), torch.tensor([0, 1])
    with torch.no_grad():
        for a, b in zip(hyper(x, level, noise=False), board(x, level, noise=False), strict=True):
            assert torch.equal(a, b)


def test_the_per_position_context_equals_the_whole_convolution(tiny_checkerboard):
    net = weights.load(tiny_checkerboard).model
    gen = torch.Generator().manual_seed(5)
    hyper = torch.randint(-4000, 4000, (1, 16, 12, 10), generator=gen).double() / 1024
    anchor = model.anchors(12, 10)
    y_hat = torch.randint(-3000, 3000, (1, 8, 12, 10), generator=gen).double() / 256 * anchor
    fast = net.exact_entropy_parameters(hyper, y_hat)
    ctx = model.run_exact([net.g_cm], y_hat, net.config.fraction_bits)
    slow = hyper + model.run_exact(net.g_ep, torch.cat([hyper, ctx], 1), net.config.fraction_bits)
    others = ~anchor[0, 0]
    assert torch.equal(fast[:, :, others], slow[:, :, others])
    assert not fast[:, :, ~others].any()  # the anchors' come from the first pass
