import numpy as np
import pytest

from cae_codec import integer_tables, packing, range_coder
from cae_codec.container import FormatError


def test_symbols_round_trip_with_escapes():
    rng = np.random.default_rng(1)
    symbols = rng.laplace(0, 4, (64, 8, 8)).round().astype(np.int64)
    symbols[0, 0, :4] = [127, -128, 1000, -(1 << 20)]
    frame = packing.encode_symbols(symbols)
    back = packing.decode_symbols(frame, symbols.shape)
    np.testing.assert_array_equal(back, symbols)


def test_small_symbols_compress_below_one_byte_each():
    symbols = np.random.default_rng(2).laplace(0, 0.5, 4096).round().astype(np.int64)
    assert len(packing.encode_symbols(symbols)) < symbols.size / 2


def test_decode_rejects_wrong_count_truncation_and_trailing():
    symbols = np.arange(-50, 50).reshape(1, 10, 10)
    frame = packing.encode_symbols(symbols)
    with pytest.raises(FormatError):
        packing.decode_symbols(frame, (1, 10, 11))
    with pytest.raises(FormatError):
        packing.decode_symbols(frame, (1, 9, 10))
    with pytest.raises(FormatError, match="truncated"):
        packing.decode_symbols(frame[:-1], symbols.shape)
    with pytest.raises(FormatError, match="trailing"):
        packing.decode_symbols(frame + b"\x00", symbols.shape)
    with pytest.raises(FormatError):
        packing.decode_symbols(b"garbage!", symbols.shape)


def test_zstd_unpack_caps_expansion():
    bomb = packing.zstd_pack(bytes(1_000_000))
    assert len(bomb) < 1000
    with pytest.raises(FormatError, match="expands"):
        packing.zstd_unpack(bomb, 10_000, "test frame")


def test_encode_refuses_absurd_values():
    with pytest.raises(ValueError):
        packing.encode_symbols(np.array([[[1 << 30]]]))


def test_layout_order_and_dictionary_round_trip():
    rng = np.random.default_rng(5)
    scales = np.array([0.2, 3.0, 0.05, 1.0])[:, None, None]
    samples = [rng.laplace(0, 1, (4, 8, 8)) * scales for _ in range(400)]
    samples = [s.round().astype(np.int64) for s in samples]
    order = np.array([2, 0, 3, 1])
    layout = packing.ZstdLayout(
        order, packing.train_dictionary([packing.symbol_bytes(s, order) for s in samples], 4096)
    )
    test = samples[7]
    frame = packing.encode_symbols(test, layout)
    np.testing.assert_array_equal(packing.decode_symbols(frame, test.shape, layout), test)
    with pytest.raises(FormatError):
        packing.decode_symbols(frame, test.shape, packing.ZstdLayout(order))  # without its dictionary
    mean = np.mean
    plain = mean([len(packing.encode_symbols(s)) for s in samples[:50]])
    tuned = mean([len(packing.encode_symbols(s, layout)) for s in samples[:50]])
    assert tuned < plain


def _tables(half=8, spread=1.5, channels=3):
    k = np.arange(-half, half + 1)
    pmf = np.exp(-np.abs(k) / spread)[None, :].repeat(channels, axis=0)
    return integer_tables.quantize_pmf(pmf / pmf.sum(axis=1, keepdims=True) * 0.999, half)


def test_quantized_tables_sum_to_precision_with_an_escape():
    tables = _tables()
    for freqs in tables.freqs:
        assert freqs.sum() == 1 << range_coder.RANGE_PRECISION
        assert freqs.min() >= 1
    assert (tables.lo >= -8).all()


def test_range_round_trip_with_escapes():
    tables = _tables()
    rng = np.random.default_rng(3)
    symbols = rng.laplace(0, 1.5, (3, 5, 7)).round().astype(np.int64)
    symbols[0, 0, 0], symbols[2, 4, 6], symbols[1, 2, 3] = 500, -(1 << 20), 9
    data = range_coder.range_encode(symbols, tables)
    np.testing.assert_array_equal(range_coder.range_decode(data, tables, symbols.shape), symbols)


def test_range_stream_is_near_the_tables_information():
    tables = _tables(channels=1)
    rng = np.random.default_rng(4)
    symbols = rng.laplace(0, 1.5, (1, 32, 32)).round().clip(-8, 8).astype(np.int64)
    index = symbols.ravel() - tables.lo[0]
    bits = -np.log2(tables.freqs[0][index] / (1 << range_coder.RANGE_PRECISION)).sum()
    data = range_coder.range_encode(symbols, tables)
    assert 8 * len(data) < bits + 24  # trimmed: less than 3 bytes over the information content


def test_range_decode_of_garbage_is_a_format_error_or_values():
    tables = _tables()
    for junk in (b"", b"\xff" * 3, bytes(range(40))):
        try:
            out = range_coder.range_decode(junk, tables, (3, 2, 2))
        except FormatError:
            continue
        assert out.shape == (3, 2, 2)  # garbage decodes to some integers; the checksum guards files
    with pytest.raises(FormatError, match="channels"):
        range_coder.range_decode(b"", tables, (4, 2, 2))


def test_range_parts_decode_one_after_the_other():
    # A hyperprior stream: part two's groups and tables are only known after part one is read.
    rng = np.random.default_rng(7)
    first = _tables(channels=2)
    second = integer_tables.gaussian_tables(np.array([0.2, 1.0, 4.0, 30.0]))
    z = [rng.laplace(0, 1.5, 6).round().astype(np.int64) for _ in range(2)]
    z[1][0] = 300  # an escape in the first part
    y = [rng.normal(0, s, n).round().astype(np.int64) for s, n in ((1.0, 9), (30.0, 20))]
    y[0][3] = -(1 << 19)
    data = range_coder.range_encode_parts([(z, first, [0, 1]), (y, second, [1, 3])])
    reader = range_coder.RangeReader(data)
    back_z = reader.read([6, 6], first)
    back_y = reader.read([9, 20], second, [1, 3])
    for a, b in zip(back_z + back_y, z + y, strict=True):
        np.testing.assert_array_equal(a, b)


def test_gaussian_tables_follow_their_scales():
    scales = np.array([0.11, 1.0, 10.0, 100.0])
    tables = integer_tables.gaussian_tables(scales)
    assert all(f.sum() == 1 << range_coder.RANGE_PRECISION for f in tables.freqs)
    bits = integer_tables.table_entropy(tables)
    assert (np.diff(bits) > 0).all()
    # A discretized Gaussian of scale 10 carries about log2(10 * sqrt(2 pi e)) = 5.37 bits.
    assert abs(bits[2] - 5.37) < 0.05
    widths = [len(f) for f in tables.freqs]
    assert widths[0] == widths[1] == 2 * integer_tables.RANGE_MIN_HALF + 2  # the floor, plus the escape
    assert widths[1] < widths[2] < widths[3]


def test_unlikely_values_near_the_centre_cost_at_most_16_bits():
    # A value the model thinks impossible must not escape (which costs the escape plus 21 bits).
    tables = integer_tables.gaussian_tables(np.array([0.11]))
    zeros = len(range_coder.range_encode(np.zeros((1, 1, 4), np.int64), tables))
    symbols = np.array([[[0, 5, -16, 0]]])
    data = range_coder.range_encode(symbols, tables)
    assert len(data) - zeros <= 2 * 16 // 8 + 1
    escaped = len(range_coder.range_encode(np.array([[[0, 17, -17, 0]]]), tables))
    assert escaped > len(data)  # outside the floor, +-17 escape and cost more
    np.testing.assert_array_equal(range_coder.range_decode(data, tables, symbols.shape), symbols)


def test_scale_index_picks_the_table_by_bounds():
    bounds = np.array([-1.0, 0.0, 2.0])
    got = integer_tables.scale_index(np.array([-5.0, -1.0, -0.5, 0.0, 1.99, 2.0, 9.0]), bounds)
    np.testing.assert_array_equal(got, [0, 1, 1, 2, 2, 3, 3])


def test_hyper_layout_puts_z_first_and_y_by_scale():
    z = np.arange(8).reshape(2, 2, 2)
    y = np.array([[[10, 11], [12, 13]]])
    index = np.array([[[2, 0], [1, 0]]])
    layout = packing.ZstdLayout(np.array([1, 0]), None, np.array([3, 5]))
    zv, zw = packing.channel_part(z, layout)
    yv, yw = packing.scale_part(y, index, np.array([1, 2, 4]))
    np.testing.assert_array_equal(zv, [4, 5, 6, 7, 0, 1, 2, 3])
    np.testing.assert_array_equal(zw, [5, 5, 5, 5, 3, 3, 3, 3])
    np.testing.assert_array_equal(yv, [11, 13, 12, 10])
    np.testing.assert_array_equal(yw, [1, 1, 2, 4])


def test_bit_packing_round_trips_with_escapes():
    rng = np.random.default_rng(11)
    widths = rng.integers(1, 9, 500)
    values = rng.laplace(0, 3, 500).round().astype(np.int64)
    values[[3, 77]] = [1 << 20, -(1 << 19)]
    raw = packing.packed_bytes(values, widths) + packing.packed_bytes(values[:9], widths[:9])
    back, offset = packing.read_packed(raw, 0, widths)
    np.testing.assert_array_equal(back, values)
    again, end = packing.read_packed(raw, offset, widths[:9])
    np.testing.assert_array_equal(again, values[:9])
    assert end == len(raw)
    # Width-1 values take one bit: 16 zeros fit in 2 bytes.
    assert packing.packed_bytes(np.zeros(16, np.int64), np.ones(16, np.int64)) == b"\x00\x00"


def test_bit_packing_of_width_runs_round_trips():
    # Widths in a few runs (as y sorted by scale) take a faster way than scattered ones.
    rng = np.random.default_rng(12)
    widths = np.sort(rng.integers(1, 9, 3000))
    values = rng.laplace(0, 4, 3000).round().astype(np.int64)
    values[[5, 2999]] = [-(1 << 20), 300]
    raw = packing.packed_bytes(values, widths)
    back, end = packing.read_packed(raw, 0, widths)
    np.testing.assert_array_equal(back, values)
    assert end == len(raw) and packing.packed_bytes(values[:0], widths[:0]) == b""
    # The 8 runs' bits are exactly the scattered way's bits, in the same order.
    bits = np.unpackbits(rng.integers(0, 256, 3000).astype(np.uint8)[:, None], axis=1)
    mask = np.arange(8)[None, :] >= 8 - widths[:, None]
    np.testing.assert_array_equal(packing._low_bits(bits, widths), bits[mask])


def test_bit_packing_refuses_short_or_damaged_data():
    widths = np.full(20, 3)
    raw = packing.packed_bytes(np.arange(-10, 10), widths)
    for cut in range(1, len(raw)):
        with pytest.raises(FormatError):
            packing.read_packed(raw[:cut], 0, widths)


def test_kept_zstd_coders_write_what_fresh_ones_write():
    import threading

    import zstandard

    rng = np.random.default_rng(3)
    dictionary = rng.integers(0, 8, 4096).astype(np.uint8).tobytes()
    sizes = [60, 30000, 400, 60, 5000, 401, 30000]  # each size class again after others
    # Repeats 2,000 bytes apart: a small frame's 1 KiB window would miss them in a large frame.
    raws = [np.tile(rng.integers(0, 255, 2000), n // 2000 + 1)[:n].astype(np.uint8).tobytes() for n in sizes]

    def fresh(raw: bytes, zdict: bytes | None) -> bytes:
        params = zstandard.ZstdCompressionParameters.from_level(
            packing.ZSTD_LEVEL, source_size=len(raw), format=zstandard.FORMAT_ZSTD1_MAGICLESS,
            write_checksum=False, write_content_size=False, write_dict_id=False,
        )  # fmt: skip
        d = zstandard.ZstdCompressionDict(zdict) if zdict else None
        return zstandard.ZstdCompressor(compression_params=params, dict_data=d).compress(raw)

    for zdict in (dictionary, None):
        for raw in raws:
            frame = packing.zstd_pack(raw, zdict)
            assert frame == fresh(raw, zdict)
            assert packing.zstd_unpack(frame, len(raw), "test", zdict) == raw
    out = {}
    workers = [
        threading.Thread(target=lambda i=i: out.update({i: packing.zstd_pack(raws[i], dictionary)}))
        for i in range(4)
    ]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    assert [out[i] for i in range(4)] == [fresh(raws[i], dictionary) for i in range(4)]


def test_scale_counts_match_a_sorted_unique():
    index = np.random.default_rng(13).integers(0, 64, 5000) * np.random.default_rng(14).integers(0, 2, 5000)
    used, counts = packing.scale_counts(index)
    expected = np.unique(index, return_counts=True)
    np.testing.assert_array_equal(used, expected[0])
    np.testing.assert_array_equal(counts, expected[1])
    assert [len(a) for a in packing.scale_counts(index[:0])] == [0, 0]
