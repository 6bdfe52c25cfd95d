"""cae-codec: a learned image codec built on a convolutional autoencoder.

data = cae_codec.compress(image, quality=6)   # PIL image or uint8 array -> .cae bytes
image = cae_codec.decompress(data)            # .cae bytes -> PIL image
"""

from .codec import DEFAULT_MAX_PIXELS, compress, decompress, read_header
from .container import FormatError, Header
from .weights import WeightsError

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "FormatError",
    "Header",
    "WeightsError",
    "compress",
    "decompress",
    "read_header",
]
