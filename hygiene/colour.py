"""Decoded pixels -> upright 8-bit sRGB: EXIF orientation, bit depth, modes, ICC profiles."""
from __future__ import annotations

import functools
import hashlib
import io
import logging

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
