"""Helpers of the mask tests: a photo as the remover sees it, and the IoU of two alpha masks."""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps


def load_rgb(path) -> Image.Image:
    """The photo at ``path``, EXIF-rotated, as RGB."""
    with Image.open(path) as im:
        return ImageOps.exif_transpose(im).convert("RGB")


def mask_iou(a: np.ndarray, b: np.ndarray, thr: int = 128) -> float:
    """IoU of two uint8 alpha masks thresholded at ``thr`` (1.0 when both are empty)."""
    a, b = a >= thr, b >= thr
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)
