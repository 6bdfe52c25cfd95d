"""A Pillow plugin: after `import cae_codec.pillow`, Image.open reads .cae files and save writes them.

im = Image.open("photo.cae")        # size and mode from the header, the only part read yet
im.load()                           # decodes (with the shipped weights the file names)
im.save("copy.cae", quality=80)     # 0-100; also coder=, weights=, metadata="all" | "none" | "icc,exif",
                                    # and exif=, icc_profile=, xmp= as Pillow's other writers take them
"""

from __future__ import annotations

import io
from typing import IO

from PIL import Image, ImageFile

from .container import HEADER_MAX, MAGIC, FormatError, header_size, peek_header, read_limited, read_metadata
from .metadata import to_info, unpack_sections
from .quality import of_header

FORMAT = "CAE"
EXTENSION = ".cae"
MIME = "image/x-cae"


def _accept(prefix: bytes) -> bool:
    return len(prefix) >= 2 and prefix[0] == MAGIC >> 4 and prefix[1] >> 4 == MAGIC & 0xF


class CaeImageFile(ImageFile.ImageFile):
    """A .cae file: the header is read and checked on open; load() reads the rest, checks it and decodes."""

    format = FORMAT
    format_description = "cae-codec learned image"

    def _open(self) -> None:
        self._start = self.fp.tell()
        try:
            prefix = self.fp.read(HEADER_MAX)
            header = peek_header(prefix)  # the image is read by load()
            if header.metadata:  # shown from open on, as Pillow's own formats do; checked by load()
                self.fp.seek(self._start + header_size(prefix))
                self.info.update(to_info(unpack_sections(read_metadata(self.fp))))
        except FormatError as e:
            raise SyntaxError(f"not a valid .cae file: {e}") from None
        self._size = (header.width, header.height)
        self._mode = header.mode
        self.info["quality"] = of_header(header)  # 0-100; None for a user-trained bundle
        self.info["level"] = header.position
        self.info["coder"] = header.coder
        self.info["weights_id"] = header.weights_id
        self._pending = True
        self.tile = []

    def load(self):
        if self._pending:
            from .codec import decompress  # torch is imported only when a .cae image is decoded

            try:
                self.fp.seek(self._start)
                image = decompress(read_limited(self.fp))
            except Exception as e:  # weights missing or damaged, a corrupt payload: Pillow's OSError
                raise OSError(f"cannot decode .cae image: {e}") from None
            self._pending = False
            if self._exclusive_fp:  # opened by name: the file is ours to close
                self.fp.close()
            self.fp = io.BytesIO(image.tobytes())
            self.tile = [("raw", (0, 0, *self.size), 0, self.mode)]
        return super().load()


def _save(im: Image.Image, fp: IO[bytes], filename: str | bytes) -> None:
    from .codec import AUTO, compress

    options = im.encoderinfo
    # exif=, icc_profile= and xmp= as Pillow's own writers take them: they replace what the image
    # carries (exif may be an Image.Exif, as Pillow's writers accept).
    given = {key: options[key] for key in ("exif", "icc_profile", "xmp") if options.get(key) is not None}
    if given:
        if isinstance(given.get("exif"), Image.Exif):
            given["exif"] = given["exif"].tobytes()
        if isinstance(given.get("xmp"), str):
            given["xmp"] = given["xmp"].encode()
        im = im.copy()
        im.info.update(given)
    try:
        data = compress(
            im,
            quality=options.get("quality"),
            weights=options.get("weights"),
            coder=options.get("coder", AUTO),
            metadata=options.get("metadata", "all"),
        )
    except (TypeError, ValueError) as e:
        raise ValueError(f"cannot write .cae: {e}") from None
    fp.write(data)


Image.register_open(FORMAT, CaeImageFile, _accept)
Image.register_save(FORMAT, _save)
Image.register_extension(FORMAT, EXTENSION)
Image.register_mime(FORMAT, MIME)
