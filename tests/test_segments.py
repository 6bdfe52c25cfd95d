"""Large images are cut into segments (container version 2) so memory stays bounded by a segment."""

import numpy as np
import pytest
from conftest import sample_image

import cae_codec
from cae_codec import codec, metrics, weights
from cae_codec.container import CaeFile, Header, join_segments, pack, unpack

KINDS = ["shipped", "hyper", "checkerboard"]


def _weights(kind, tiny_hyper, tiny_checkerboard):
    return {"shipped": None, "hyper": tiny_hyper, "checkerboard": tiny_checkerboard}[kind]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("coder", ["zstd", "range"])
def test_segmented_file_decodes_like_a_whole_one(kind, coder, tiny_hyper, tiny_checkerboard):
    array = sample_image(203, 150, "RGB")
    source = _weights(kind, tiny_hyper, tiny_checkerboard)
    whole = cae_codec.compress(array, 100, weights=source, coder=coder)
    cut = cae_codec.compress(array, 100, weights=source, coder=coder, segment=64)
    header = unpack(cut).header
    assert unpack(whole).header.segment == 0 and cut[1] & 0xF == 2
    assert header.segment == 64 and header.segments == 4 * 3
    decoded = np.asarray(cae_codec.decompress(cut, weights=source))
    assert decoded.shape == array.shape
    psnr_whole = metrics.psnr(array, np.asarray(cae_codec.decompress(whole, weights=source)))
    assert metrics.psnr(array, decoded) > psnr_whole - 0.3
    # Each segment's z, means and stream are its own: some rate at its edges and a frame's overhead.
    assert len(cut) < 1.1 * len(whole) + 100 * header.segments


def _border(height: int, width: int, side: int, reach: int = 4) -> np.ndarray:
    rows, cols = np.arange(height)[:, None], np.arange(width)[None, :]
    near = lambda v: (np.abs((v + side // 2) % side - side // 2) < reach) & (v >= reach)  # noqa: E731
    return near(rows) | near(cols)


def test_segment_edges_leave_no_seam(tiny_hyper):
    array = sample_image(256, 192, "RGB", seed=3)
    decoded = np.asarray(
        cae_codec.decompress(
            cae_codec.compress(array, 100, weights=tiny_hyper, segment=64), weights=tiny_hyper
        )
    )
    border = _border(192, 256, 64)
    error = (decoded.astype(float) - array) ** 2
    assert border.mean() > 0.1  # the mask really covers the segment edges
    assert error[border].mean() < 1.2 * error[~border].mean()


def test_segments_bound_what_the_network_sees(monkeypatch):
    path = weights.resolve(None, 3)
    w = weights.load(path)
    seen = []
    analysis = w.model.analysis
    monkeypatch.setattr(
        w.model, "analysis", lambda x, level, *rest: seen.append(x.shape[2:]) or analysis(x, level, *rest)
    )
    cae_codec.compress(sample_image(300, 200, "RGB"), 2, weights=path, segment=96)
    halo = codec.tiling(4)[1]
    assert seen and max(max(s) for s in seen) <= 96 + 2 * halo


def test_segment_side_must_fit_the_model():
    with pytest.raises(ValueError, match="multiple of 16"):
        cae_codec.compress(sample_image(100, 70, "RGB"), 2, segment=40)
    # A file that claims segments the model cannot have made is refused before decoding.
    header = Header("RGB", "zstd", 2, 3, 100, 70, 24)
    forged = pack(CaeFile(header, join_segments([b"\x00"] * header.segments), None))
    with pytest.raises(cae_codec.FormatError, match="not a multiple of 16"):
        cae_codec.decompress(forged)


def test_segments_coded_two_at_a_time_give_the_same_file(monkeypatch):
    """On two cores segments are coded and decoded two at a time (codec._segment_map); each is coded
    alone, so the bytes and the pixels are those of one at a time."""
    import os

    array = sample_image(300, 200, "RGB")
    data = cae_codec.compress(array, segment=64)
    pixels = np.asarray(cae_codec.decompress(data))
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    assert cae_codec.compress(array, segment=64) == data
    assert np.array_equal(np.asarray(cae_codec.decompress(data)), pixels)
