"""The typed, one-line errors of image loading (``photos.io`` re-exports them).

Each carries ``.code`` (a stable name for reports and the API) and
``.http_status``; ``str()`` is one line a person can read.
"""
from __future__ import annotations


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


class UnreadableFileError(ImageLoadError):
    """The path does not exist, is a folder, or cannot be read."""

    code = "unreadable_file"


class EmptyFileError(ImageLoadError):
    code = "empty_file"


class FileTooLargeError(ImageLoadError):
    """More bytes than ``LoadLimits.max_bytes``."""

    code = "file_too_large"
    http_status = 413


class ImageTooLargeError(ImageLoadError):
    """More pixels than ``LoadLimits.max_pixels`` (decompression-bomb guard).

    422, not 413: the request itself may be a few hundred bytes.
    """

    code = "image_too_large"


class ImageTooSmallError(ImageLoadError):
    """A side shorter than ``LoadLimits.min_side``."""

    code = "image_too_small"


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
