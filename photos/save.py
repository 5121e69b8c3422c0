"""Encoding images (jpg, png, webp) and writing files all-or-nothing.

The ``*_atomic`` helpers never leave a partial file behind: temp file in the
target folder, fsync, ``os.replace``.
"""
from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

from PIL import Image

from photos.colour import _to_8bit, _to_srgb
from photos.config import OutputConfig

_DEFAULT_OUTPUT = OutputConfig()

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
        if cfg.webp_lossless:
            im.save(buf, "WEBP", lossless=True, quality=0, method=0)
        else:
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
