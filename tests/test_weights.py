import hashlib
import pickle

import pytest
import torch

from cae_codec import weights
from cae_codec.export import export
from cae_codec.model import CAE, ModelConfig


def test_shipped_weights_match_registry():
    for entry in weights.REGISTRY.values():
        path = weights.shipped_dir() / entry.file
        assert hashlib.sha256(path.read_bytes()).hexdigest() == entry.sha256
        assert weights.load(weights_id=entry.id).name == entry.name


@pytest.fixture
def user_weights(tmp_path):
    model = CAE(ModelConfig(N=8, M=4, levels=3))
    path = tmp_path / "mine.pt"
    export(model, path, (0.01, 0.02, 0.04), weights.new_user_id(), "mine", 2)
    return path


def test_user_weights_load_with_fresh_id(user_weights):
    w = weights.load(user_weights)
    assert w.id >= weights.FIRST_USER_ID and w.name == "mine" and w.levels == 3


def test_tampered_tensors_are_detected(user_weights, tmp_path):
    bundle = torch.load(user_weights, weights_only=True)
    bundle["state_dict"]["g_a.0.bias"][0] += 1.0
    bad = tmp_path / "tampered.pt"
    torch.save(bundle, bad)
    with pytest.raises(weights.WeightsError, match="tampered"):
        weights.load(bad)


def test_file_claiming_a_shipped_id_must_match_its_hash(user_weights, tmp_path):
    bundle = torch.load(user_weights, weights_only=True)
    bundle["id"] = weights.DEFAULT_ID
    bad = tmp_path / "impostor.pt"
    torch.save(bundle, bad)
    with pytest.raises(weights.WeightsError, match="hash differs"):
        weights.load(bad)


def test_missing_and_foreign_files_name_the_file(tmp_path):
    with pytest.raises(weights.WeightsError, match="nothere.pt"):
        weights.load(tmp_path / "nothere.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"hello")
    with pytest.raises(weights.WeightsError, match="junk.pt"):
        weights.load(junk)


class _Boom:
    def __reduce__(self):
        return (print, ("code ran",))


def test_weights_never_execute_code(tmp_path):
    evil = tmp_path / "evil.pt"
    torch.save({"format": weights.BUNDLE_FORMAT, "x": _Boom()}, evil, pickle_protocol=pickle.HIGHEST_PROTOCOL)
    with pytest.raises(weights.WeightsError):
        weights.load(evil)


def test_unknown_id_without_weights_is_refused():
    with pytest.raises(weights.WeightsError, match="not installed"):
        weights.load(weights_id=424242)


def test_retired_ids_are_never_reused():
    assert not set(weights.REGISTRY) & weights.RETIRED_IDS
    assert weights.DEFAULT_ID in weights.REGISTRY


@pytest.mark.parametrize("kind, tensor", [("hyper", "h_s.0.weight"), ("checkerboard", "g_ep.0.weight")])
def test_bundle_with_an_exact_layer_off_its_grid_is_refused(
    kind, tensor, tiny_hyper, tiny_checkerboard, tmp_path
):
    # The decoder's exact arithmetic needs h_s (and a context model) on its grid; re-hashing the
    # tensors does not help.
    bundle = torch.load(tiny_hyper if kind == "hyper" else tiny_checkerboard, weights_only=True)
    bundle["state_dict"][tensor][0, 0, 0, 0] += 1e-4
    bundle["tensor_sha256"] = weights.tensor_digest(bundle["state_dict"])
    bad = tmp_path / "off-grid.pt"
    torch.save(bundle, bad)
    with pytest.raises(weights.WeightsError, match="grid"):
        weights.load(bad)


def test_hyper_bundle_loads_with_its_scale_tables(tiny_hyper):
    w = weights.load(tiny_hyper)
    assert w.hyper and len(w.scale_bounds) + 1 == len(w.scale_tables.freqs)
    assert w.offsets.shape == (2, w.model.config.hyper_M)


def test_the_shipped_choice_by_size():
    from conftest import sample_image

    import cae_codec

    assert weights.PHOTO_ID in weights.REGISTRY and weights.PHOTO_ID != weights.DEFAULT_ID
    assert weights.default_id(32, 32) == weights.DEFAULT_ID  # CIFAR-sized thumbnails
    assert weights.default_id(48, 48) == weights.PHOTO_ID
    assert (
        cae_codec.read_header(cae_codec.compress(sample_image(60, 50, "RGB"))).weights_id == weights.PHOTO_ID
    )
