"""Metadata kept beside the pixels: the ICC colour profile, EXIF and XMP, byte for byte as they came
(EXIF with its orientation set upright, since the pixels are stored upright)."""

from __future__ import annotations

import struct
import warnings

from PIL import Image, PngImagePlugin

from .container import METADATA_KINDS, METADATA_MAX, FormatError


class InputWarning(UserWarning):
    """Something of the input that a .cae file does not keep."""


CHOICES = ("all", "none", *METADATA_KINDS)
EXIF_PREFIX = b"Exif\x00\x00"  # JPEG's APP1 marker text; the section holds the TIFF structure after it
ORIENTATION = 0x0112
XMP_TIFF_TAG = 700


def kinds(choice: str) -> frozenset[str]:
    """The kinds a --metadata choice keeps: "all", "none", or kinds joined by commas ("icc,exif")."""
    if not isinstance(choice, str):
        raise TypeError(f"metadata must be a string such as 'all' or 'icc,exif', not {type(choice).__name__}")
    names = [part.strip().lower() for part in choice.split(",")]
    if names == ["all"]:
        return frozenset(METADATA_KINDS)
    if names == ["none"]:
        return frozenset()
    if bad := [n for n in names if n not in METADATA_KINDS]:
        raise ValueError(f"metadata {', '.join(bad)!r} is not one of all, none, {', '.join(METADATA_KINDS)}")
    return frozenset(names)


def from_image(image: Image.Image, keep: frozenset[str]) -> dict[str, bytes]:
    """The sections of a PIL image's metadata that `keep` names and the image has."""
    found = {"icc": image.info.get("icc_profile"), "exif": _exif(image), "xmp": _xmp(image)}
    sections = {kind: data for kind, data in found.items() if kind in keep and data}
    if (total := sum(map(len, sections.values()))) > METADATA_MAX:
        raise ValueError(
            f"its metadata takes {total:,} bytes, over the {METADATA_MAX:,} a .cae file holds; "
            "--metadata (metadata=) can leave some out"
        )
    return sections


def _exif(image: Image.Image) -> bytes | None:
    """The image's EXIF as stored: byte for byte as it came, its orientation (if any) set upright,
    since the pixels are (upright). EXIF whose orientation cannot be found is kept as it came."""
    raw = image.info.get("exif")
    if not isinstance(raw, (bytes, bytearray)) or not raw:
        return None
    raw = bytes(raw).removeprefix(EXIF_PREFIX)
    found = _orientation_entry(raw)
    if found is None or found[1] == 1:
        return raw
    at, _, order = found
    return raw[:at] + struct.pack(order + "H", 1) + raw[at + 2 :]


def _orientation_entry(raw: bytes) -> tuple[int, int, str] | None:
    """Where IFD0's orientation value sits in a TIFF-structured EXIF block, the value, and the byte
    order: read directly, so EXIF that Pillow cannot parse elsewhere still gives its orientation."""
    if raw[:4] not in (b"II*\0", b"MM\0*"):
        return None
    order = "<" if raw[:2] == b"II" else ">"
    try:
        (ifd,) = struct.unpack_from(order + "I", raw, 4)
        (count,) = struct.unpack_from(order + "H", raw, ifd)
        for i in range(min(count, 1024)):
            entry = ifd + 2 + 12 * i
            tag, kind, n = struct.unpack_from(order + "HHI", raw, entry)
            if tag == ORIENTATION and kind == 3 and n == 1:  # one SHORT, stored in the entry
                return entry + 8, struct.unpack_from(order + "H", raw, entry + 8)[0], order
    except struct.error:
        pass
    return None


# Orientation 2-8 as the transposition that makes the pixels upright (EXIF 2.3, Pillow's exif_transpose).
TURNS = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def upright(image: Image.Image) -> Image.Image:
    """The image turned as its EXIF orientation says, its EXIF then saying upright; an image without
    one as it is. EXIF that Pillow cannot parse costs nothing: the orientation is read from the raw
    bytes where it can be, and a warning says when it cannot."""
    raw = image.info.get("exif")
    orientation = None
    if isinstance(raw, (bytes, bytearray)) and raw:
        found = _orientation_entry(bytes(raw).removeprefix(EXIF_PREFIX))
        orientation = found[1] if found else None
    if orientation is None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Pillow's own "Corrupt EXIF data" lines
                orientation = image.getexif().get(ORIENTATION, 1)
        except Exception:  # noqa: BLE001 (any parse failure of someone's EXIF)
            warnings.warn(
                "its EXIF could not be read, so its orientation is not applied", InputWarning, stacklevel=2
            )
            return image
    if orientation not in TURNS:
        return image
    turned = image.transpose(TURNS[orientation])
    turned.info = dict(image.info)
    if raw:
        turned.info["exif"] = EXIF_PREFIX + (_exif(image) or b"")
    return turned


def _xmp(image: Image.Image) -> bytes | None:
    xmp = image.info.get("xmp") or image.info.get("XML:com.adobe.xmp")
    return xmp.encode() if isinstance(xmp, str) else xmp or None


def pack_sections(found: dict[str, bytes]) -> dict[str, bytes]:
    """Each section as the file stores it: one magicless zstd frame (an XMP packet shrinks about 3x)."""
    from .packing import zstd_pack

    return {kind: zstd_pack(data) for kind, data in found.items()}


def unpack_sections(stored: dict[str, bytes]) -> dict[str, bytes]:
    """The sections' bytes from a file's frames; together at most METADATA_MAX, or FormatError."""
    from .packing import zstd_unpack

    found, left = {}, METADATA_MAX
    for kind, frame in stored.items():
        found[kind] = zstd_unpack(frame, left, f"{kind} section")
        if not found[kind]:
            raise FormatError(f"{kind} section is empty")
        left -= len(found[kind])
    return found


INFO_KEYS = {"icc": "icc_profile", "exif": "exif", "xmp": "xmp"}  # kind -> its key in Image.info


def to_info(sections: dict[str, bytes]) -> dict[str, bytes]:
    """The sections as Pillow names them in Image.info (EXIF with its JPEG prefix, as Pillow reads it)."""
    info = {}
    if "icc" in sections:
        info["icc_profile"] = sections["icc"]
    if "exif" in sections:
        info["exif"] = EXIF_PREFIX + sections["exif"]
    if "xmp" in sections:
        info["xmp"] = sections["xmp"]
    return info


# What each output format can hold, and how Pillow's save is told.
HOLDS = {
    "PNG": ("icc", "exif", "xmp"),
    "WEBP": ("icc", "exif", "xmp"),
    "JPEG": ("icc", "exif", "xmp"),
    "TIFF": ("icc", "exif", "xmp"),
}


# JPEG keeps EXIF and XMP in one APP1 segment each, of at most 65,535 bytes less its length field
# and name (Pillow writes no extended XMP).
JPEG_EXIF_MAX = 65_535 - 2 - len(EXIF_PREFIX)
JPEG_XMP_MAX = 65_535 - 2 - len(b"http://ns.adobe.com/xap/1.0/\0")


def save_options(fmt: str, image: Image.Image) -> tuple[dict, dict[str, str]]:
    """Keyword arguments that make Pillow's save write a decoded image's metadata in `fmt`, and the
    kinds it had that `fmt` cannot hold, each with the reason."""
    present = {kind for kind, key in INFO_KEYS.items() if image.info.get(key)}
    holds = HOLDS.get(fmt, ())
    dropped = {kind: f"{fmt} cannot hold it" for kind in sorted(present - set(holds))}
    options: dict = {}
    exif, xmp = image.info.get("exif"), image.info.get("xmp")
    if "icc" in present and "icc" in holds:
        options["icc_profile"] = image.info["icc_profile"]
    if fmt == "JPEG" and "exif" in present and len(exif) - len(EXIF_PREFIX) > JPEG_EXIF_MAX:
        dropped["exif"] = f"{len(exif):,} bytes, over JPEG's 64 KB a segment"
    elif "exif" in present and "exif" in holds:
        options["exif"] = exif
    if fmt == "JPEG" and "xmp" in present and len(xmp) > JPEG_XMP_MAX:
        dropped["xmp"] = f"{len(xmp):,} bytes, over JPEG's 64 KB a segment"
    elif "xmp" in present and "xmp" in holds:
        if fmt == "PNG":
            options["pnginfo"] = PngImagePlugin.PngInfo()
            options["pnginfo"].add_itxt("XML:com.adobe.xmp", xmp.decode("utf-8", "replace"))
        elif fmt != "TIFF":
            options["xmp"] = xmp
    if fmt == "TIFF" and (
        "exif" in options or "xmp" in options or ("xmp" in present and "xmp" not in dropped)
    ):
        # TIFF writes EXIF as tags of its own directory, so Pillow must parse it; XMP is one more tag.
        tags = Image.Exif()
        if "exif" in options:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    tags.load(options["exif"])
                    dict(tags)  # a lazy parse fails here, not halfway through the save
            except Exception:  # noqa: BLE001 (someone's EXIF that Pillow cannot parse)
                tags = Image.Exif()
                dropped["exif"] = "TIFF stores EXIF as parsed tags, and this EXIF cannot be parsed"
        if "xmp" in present and "xmp" not in dropped:
            tags[XMP_TIFF_TAG] = xmp
        options["exif"] = tags
    return options, dropped
