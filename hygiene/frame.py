"""Product box -> square canvas where the product fills a set share, centred.

The canvas keeps the marketplace composition rule (the product's longer side
is ``fill`` of the canvas side). When a photo is too small to reach the preset
size without enlarging the product more than ``max_upscale``, the canvas is
made smaller instead and the layout says so (``upscale_limited``), so the size
check flags it rather than shipping a blurry enlargement.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive)


def product_box(alpha: np.ndarray, threshold: int) -> Box | None:
    """Tight box of alpha >= threshold, or None when nothing is there."""
    ys, xs = np.nonzero(alpha >= threshold)
    if xs.size == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


@dataclass(frozen=True)
class Layout:
    box: Box  # product box in the source photo
    scale: float  # source px -> canvas px
    canvas: int  # side of the square canvas
    placed: Box  # product box on the canvas
    upscale_limited: bool

    @property
    def fill(self) -> float:
        x0, y0, x1, y1 = self.placed
        return max(x1 - x0, y1 - y0) / self.canvas


def plan(box: Box, size: int, fill: float, max_upscale: float) -> Layout:
    """Scale and placement that make the product's longer side ``fill * size``."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    longer = max(w, h)
    scale = fill * size / longer
    canvas = size
    limited = scale > max_upscale
    if limited:
        scale = max_upscale
        canvas = max(1, round(longer * scale / fill))
    pw, ph = max(1, round(w * scale)), max(1, round(h * scale))
    px, py = (canvas - pw) // 2, (canvas - ph) // 2
    return Layout(box=box, scale=scale, canvas=canvas, placed=(px, py, px + pw, py + ph),
                  upscale_limited=limited)


def downscale_pair(rgb: np.ndarray, alpha: np.ndarray, max_side: int):
    """(rgb, alpha, scale) shrunk together so the longer side is at most ``max_side``."""
    h, w = alpha.shape
    scale = min(1.0, max_side / max(h, w))
    if scale >= 1.0:
        return rgb, alpha, 1.0
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return (cv2.resize(rgb, size, interpolation=cv2.INTER_AREA),
            cv2.resize(alpha, size, interpolation=cv2.INTER_AREA), scale)


def resize_region(array: np.ndarray, box: Box, out_w: int, out_h: int) -> np.ndarray:
    """Crop ``box`` from ``array`` and resize to (out_w, out_h) with a good filter."""
    x0, y0, x1, y1 = box
    crop = array[y0:y1, x0:x1]
    if crop.shape[1] == out_w and crop.shape[0] == out_h:
        return crop.copy()
    shrinking = out_w < crop.shape[1]
    interp = cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC
    return cv2.resize(crop, (out_w, out_h), interpolation=interp)


def place(region: np.ndarray, layout: Layout, background: int | tuple) -> np.ndarray:
    """Paste a resized region onto a square canvas filled with ``background``."""
    channels = () if region.ndim == 2 else (region.shape[2],)
    canvas = np.empty((layout.canvas, layout.canvas, *channels), dtype=region.dtype)
    canvas[...] = background
    px, py, px1, py1 = layout.placed
    canvas[py:py1, px:px1] = region
    return canvas
