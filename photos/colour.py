"""Decoded pixels -> upright 8-bit sRGB: EXIF orientation, bit depth, modes, ICC profiles."""
from __future__ import annotations

import functools
import hashlib
import io
import logging
import math

import numpy as np
from PIL import Image, ImageCms

log = logging.getLogger(__name__)

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


def _finish(im: Image.Image, fit_pixels: int | None = None) -> Image.Image:
    """Loaded first frame -> RGB/RGBA sRGB, upright, detached, no metadata.

    With ``fit_pixels``, a bigger picture is shrunk to fit right after its
    conversion to 8 bits, before any other full-size copy is made, and ``im``
    is closed (its pixels freed) as soon as it is no longer needed.
    """
    orientation = _orientation(im)
    icc = im.info.get("icc_profile") or None
    out = _to_8bit(im)
    if fit_pixels is not None and out.width * out.height > fit_pixels:
        small = shrink_to_fit(out, fit_pixels)
        if out is not im:
            out.close()
        im.close()  # frees the full-size pixels now, not when the caller lets go
        out = small
    if out.mode in ("LA", "RGBA") and out.getchannel("A").getextrema()[0] == 255:
        out = out.convert(out.mode[:-1])  # an alpha channel with nothing transparent
    out = _to_srgb(out, icc)
    if orientation != 1:
        out = out.transpose(_TRANSPOSE[orientation])
    if out is im:
        out = im.copy()  # a plain Image, not the ImageFile that read the bytes
    out.info = {}
    return out


def fit_size(width: int, height: int, max_pixels: int) -> tuple[int, int]:
    """The largest size of the same aspect ratio with at most ``max_pixels`` pixels."""
    if width * height <= max_pixels:
        return width, height
    scale = math.sqrt(max_pixels / (width * height))
    w, h = max(1, int(width * scale)), max(1, int(height * scale))
    while w * h > max_pixels:  # float rounding
        w, h = max(1, w - 1), max(1, h - 1)
    return w, h


_PREMULTIPLIED = {"RGBA": "RGBa", "LA": "La"}
_STRIP_PIXELS = 1 << 20  # ~1 MP of source per strip: a strip's copies stay small


def shrink_to_fit(im: Image.Image, max_pixels: int) -> Image.Image:
    """An 8-bit image (L, LA, RGB, RGBA, CMYK, LAB) shrunk to at most ``max_pixels`` pixels.

    Lanczos, with alpha premultiplied like ``Image.resize``, computed strip by
    strip: each band of output rows is resampled from its own source rows plus
    the filter's margin, so no full-size copy of the picture is ever made.
    """
    tw, th = fit_size(im.width, im.height, max_pixels)
    if (tw, th) == im.size:
        return im
    work = _PREMULTIPLIED.get(im.mode, im.mode)
    scale = im.height / th
    margin = math.ceil(3 * scale) + 2  # Lanczos support is 3 output pixels
    out = Image.new(work, (tw, th))
    step = max(1, int(_STRIP_PIXELS // (im.width * scale)))
    for oy in range(0, th, step):
        oy1 = min(th, oy + step)
        y0, y1 = oy * scale, oy1 * scale
        top, bottom = max(0, math.floor(y0) - margin), min(im.height, math.ceil(y1) + margin)
        part = im.crop((0, top, im.width, bottom))
        if work != im.mode:
            part = part.convert(work)
        part = part.resize((tw, oy1 - oy), Image.Resampling.LANCZOS,
                           box=(0, y0 - top, im.width, y1 - top))
        out.paste(part, (0, oy))
        del part
    return out.convert(im.mode) if work != im.mode else out


def _scale_to_uint8(arr: np.ndarray, top: float) -> np.ndarray:
    """16-bit (or 32-bit int / float) samples to 8-bit by scaling, never clipping.

    ``top`` is the largest sample of the whole image (so strips scale alike).
    """
    if arr.dtype.kind == "u" and arr.dtype.itemsize == 2:
        wide = arr.astype(np.uint32)
        wide *= 255
        wide += 32767
        wide //= 65535
        return wide.astype(np.uint8)
    if arr.dtype.kind == "f":
        a = np.nan_to_num(arr.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        if top <= 1.0:
            a *= 255.0
        elif top > 255.0:
            a /= 257.0
        return np.clip(np.rint(a), 0, 255).astype(np.uint8)
    a = np.clip(arr.astype(np.int64), 0, None)  # mode "I": 16-bit data held in 32-bit ints
    if top > 65535:
        return np.clip(np.rint(a / ((1 << 31) - 1) * 255.0), 0, 255).astype(np.uint8)
    a *= 255
    a += 32767
    a //= 65535
    return a.astype(np.uint8)


def _top(im: Image.Image) -> float:
    """Largest finite sample of a mode I/I;16/F image, without a full-size copy."""
    if im.mode.startswith("I;16"):
        return 65535.0  # scaled by the 16-bit range, whatever the samples
    if im.mode != "F":
        return float(im.getextrema()[1])
    top = 0.0
    for part in _strips(im):
        a = np.asarray(part)
        finite = a[np.isfinite(a)]
        if finite.size:
            top = max(top, float(finite.max()))
    return top


def _strips(im: Image.Image):
    rows = max(1, _STRIP_PIXELS // max(1, im.width))
    for y in range(0, im.height, rows):
        yield im.crop((0, y, im.width, min(im.height, y + rows)))


def _wide_to_8bit(im: Image.Image, trns) -> Image.Image:
    """I;16 / I / F -> L (or LA with a transparent grey value), converted strip by strip."""
    top = _top(im)
    gray = np.empty((im.height, im.width), np.uint8)
    alpha = np.empty_like(gray) if isinstance(trns, int) and im.mode != "F" else None
    y = 0
    for part in _strips(im):
        arr = np.asarray(part)
        gray[y:y + arr.shape[0]] = _scale_to_uint8(arr, top)
        if alpha is not None:
            alpha[y:y + arr.shape[0]] = np.where(arr == trns, 0, 255)
        y += arr.shape[0]
    if alpha is None:
        return Image.fromarray(gray)
    return Image.merge("LA", (Image.fromarray(gray), Image.fromarray(alpha)))


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
        return _wide_to_8bit(im, trns)
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
