"""Reading and writing image files: the only module that knows about formats.

``load_image`` turns whatever a seller uploads (JPEG, PNG, WebP, HEIC/HEIF, GIF,
TIFF, BMP) into a fully decoded 8-bit sRGB ``PIL.Image`` in mode ``"RGB"``, or
``"RGBA"`` when the picture really has transparent pixels. Size guards run on
the header before any pixel is decoded, and every failure is an
``ImageLoadError`` whose ``str()`` is one line a person can read.

``encode_image`` / ``save_image_atomic`` write jpg, png or webp; the ``*_atomic``
helpers never leave a partial file behind (temp file in the target folder,
fsync, ``os.replace``).

No global Pillow state is changed here, except that the pillow-heif opener is
registered with Pillow the first time a HEIF file is met (that only adds a
format).
"""
from __future__ import annotations

import functools
import hashlib
import io
import logging
import os
import stat
import tempfile
import threading
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageCms, UnidentifiedImageError

from hygiene.config import LoadLimits, OutputConfig

__all__ = [
    "ImageLoadError",
    "UnreadableFileError",
    "EmptyFileError",
    "FileTooLargeError",
    "ImageTooLargeError",
    "ImageTooSmallError",
    "UnsupportedFormatError",
    "NotAnImageError",
    "CorruptImageError",
    "TruncatedImageError",
    "load_image",
    "sniff_format",
    "encode_image",
    "save_image_atomic",
    "write_bytes_atomic",
    "write_text_atomic",
    "output_suffix",
    "SUPPORTED_FORMATS",
]

log = logging.getLogger(__name__)

Source = str | os.PathLike | bytes | bytearray | memoryview | BinaryIO

#: What ``sniff_format`` can answer, and so what ``load_image`` accepts.
SUPPORTED_FORMATS: tuple[str, ...] = ("jpeg", "png", "webp", "heif", "gif", "tiff", "bmp")

# Pillow plugin names tried for each sniffed format (the bytes must agree with
# both the magic number and the decoder; no other plugin is ever tried).
_PIL_FORMATS: dict[str, tuple[str, ...]] = {
    "jpeg": ("JPEG",),  # the JPEG factory also returns MPO (multi-picture) files
    "png": ("PNG",),
    "webp": ("WEBP",),
    "heif": ("HEIF",),
    "gif": ("GIF",),
    "tiff": ("TIFF",),
    "bmp": ("BMP",),
}

_DEFAULT_LIMITS = LoadLimits()
_DEFAULT_OUTPUT = OutputConfig()


# --------------------------------------------------------------------------- errors


class ImageLoadError(ValueError):
    """An input that cannot become an image. ``str()`` is one line.

    ``code`` is a stable machine name of the kind of failure and ``http_status``
    what an HTTP API should answer (413 too many bytes, 415 not a supported
    image, 422 a broken or unusable image, including too many pixels).
    """

    code = "invalid_image"
    http_status = 422

    def __init__(self, message: str) -> None:
        super().__init__(_one_line(message))

    @property
    def reason(self) -> str:
        return str(self)


class UnreadableFileError(ImageLoadError):
    """The path does not exist, is a folder, or cannot be read."""

    code = "unreadable_file"
    http_status = 422


class EmptyFileError(ImageLoadError):
    code = "empty_file"
    http_status = 422


class FileTooLargeError(ImageLoadError):
    """More bytes than ``LoadLimits.max_bytes``."""

    code = "file_too_large"
    http_status = 413


class ImageTooLargeError(ImageLoadError):
    """More pixels than ``LoadLimits.max_pixels`` (decompression-bomb guard).

    422, not 413: the request itself may be a few hundred bytes.
    """

    code = "image_too_large"
    http_status = 422


class ImageTooSmallError(ImageLoadError):
    """A side shorter than ``LoadLimits.min_side``."""

    code = "image_too_small"
    http_status = 422


class UnsupportedFormatError(ImageLoadError):
    """An image format shelfready does not read (PSD, SVG, AVIF, ...)."""

    code = "unsupported_format"
    http_status = 415


class NotAnImageError(UnsupportedFormatError):
    """Text, HTML, PDF or unknown bytes."""

    code = "not_an_image"


class CorruptImageError(ImageLoadError):
    """The header says image, the data does not decode."""

    code = "corrupt_image"
    http_status = 422


class TruncatedImageError(CorruptImageError):
    code = "truncated_image"


def _one_line(text: str, limit: int = 240) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _fmt_bytes(n: int) -> str:
    if n >= 1024 * 1024:
        return f"{n / (1024 * 1024):.1f} MB"
    if n >= 1024:
        return f"{n / 1024:.1f} KB"
    return f"{n} bytes"


def _fmt_mp(pixels: int) -> str:
    mp = pixels / 1e6
    return f"{mp:.1f} MP" if mp >= 0.1 else f"{mp:.2g} MP"


# --------------------------------------------------------------------------- sniffing

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
    printable = sum(1 for b in head if 32 <= b <= 126 or b in (9, 10, 13))
    return printable / len(head) >= 0.9


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


# --------------------------------------------------------------------------- HEIF

_heif_lock = threading.Lock()
_heif_state: dict[str, object] = {}


def _ensure_heif() -> None:
    """Register pillow-heif's opener with Pillow, once, on first HEIF file."""
    if _heif_state.get("ok"):
        return
    with _heif_lock:
        if _heif_state.get("ok"):
            return
        try:
            import pillow_heif  # noqa: PLC0415 - deliberate lazy import
        except ImportError as e:  # pragma: no cover - pillow-heif is a dependency
            raise UnsupportedFormatError(
                "unsupported image format: HEIF (install pillow-heif to read HEIC/HEIF)"
            ) from e
        pillow_heif.register_heif_opener()
        _heif_state["ok"] = True


# --------------------------------------------------------------------------- reading


def _read_source(source: Source, limits: LoadLimits) -> bytes:
    max_bytes = limits.max_bytes
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if len(data) > max_bytes:
            raise FileTooLargeError(
                f"file too large: {_fmt_bytes(len(data))} exceeds the {_fmt_bytes(max_bytes)} limit"
            )
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        try:
            st = os.stat(path)
        except OSError as e:
            raise UnreadableFileError(f"cannot read file: {e.strerror or e}") from None
        if stat.S_ISDIR(st.st_mode):
            raise UnreadableFileError("cannot read file: it is a folder")
        if not stat.S_ISREG(st.st_mode):
            raise UnreadableFileError("cannot read file: not a regular file")
        if st.st_size > max_bytes:  # decided from stat, nothing is read
            raise FileTooLargeError(
                f"file too large: {_fmt_bytes(st.st_size)} exceeds the {_fmt_bytes(max_bytes)} limit"
            )
        try:
            with open(path, "rb") as f:
                data = f.read(max_bytes + 1)
        except OSError as e:
            raise UnreadableFileError(f"cannot read file: {e.strerror or e}") from None
        if len(data) > max_bytes:  # the file grew after stat
            raise FileTooLargeError(f"file too large: exceeds the {_fmt_bytes(max_bytes)} limit")
    elif hasattr(source, "read"):
        try:
            data = source.read(max_bytes + 1)
        except OSError as e:
            raise UnreadableFileError(f"cannot read file: {e.strerror or e}") from None
        if isinstance(data, str):
            raise TypeError("load_image needs a binary file object, got a text one")
        data = bytes(data)
        if len(data) > max_bytes:
            raise FileTooLargeError(f"file too large: exceeds the {_fmt_bytes(max_bytes)} limit")
    else:
        raise TypeError(f"load_image takes a path, bytes or a binary file, not {type(source).__name__}")
    if not data:
        raise EmptyFileError("empty file (0 bytes)")
    return data


def _check_size(width: int, height: int, limits: LoadLimits) -> None:
    pixels = width * height
    if pixels > limits.max_pixels:
        raise ImageTooLargeError(
            f"image too large: {width}x{height} = {_fmt_mp(pixels)} exceeds the "
            f"{_fmt_mp(limits.max_pixels)} limit"
        )
    if min(width, height) < limits.min_side:
        raise ImageTooSmallError(f"image too small: {width}x{height} (minimum {limits.min_side} px)")


def _header_size(data: bytes, fmt: str) -> tuple[int, int] | None:
    """Width and height from the header alone, bypassing Pillow's bomb check."""
    try:
        Image.init()
        factory, _accept = Image.OPEN[_PIL_FORMATS[fmt][0]]
        im = factory(io.BytesIO(data), "")
        size = im.size
        im.close()
        return size
    except Exception:  # noqa: BLE001
        return None


def _bomb_error(data: bytes, fmt: str, limits: LoadLimits, exc: Exception) -> ImageLoadError:
    size = _header_size(data, fmt)
    if size is not None:
        w, h = size
        if w * h > limits.max_pixels:
            return ImageTooLargeError(
                f"image too large: {w}x{h} = {_fmt_mp(w * h)} exceeds the {_fmt_mp(limits.max_pixels)} limit"
            )
        pil_limit = Image.MAX_IMAGE_PIXELS or 0
        if isinstance(exc, Image.DecompressionBombError):
            pil_limit *= 2
        return ImageTooLargeError(
            f"image too large: {w}x{h} = {_fmt_mp(w * h)} exceeds Pillow's "
            f"{_fmt_mp(pil_limit)} decompression-bomb limit"
        )
    return ImageTooLargeError(f"image too large: {exc}")


def load_image(source: Source, limits: LoadLimits = _DEFAULT_LIMITS) -> Image.Image:
    """Decode ``source`` (path, bytes or binary file) into an 8-bit sRGB image.

    The result is mode ``"RGB"``, or ``"RGBA"`` only when some pixel is not
    fully opaque; EXIF orientation is applied; it holds no file handle and no
    metadata (``info`` is empty). Animated files give their first frame.
    Raises ``ImageLoadError`` (one-line message, ``.code``, ``.http_status``).
    """
    data = _read_source(source, limits)
    fmt = sniff_format(data)
    if fmt is None:
        raise _not_an_image(data)
    if fmt == "heif":
        _ensure_heif()

    try:
        im = Image.open(io.BytesIO(data), formats=_PIL_FORMATS[fmt])
    except Exception as e:  # noqa: BLE001 - mapped to one-line reasons
        raise _decode_error(e, data, fmt, limits, None) from None
    try:
        _check_size(im.size[0], im.size[1], limits)  # header only: no pixel decoded yet
        try:
            im.load()
        except Exception as e:  # noqa: BLE001
            raise _decode_error(e, data, fmt, limits, im.size) from None
        try:
            return _finish(im)
        except MemoryError:
            raise ImageTooLargeError(f"image too large: out of memory converting {_dims(im.size)}") from None
        except Exception as e:  # noqa: BLE001 - a decoded image we cannot convert: say so, log the trace
            log.warning("cannot convert %s %s image", fmt, im.mode, exc_info=True)
            raise CorruptImageError(f"cannot convert {fmt.upper()} {im.mode} image: {e}") from None
    finally:
        im.close()


def _dims(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


def _decode_error(
    e: Exception, data: bytes, fmt: str, limits: LoadLimits, size: tuple[int, int] | None
) -> ImageLoadError:
    """One-line ImageLoadError for whatever Pillow or a plugin raised."""
    if isinstance(e, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        # Pillow refuses above 2x MAX_IMAGE_PIXELS inside open(), before we see
        # the size, and warns above 1x; the warning only arrives here if the
        # caller's warning filters turned it into an exception.
        return _bomb_error(data, fmt, limits, e)
    if isinstance(e, MemoryError):
        dims = f" {_dims(size)}" if size else ""
        return ImageTooLargeError(f"image too large: out of memory decoding{dims}")
    msg = str(e)
    low = msg.lower()
    if (
        isinstance(e, EOFError)
        or any(k in low for k in ("truncat", "end of file", "unexpected end"))
        or _truncation_hint(data, fmt)
    ):
        return TruncatedImageError("truncated image file")
    if isinstance(e, UnidentifiedImageError):
        return CorruptImageError(f"corrupt {fmt.upper()} image: cannot read the header")
    return CorruptImageError(f"corrupt {fmt.upper()} image: {msg or type(e).__name__}")


# --------------------------------------------------------------------------- pixels

_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}  # the table of ImageOps.exif_transpose


def _orientation(im: Image.Image) -> int:
    try:
        value = im.getexif().get(0x0112, 1)
        return int(value) if value in _TRANSPOSE else 1
    except Exception:  # noqa: BLE001 - broken EXIF never rejects a photo
        return 1


def _finish(im: Image.Image) -> Image.Image:
    """Loaded first frame -> RGB/RGBA sRGB, upright, detached, no metadata."""
    orientation = _orientation(im)
    icc = im.info.get("icc_profile") or None
    out = _to_8bit(im)
    if out.mode in ("LA", "RGBA") and out.getchannel("A").getextrema()[0] == 255:
        out = out.convert(out.mode[:-1])  # an alpha channel with nothing transparent
    out = _to_srgb(out, icc)
    if orientation != 1:
        out = out.transpose(_TRANSPOSE[orientation])
    if out is im:
        out = im.copy()  # a plain Image, not the ImageFile that read the bytes
    out.info = {}
    return out


def _scale_to_uint8(arr: np.ndarray) -> np.ndarray:
    """16-bit (or 32-bit int / float) samples to 8-bit by scaling, never clipping."""
    if arr.dtype.kind == "u" and arr.dtype.itemsize == 2:
        wide = arr.astype(np.uint32)
        return ((wide * 255 + 32767) // 65535).astype(np.uint8)
    if arr.dtype.kind == "f":
        a = np.nan_to_num(arr.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        top = float(a.max()) if a.size else 0.0
        if top <= 1.0:
            a = a * 255.0
        elif top > 255.0:
            a = a / 257.0
        return np.clip(np.rint(a), 0, 255).astype(np.uint8)
    a = arr.astype(np.int64)  # mode "I": 16-bit data held in 32-bit ints
    a = np.clip(a, 0, None)
    if a.size and int(a.max()) > 65535:
        return np.clip(np.rint(a / ((1 << 31) - 1) * 255.0), 0, 255).astype(np.uint8)
    return ((a * 255 + 32767) // 65535).astype(np.uint8)


def _to_8bit(im: Image.Image) -> Image.Image:
    """Any decoded mode -> one of L, LA, RGB, RGBA, CMYK, LAB (colour space untouched)."""
    mode = im.mode
    trns = im.info.get("transparency")
    if mode in ("L", "LA", "RGBA", "CMYK", "LAB"):
        if mode == "L" and isinstance(trns, int):
            arr = np.asarray(im)
            alpha = np.where(arr == trns, 0, 255).astype(np.uint8)
            return Image.merge("LA", (im, Image.fromarray(alpha)))
        return im
    if mode == "RGB":
        return im.convert("RGBA") if trns is not None else im
    if mode.startswith("I;16") or mode in ("I", "F"):
        arr = np.asarray(im)
        gray = Image.fromarray(_scale_to_uint8(arr))
        if isinstance(trns, int) and mode != "F":
            alpha = np.where(arr == trns, 0, 255).astype(np.uint8)
            return Image.merge("LA", (gray, Image.fromarray(alpha)))
        return gray
    if mode == "1":
        return im.convert("L")
    if mode in ("P", "PA"):
        return im.convert("RGBA") if im.has_transparency_data else im.convert("RGB")
    if mode in ("RGBa", "La"):
        return im.convert("RGBA")
    if mode in ("RGBX", "YCbCr", "HSV"):
        return im.convert("RGB")
    return im.convert("RGBA") if im.has_transparency_data else im.convert("RGB")


@functools.lru_cache(maxsize=1)
def _srgb_profile() -> ImageCms.ImageCmsProfile:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


@functools.lru_cache(maxsize=32)
def _icc_transform(icc: bytes | None, in_mode: str) -> ImageCms.ImageCmsTransform | None:
    """Transform from the embedded profile to sRGB, or None (identity / unusable)."""
    try:
        if icc is None:  # only for LAB, which has no device profile
            src = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB"))
        else:
            src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        transform = ImageCms.buildTransform(
            src, _srgb_profile(), in_mode, "RGB", renderingIntent=ImageCms.Intent.PERCEPTUAL
        )
    except Exception as e:  # noqa: BLE001 - a broken profile never rejects a photo
        digest = hashlib.sha1(icc).hexdigest()[:8] if icc else "lab"
        log.debug("ignoring unusable ICC profile %s for %s: %s", digest, in_mode, e)
        return None
    if in_mode in ("RGB", "L"):
        # Most embedded profiles are sRGB under one name or another: measure
        # instead of trusting names, and skip the transform when it is a no-op.
        if in_mode == "RGB":
            g = np.linspace(0, 255, 16).round().astype(np.uint8)
            probe = np.stack(np.meshgrid(g, g, g, indexing="ij"), axis=-1).reshape(64, 64, 3)
            expected = probe
        else:
            probe = np.arange(256, dtype=np.uint8).reshape(16, 16)
            expected = np.repeat(probe[..., None], 3, axis=-1)
        got = np.asarray(ImageCms.applyTransform(Image.fromarray(probe), transform))
        if int(np.abs(got.astype(np.int16) - expected.astype(np.int16)).max()) <= 2:
            return None
    return transform


def _to_srgb(im: Image.Image, icc: bytes | None) -> Image.Image:
    """L/LA/RGB/RGBA/CMYK/LAB -> RGB or RGBA in sRGB, using the ICC profile if any."""
    mode = im.mode
    alpha = None
    base = im
    if mode in ("LA", "RGBA"):
        alpha = im.getchannel("A")
        base = im.convert("L" if mode == "LA" else "RGB")
    transform = None
    if base.mode == "LAB":
        transform = _icc_transform(None, "LAB")
    elif icc is not None and base.mode in ("L", "RGB", "CMYK"):
        transform = _icc_transform(bytes(icc), base.mode)
    if transform is not None:
        try:
            rgb = ImageCms.applyTransform(base, transform)
        except Exception as e:  # noqa: BLE001
            log.debug("ICC transform failed, using plain conversion: %s", e)
            rgb = base.convert("RGB")
    elif base.mode == "RGB":
        rgb = base
    else:
        rgb = base.convert("RGB")
    if alpha is not None:
        rgb.putalpha(alpha)  # rgb is a new image here (base was split from im)
    return rgb


# --------------------------------------------------------------------------- writing

_SUFFIX = {"jpg": ".jpg", "png": ".png", "webp": ".webp"}


def _fmt_name(fmt: OutputConfig | str) -> str:
    name = fmt.format if isinstance(fmt, OutputConfig) else str(fmt).lower().lstrip(".")
    name = {"jpeg": "jpg"}.get(name, name)
    if name not in _SUFFIX:
        raise ValueError(f"format must be jpg, png or webp, got {name!r}")
    return name


def output_suffix(fmt: OutputConfig | str) -> str:
    """".jpg", ".png" or ".webp" for an ``OutputConfig`` or a format name."""
    return _SUFFIX[_fmt_name(fmt)]


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        image.mode == "P" and "transparency" in image.info
    )


def encode_image(image: Image.Image, fmt: OutputConfig | str = _DEFAULT_OUTPUT) -> bytes:
    """The bytes of ``image`` as jpg (RGB), png or webp; no EXIF, no ICC (pixels are sRGB).

    A transparent (RGBA) image cannot be jpg: ValueError, use png or webp.
    """
    cfg = fmt if isinstance(fmt, OutputConfig) else OutputConfig(format=_fmt_name(fmt))
    name = _fmt_name(cfg)
    buf = io.BytesIO()
    if name == "jpg":
        if _has_alpha(image):
            raise ValueError(
                f"cannot write a {image.mode} image as jpg: transparency needs png or webp output"
            )
        im = image if image.mode == "RGB" else _to_srgb(_to_8bit(image), None)
        im.save(buf, "JPEG", quality=cfg.jpeg_quality, optimize=False, progressive=False)
    elif name == "png":
        im = image if image.mode in ("RGB", "RGBA", "L", "LA") else _to_srgb(_to_8bit(image), None)
        im.save(buf, "PNG", compress_level=6, optimize=False, icc_profile=None)
    else:
        im = image if image.mode in ("RGB", "RGBA") else _to_srgb(_to_8bit(image), None)
        im.save(buf, "WEBP", quality=cfg.webp_quality, method=4)
    return buf.getvalue()


def _current_umask() -> int:
    try:  # Linux: read it without the racy os.umask() set-and-restore
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` all-or-nothing; returns the path.

    The bytes go to a hidden temp file in the same folder, are fsynced, then
    ``os.replace``d over ``path``. On any error the temp file is removed and
    an existing ``path`` is left as it was. Missing parent folders are created.
    """
    target = Path(path)
    folder = target.parent
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{target.name}.", suffix=".tmp")
    try:
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fchmod(fd, 0o666 & ~_current_umask())  # mkstemp makes 0600
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:  # make the rename itself durable; best effort
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass
    return target


def write_text_atomic(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """``write_bytes_atomic`` for text."""
    return write_bytes_atomic(path, text.encode(encoding))


def save_image_atomic(
    image: Image.Image, path: str | os.PathLike, fmt: OutputConfig | str = _DEFAULT_OUTPUT
) -> Path:
    """Encode ``image`` (see ``encode_image``) and write it with ``write_bytes_atomic``.

    Encoding happens in memory first, so a failing encode writes nothing.
    """
    return write_bytes_atomic(path, encode_image(image, fmt))
