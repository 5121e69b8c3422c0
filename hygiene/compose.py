"""Alpha -> product on pure white (or transparent), without halos or grey fringes.

Edge pixels of a cut-out mix product and old background colour. Compositing
those raw colours onto white leaves a dark or coloured rim, so the foreground
colour is estimated first (pymatting's multi-level foreground estimation,
which rembg depends on already), then blended onto white. Pixels whose alpha
is 0 come out as exactly (255, 255, 255).
"""
from __future__ import annotations

import cv2
import numpy as np
from PIL import Image

from .frame import downscale_pair

WHITE = 255


def tidy_alpha(alpha: np.ndarray, threshold: int, min_component_share: float,
               low: int = 8, high: int = 247) -> np.ndarray:
    """Snap near-0/near-255 alpha and drop blobs far smaller than the largest.

    ``low``/``high`` remove the faint haze a soft mask leaves on the background
    (which would otherwise tint the white) and the speckle inside the product.
    """
    a = alpha.copy()
    a[a <= low] = 0
    a[a >= high] = 255
    solid = (a >= threshold).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(solid, connectivity=8)
    if n > 2:
        areas = stats[1:, cv2.CC_STAT_AREA]
        keep = np.zeros(n, dtype=bool)
        keep[1:] = areas >= min_component_share * areas.max()
        dropped = ~keep[labels] & (solid > 0)
        if dropped.any():
            # remove the dropped blob together with its soft rim
            rim = cv2.dilate(dropped.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
            kept = cv2.dilate((keep[labels] & (solid > 0)).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
            a[rim & ~kept] = 0
    return a


def estimate_foreground(rgb: np.ndarray, alpha: np.ndarray, max_side: int = 1024) -> np.ndarray:
    """Foreground colours (uint8 HxWx3) with the background's tint removed at edges.

    Work is capped at ``max_side`` px: larger inputs are estimated at a lower
    resolution and only the edge pixels take the upsampled estimate.
    """
    from pymatting import estimate_foreground_ml

    h, w = alpha.shape
    edge = (alpha > 0) & (alpha < 255)
    if not edge.any():
        return rgb
    small_rgb, small_a, scale = downscale_pair(rgb, alpha, max_side)
    fg = estimate_foreground_ml(small_rgb.astype(np.float64) / 255.0, small_a.astype(np.float64) / 255.0)
    fg = np.clip(fg * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if scale < 1.0:
        fg = cv2.resize(fg, (w, h), interpolation=cv2.INTER_LINEAR)
    out = rgb.copy()
    out[edge] = fg[edge]
    return out


def on_white(fg: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Blend foreground onto pure white; alpha 0 gives exactly 255."""
    a = alpha.astype(np.float32)[..., None] / 255.0
    out = fg.astype(np.float32) * a + WHITE * (1.0 - a)
    out = np.clip(out + 0.5, 0, 255).astype(np.uint8)
    out[alpha == 0] = WHITE
    return out


def composite(fg: np.ndarray, alpha: np.ndarray, transparent: bool) -> Image.Image:
    """RGB on white, or RGBA keeping ``alpha``, from (estimated) foreground colours."""
    if transparent:
        return Image.fromarray(np.dstack([fg, alpha]), "RGBA")
    return Image.fromarray(on_white(fg, alpha), "RGB")
