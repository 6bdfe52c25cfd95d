import numpy as np
import pytest

from cae_codec import entropy
from cae_codec.container import FormatError


def test_symbols_round_trip_with_escapes():
    rng = np.random.default_rng(1)
    symbols = rng.laplace(0, 4, (64, 8, 8)).round().astype(np.int64)
    symbols[0, 0, :4] = [127, -128, 1000, -(1 << 20)]
    frame = entropy.encode_symbols(symbols)
    back = entropy.decode_symbols(frame, symbols.size).reshape(symbols.shape)
    np.testing.assert_array_equal(back, symbols)


def test_small_symbols_compress_below_one_byte_each():
    symbols = np.random.default_rng(2).laplace(0, 0.5, 4096).round().astype(np.int64)
    assert len(entropy.encode_symbols(symbols)) < symbols.size / 2


def test_decode_rejects_wrong_count_truncation_and_trailing():
    symbols = np.arange(-50, 50)
    frame = entropy.encode_symbols(symbols)
    with pytest.raises(FormatError):
        entropy.decode_symbols(frame, symbols.size + 1)
    with pytest.raises(FormatError):
        entropy.decode_symbols(frame, symbols.size - 1)
    with pytest.raises(FormatError, match="truncated"):
        entropy.decode_symbols(frame[:-1], symbols.size)
    with pytest.raises(FormatError, match="trailing"):
        entropy.decode_symbols(frame + b"\x00", symbols.size)
    with pytest.raises(FormatError):
        entropy.decode_symbols(b"garbage!", symbols.size)


def test_zstd_unpack_caps_expansion():
    bomb = entropy.zstd_pack(bytes(1_000_000))
    assert len(bomb) < 1000
    with pytest.raises(FormatError, match="expands"):
        entropy.zstd_unpack(bomb, 10_000, "test frame")


def test_encode_refuses_absurd_values():
    with pytest.raises(ValueError):
        entropy.encode_symbols(np.array([1 << 30]))
