import hashlib
import pickle

import pytest
import torch

from cae_codec import weights
from cae_codec.export import export
from cae_codec.model import CAE, ModelConfig, build


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


@pytest.fixture
def sharing_weights(tmp_path):
    """cae-msh8-v3 with a narrower, random h_s of its own, as a bundle that shares the rest with v3."""
    base = weights.load("cae-msh8-v3")
    torch.manual_seed(0)
    model = build(ModelConfig(**{**base.model.config.to_dict(), "hyper_s_N": 8}))
    own = {k: v for k, v in model.state_dict().items() if k.startswith("h_s.")}
    model.load_state_dict({**base.model.state_dict(), **own})
    path = tmp_path / "narrow.pt"
    export(model, path, base.lambdas, weights.new_user_id(), "narrow", base.default_quality, base=base)
    return path


def test_a_sharing_bundle_holds_only_what_differs(sharing_weights):
    base = weights.load("cae-msh8-v3")
    bundle = torch.load(sharing_weights, weights_only=True)
    assert bundle["format_version"] == weights.SHARING_VERSION and bundle["base"]["id"] == base.id
    assert bundle["state_dict"] and all(k.startswith("h_s.") for k in bundle["state_dict"])
    assert sharing_weights.stat().st_size < base.path.stat().st_size / 4
    w = weights.load(sharing_weights)
    assert w.model.config.hyper_s_N == 8 and w.model.h_s[0].out_channels == 8
    assert torch.equal(w.model.g_s[0].weight, base.model.g_s[0].weight)
    assert torch.equal(w.model.h_s[0].weight, bundle["state_dict"]["h_s.0.weight"])


def test_a_sharing_bundle_decodes_what_it_encodes(sharing_weights):
    from conftest import sample_image

    import cae_codec

    image = sample_image(40, 24, "RGB")
    data = cae_codec.compress(image, weights=sharing_weights)
    assert cae_codec.read_header(data).weights_id == weights.load(sharing_weights).id
    assert cae_codec.decompress(data, weights=sharing_weights).size == (40, 24)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda b: b["base"].update(sha256="0" * 64), "other than the shipped one"),
        (lambda b: b["base"].update(id=424242), "does not ship"),
        (lambda b: b.pop("base"), "does not ship"),
        (lambda b: b["state_dict"].pop("h_s.0.bias"), "does not fit"),
    ],
)
def test_a_sharing_bundle_needs_its_shipped_base(sharing_weights, tmp_path, change, message):
    bundle = torch.load(sharing_weights, weights_only=True)
    change(bundle)
    bundle["tensor_sha256"] = weights.tensor_digest(bundle["state_dict"])
    bad = tmp_path / "bad.pt"
    torch.save(bundle, bad)
    with pytest.raises(weights.WeightsError, match=message):
        weights.load(bad)


def test_only_shipped_weights_can_be_shared(user_weights, tmp_path):
    mine = weights.load(user_weights)
    with pytest.raises(ValueError, match="only with shipped"):
        export(mine.model, tmp_path / "x.pt", mine.lambdas, weights.new_user_id(), "x", 2, base=mine)


def test_a_network_this_version_cannot_build_is_refused(user_weights, tmp_path):
    bundle = torch.load(user_weights, weights_only=True)
    bundle["config"]["attention_heads"] = 4  # a field from a later version
    bad = tmp_path / "later.pt"
    torch.save(bundle, bad)
    with pytest.raises(weights.WeightsError, match="cannot build"):
        weights.load(bad)


def test_configs_without_a_narrower_h_s_stay_readable_by_older_versions():
    assert "hyper_s_N" not in ModelConfig(hyper_N=8, hyper_M=4).to_dict()
    assert ModelConfig(hyper_N=8, hyper_M=4, hyper_s_N=4).to_dict()["hyper_s_N"] == 4


def test_training_starts_from_a_sharing_bundle_whole(sharing_weights):
    from cae_codec.training.loop import init_network

    base = weights.load("cae-msh8-v3")
    model = build(base.model.config)  # h_s as wide as v3's: the narrow one does not fit it
    filled = init_network(model, sharing_weights)
    assert "g_s.0.weight" in filled and "g_a.0.weight" in filled and "h_s.0.weight" not in filled
    assert torch.equal(model.g_s[0].weight, base.model.g_s[0].weight)
