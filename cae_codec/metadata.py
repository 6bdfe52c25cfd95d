"""Metadata kept beside the pixels: the ICC colour profile, EXIF and XMP, byte for byte as they came
(EXIF with its orientation set upright, since the pixels are stored upright)."""

from __future__ import annotations

from PIL import Image, PngImagePlugin

from .container import METADATA_KINDS, METADATA_MAX, FormatError

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
    raw = image.info.get("exif")
    if not isinstance(raw, (bytes, bytearray)) or not raw:
        return None
    raw = bytes(raw).removeprefix(EXIF_PREFIX)
    exif = Image.Exif()
    try:
        exif.load(raw)
    except Exception:  # noqa: BLE001 (EXIF that Pillow cannot parse is kept as it came)
        return raw
    if exif.get(ORIENTATION, 1) == 1:
        return raw
    exif[ORIENTATION] = 1  # the pixels were turned upright as they were read
    return exif.tobytes().removeprefix(EXIF_PREFIX)


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


def save_options(fmt: str, image: Image.Image) -> tuple[dict, list[str]]:
    """Keyword arguments that make Pillow's save write a decoded image's metadata in `fmt`, and the
    kinds it had that `fmt` cannot hold."""
    present = {kind for kind, key in INFO_KEYS.items() if image.info.get(key)}
    holds = HOLDS.get(fmt, ())
    options: dict = {}
    if "icc" in present and "icc" in holds:
        options["icc_profile"] = image.info["icc_profile"]
    if "exif" in present and "exif" in holds:
        options["exif"] = image.info["exif"]
    if "xmp" in present and "xmp" in holds:
        xmp = image.info["xmp"]
        if fmt == "PNG":
            options["pnginfo"] = PngImagePlugin.PngInfo()
            options["pnginfo"].add_itxt("XML:com.adobe.xmp", xmp.decode("utf-8", "replace"))
        elif fmt == "TIFF":  # XMP is a tag of the TIFF's own directory, beside EXIF's
            tags = Image.Exif()
            if "exif" in options:
                tags.load(options["exif"])
            tags[XMP_TIFF_TAG] = xmp
            options["exif"] = tags
        else:
            options["xmp"] = xmp
    return options, sorted(present - set(holds))
