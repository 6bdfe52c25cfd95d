"""Entropy coding of the quantized latent: integers <-> bytes.

zstd: each symbol becomes one byte (zigzag, 255 = escape to a uint32 in a second stream),
channel-major, and zstd-19 codes the bytes in a magicless frame with no size or checksum.
"""

from __future__ import annotations

import numpy as np
import zstandard

from .container import FormatError

ZSTD_LEVEL = 19
ESCAPE = 255
MAX_SYMBOL = 1 << 20  # larger latent magnitudes never come out of a sane encoder
_FEED = 64  # input bytes fed per step, so each step's output stays small (zstd blocks reach 128 KiB)


def _compressor(size: int) -> zstandard.ZstdCompressor:
    params = zstandard.ZstdCompressionParameters.from_level(
        ZSTD_LEVEL,
        source_size=size,
        format=zstandard.FORMAT_ZSTD1_MAGICLESS,
        write_checksum=False,
        write_content_size=False,
        write_dict_id=False,
    )
    return zstandard.ZstdCompressor(compression_params=params)


def zstd_pack(raw: bytes) -> bytes:
    """Compress bytes into one magicless zstd frame."""
    return _compressor(len(raw)).compress(raw)


def zstd_unpack(frame: bytes, max_size: int, what: str) -> bytes:
    """Decompress exactly one frame that must fill `frame` and expand to at most `max_size` bytes."""
    obj = zstandard.ZstdDecompressor(format=zstandard.FORMAT_ZSTD1_MAGICLESS).decompressobj()
    out = bytearray()
    fed = 0
    try:
        while fed < len(frame) and not obj.eof:
            out += obj.decompress(frame[fed : fed + _FEED])
            fed += _FEED
            if len(out) > max_size:
                raise FormatError(f"{what} expands past the {max_size} bytes its header allows")
    except zstandard.ZstdError as e:
        raise FormatError(f"{what} is corrupt ({e})") from None
    if not obj.eof:
        raise FormatError(f"{what} is truncated")
    if obj.unused_data or fed < len(frame):
        raise FormatError(f"{what} is followed by trailing bytes")
    return bytes(out)


def encode_symbols(symbols: np.ndarray) -> bytes:
    """Integers (any shape, channel-major order) to a zstd frame."""
    flat = symbols.astype(np.int64).ravel()
    if np.abs(flat).max(initial=0) > MAX_SYMBOL:
        raise ValueError("latent value out of range; the weights are unsuitable for this image")
    zigzag = np.where(flat < 0, -2 * flat - 1, 2 * flat)
    head = np.minimum(zigzag, ESCAPE).astype(np.uint8)
    tail = zigzag[zigzag >= ESCAPE].astype("<u4")
    return zstd_pack(head.tobytes() + tail.tobytes())


def decode_symbols(frame: bytes, count: int) -> np.ndarray:
    """A zstd frame back to exactly `count` integers (int64)."""
    raw = zstd_unpack(frame, count * 5, "latent payload")
    head = np.frombuffer(raw[:count], dtype=np.uint8).astype(np.int64)
    if len(head) < count:
        raise FormatError(f"latent payload holds {len(head)} values, expected {count}")
    escapes = np.flatnonzero(head == ESCAPE)
    tail = raw[count:]
    if len(tail) != 4 * len(escapes):
        raise FormatError(f"latent payload has {len(tail)} escape bytes, expected {4 * len(escapes)}")
    zigzag = head
    zigzag[escapes] = np.frombuffer(tail, dtype="<u4")
    if zigzag.max(initial=0) > 2 * MAX_SYMBOL:
        raise FormatError("latent payload holds a value out of range")
    return np.where(zigzag & 1, -(zigzag + 1) // 2, zigzag // 2)
