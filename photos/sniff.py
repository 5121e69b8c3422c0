"""Which image format some bytes are, from their magic number; why bytes are not an image.

Used by ``photos.io.load_image`` before any decoder runs, and by the API to
reject a non-image upload early.
"""
from __future__ import annotations

import io

from PIL import Image

from photos.load_errors import ImageLoadError, NotAnImageError, UnsupportedFormatError

_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs"}
_HEIF_GENERIC_BRANDS = {b"mif1", b"msf1"}
_AVIF_BRANDS = {b"avif", b"avis"}
_BMP_DIB_SIZES = {12, 16, 40, 52, 56, 64, 108, 124}


def _heif_brands(data: bytes) -> list[bytes] | None:
    """Brands of an ISO-BMFF ``ftyp`` box at the start, or None."""
    if len(data) < 12 or data[4:8] != b"ftyp":
        return None
    box = int.from_bytes(data[0:4], "big")
    end = min(len(data), box if 16 <= box <= 4096 else 16)
    brands = [data[8:12]]
    brands += [data[i : i + 4] for i in range(16, end - 3, 4)]
    return brands


def sniff_format(data: bytes) -> str | None:
    """The image format of ``data`` from its magic number, never from a file name.

    Returns one of ``SUPPORTED_FORMATS`` ("jpeg", "png", "webp", "heif", "gif",
    "tiff", "bmp") or None (not an image, or a format shelfready does not read).
    """
    head = bytes(data[:64])
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if head[:2] == b"BM" and len(head) >= 18 and int.from_bytes(head[14:18], "little") in _BMP_DIB_SIZES:
        return "bmp"
    brands = _heif_brands(bytes(data[:4096]))
    if brands:
        if any(b in _HEIF_BRANDS for b in brands):
            return "heif"
        if any(b in _HEIF_GENERIC_BRANDS for b in brands) and not any(b in _AVIF_BRANDS for b in brands):
            return "heif"
        return None
    return _pil_sniff(data) if len(data) >= 8 else None


# Pillow's format names -> ours (MPO: multi-picture JPEG, opened by the JPEG plugin)
_PIL_NAMES = {"JPEG": "jpeg", "MPO": "jpeg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "TIFF": "tiff", "BMP": "bmp"}


def _pil_sniff(data: bytes) -> str | None:
    """Second opinion from Pillow's own header parsers (supported formats only)."""
    try:
        with Image.open(io.BytesIO(bytes(data)), formats=("JPEG", "PNG", "WEBP", "GIF", "TIFF", "BMP")) as im:
            return _PIL_NAMES.get(im.format or "")
    except Exception:  # noqa: BLE001 - "not identified"
        return None


def _looks_like_text(head: bytes) -> bool:
    if not head or b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
        return True
    except UnicodeDecodeError as e:
        if e.start >= len(head) - 3 and e.reason == "unexpected end of data":
            return True  # a multi-byte character cut by the sample
    utf8_text = sum(1 for b in head if 32 <= b <= 126 or b in (9, 10, 13))
    return utf8_text / len(head) >= 0.9


def _pil_identify(data: bytes) -> str | None:
    """Name of a format Pillow recognises but shelfready does not accept."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.format
    except Exception:  # noqa: BLE001 - any failure means "not identified"
        return None


def _not_an_image(data: bytes) -> ImageLoadError:
    head = bytes(data[:4096])
    low = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if head.startswith(b"%PDF"):
        return NotAnImageError("not an image (looks like a PDF document)")
    if low.startswith((b"<svg", b"<?xml")) and b"<svg" in low[:2048]:
        return UnsupportedFormatError("unsupported image format: SVG (vector images are not supported)")
    if low.startswith(b"<!doctype html") or b"<html" in low[:1024]:
        return NotAnImageError("not an image (looks like an HTML page)")
    brands = _heif_brands(head)
    if brands and any(b in _AVIF_BRANDS for b in brands):
        return UnsupportedFormatError("unsupported image format: AVIF")
    if _looks_like_text(head):
        return NotAnImageError("not an image (looks like text)")
    name = _pil_identify(bytes(data))
    if name:
        return UnsupportedFormatError(f"unsupported image format: {name}")
    return NotAnImageError("not an image (unrecognised file format)")


def _truncation_hint(data: bytes, fmt: str) -> bool:
    """True when the container itself says bytes are missing at the end."""
    tail = data[-64:].rstrip(b"\x00")
    if fmt == "jpeg":
        return b"\xff\xd9" not in data[-1024:]
    if fmt == "png":
        return b"IEND" not in tail
    if fmt == "webp":
        return len(data) < int.from_bytes(data[4:8], "little") + 8
    if fmt == "gif":
        return not tail.endswith(b";")
    if fmt == "heif":  # walk the top-level ISO-BMFF boxes: does one run past the end?
        pos = 0
        while pos + 8 <= len(data):
            size = int.from_bytes(data[pos : pos + 4], "big")
            if size == 1 and pos + 16 <= len(data):
                size = int.from_bytes(data[pos + 8 : pos + 16], "big")
            elif size == 0:  # box runs to the end of the file
                return False
            if size < 8:
                return False
            pos += size
        return pos != len(data)
    if fmt == "tiff":  # first IFD beyond the end of the data
        order = "little" if data[:2] == b"II" else "big"
        if data[2:4] in (b"+\x00", b"\x00+"):  # BigTIFF: 8-byte offset
            return len(data) < 16 or int.from_bytes(data[8:16], order) >= len(data)
        return len(data) < 8 or int.from_bytes(data[4:8], order) >= len(data)
    return len(data) < 64
