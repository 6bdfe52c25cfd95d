"""cae-codec: a learned image codec built on a convolutional autoencoder.

data = cae_codec.compress(image, quality=6)   # PIL image, uint8 array or image file -> .cae bytes
image = cae_codec.decompress(data)            # .cae bytes, path or stream -> PIL image
"""

from importlib.metadata import PackageNotFoundError, version

from .codec import DEFAULT_MAX_PIXELS, compress, decompress, read_header
from .container import FormatError, Header
from .weights import WeightsError

try:
    __version__ = version("cae-codec")
except PackageNotFoundError:  # run from a checkout that was never installed
    __version__ = "0+unknown"

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "FormatError",
    "Header",
    "WeightsError",
    "compress",
    "decompress",
    "__version__",
    "read_header",
]
