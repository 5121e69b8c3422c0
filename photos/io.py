"""Reading and writing image files: the only module that knows about formats.

``load_image`` turns whatever a seller uploads (JPEG, PNG, WebP, HEIC/HEIF, GIF,
TIFF, BMP) into a fully decoded 8-bit sRGB ``PIL.Image`` in mode ``"RGB"``, or
``"RGBA"`` when the picture really has transparent pixels. Size guards run on
the header before any pixel is decoded, and every failure is an
``ImageLoadError`` whose ``str()`` is one line a person can read.

``encode_image`` / ``save_image_atomic`` write jpg, png or webp; the ``*_atomic``
helpers never leave a partial file behind (temp file in the target folder,
fsync, ``os.replace``). This module is the entry point; the work is split into
load_errors.py (the error types), sniff.py (format from magic numbers),
colour.py (pixels to upright 8-bit sRGB) and save.py (encoding, atomic writes).

No global Pillow state is changed here, except that the pillow-heif opener is
registered with Pillow the first time a HEIF file is met (that only adds a
format).
"""
from __future__ import annotations

import io
import logging
import os
import stat
import threading
from pathlib import Path
from typing import BinaryIO

from PIL import Image, UnidentifiedImageError

from photos.colour import _finish, fit_size
from photos.config import LoadLimits
from photos.load_errors import (
    CorruptImageError,
    EmptyFileError,
    FileTooLargeError,
    ImageLoadError,
    ImageTooLargeError,
    ImageTooSmallError,
    NotAnImageError,
    TruncatedImageError,
    UnreadableFileError,
    UnsupportedFormatError,
    _fmt_bytes,
    _fmt_mp,
)
from photos.save import encode_image, output_suffix, save_image_atomic, write_bytes_atomic, write_text_atomic
from photos.sniff import _not_an_image, _truncation_hint, sniff_format

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


def load_image(
    source: Source,
    limits: LoadLimits = _DEFAULT_LIMITS,
    *,
    fit_pixels: int | None = None,
    max_decode_bytes: int | None = None,
) -> Image.Image:
    """Decode ``source`` (path, bytes or binary file) into an 8-bit sRGB image.

    The result is mode ``"RGB"``, or ``"RGBA"`` only when some pixel is not
    fully opaque; EXIF orientation is applied; it holds no file handle and no
    metadata (``info`` is empty). Animated files give their first frame.
    Raises ``ImageLoadError`` (one-line message, ``.code``, ``.http_status``).

    Memory bounds (both off by default; the HTTP API sets them per request):
    ``fit_pixels`` shrinks a bigger picture to at most that many pixels, a JPEG
    already while decoding (at 1/2, 1/4 or 1/8 scale), other formats right after
    decoding, strip by strip. ``max_decode_bytes`` refuses, from the header and
    before any pixel is decoded, a picture whose decoding would need more
    (``ImageTooLargeError``).
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
        if fit_pixels is not None and fmt == "jpeg" and im.size[0] * im.size[1] > fit_pixels:
            im.draft(None, fit_size(im.size[0], im.size[1], fit_pixels))  # DCT scaling, >= the size asked
        if max_decode_bytes is not None:
            need = decode_bytes(im.mode, im.size)
            if need > max_decode_bytes:
                raise ImageTooLargeError(
                    f"image too large for this server's memory: decoding {_dims(im.size)} {im.mode} "
                    f"needs {_fmt_bytes(need)}, the limit is {_fmt_bytes(max_decode_bytes)}")
        try:
            im.load()
        except Exception as e:  # noqa: BLE001
            raise _decode_error(e, data, fmt, limits, im.size) from None
        del data  # the encoded bytes are no longer needed (the caller may still hold them)
        try:
            return _finish(im, fit_pixels)
        except MemoryError:
            raise ImageTooLargeError(f"image too large: out of memory converting {_dims(im.size)}") from None
        except Exception as e:  # noqa: BLE001 - a decoded image we cannot convert: say so, log the trace
            log.warning("cannot convert %s %s image", fmt, im.mode, exc_info=True)
            raise CorruptImageError(f"cannot convert {fmt.upper()} {im.mode} image: {e}") from None
    finally:
        im.close()


def decode_bytes(mode: str, size: tuple[int, int]) -> int:
    """Peak bytes of decoding a ``mode`` image of ``size`` and making it 8-bit.

    Pillow keeps 1-byte modes (1, L, P) in 1 byte, I;16 in 2 and every other
    mode in 4 bytes a pixel; modes that need a full-size conversion (palette,
    YCbCr, ...) count twice.
    """
    pixels = size[0] * size[1]
    if mode in ("1", "L", "P"):
        per = 1
    elif mode.startswith("I;16"):
        per = 2
    else:
        per = 4
    direct = mode in ("L", "LA", "RGB", "RGBA", "CMYK", "LAB", "I", "F") or mode.startswith("I;16")
    return pixels * per + (0 if direct else pixels * 4)


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
