"""cae-codec: a learned image codec built on a convolutional autoencoder.

data = cae_codec.compress(image, quality=6)   # PIL image, uint8 array or image file -> .cae bytes
image = cae_codec.decompress(data)            # .cae bytes, path or stream -> PIL image
"""

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("cae-codec")
except PackageNotFoundError:  # run from a checkout that was never installed
    __version__ = "0+unknown"

# Imported on first use, so that `import cae_codec.cli` (and `cae-codec --help`) does not load torch.
_HOMES = {
    "compress": "codec",
    "decompress": "codec",
    "compress_many": "codec",
    "decompress_many": "codec",
    "read_header": "codec",
    "DEFAULT_MAX_PIXELS": "config",
    "FormatError": "container",
    "Header": "container",
    "WeightsError": "weights",
}


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{_HOMES[name]}", __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "DEFAULT_MAX_PIXELS",
    "FormatError",
    "Header",
    "WeightsError",
    "compress",
    "decompress",
    "compress_many",
    "decompress_many",
    "__version__",
    "read_header",
]
