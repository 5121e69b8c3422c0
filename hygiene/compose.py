"""Alpha -> product on pure white (or transparent), without halos or grey fringes.

Edge pixels of a cut-out mix product and old background colour. Compositing
those raw colours onto white leaves a dark or coloured rim, so the foreground
colour is estimated first, then blended onto white. Pixels whose alpha is 0
come out as exactly (255, 255, 255).

The estimator is blur-fusion (Forte & Pitie 2020, "Approximate fast foreground
colour estimation", ICIP) with passes of box radius 90, 6, 3, 2 (the paper's
two passes 90, 6 plus two finer ones: lower halo error on the dev photos): box-filter
averages of the foreground and background colours around each pixel, corrected
by the compositing equation I = aF + (1 - a)B. It replaced pymatting's
multi-level estimator (``method="ml"``, kept for comparison): an order of
magnitude faster at equal or lower halo error (bench/profile_clean.py --halo).
"""
from __future__ import annotations

import cv2
import numpy as np
from PIL import Image

from .frame import Layout, downscale_pair, resize_region

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


def _blur_fusion_pass(image, fg, bg, a, radius):
    """One pass of blur-fusion (float32 arrays, colours and alpha in 0..1)."""
    k = (radius, radius)
    blur_a = cv2.blur(a, k)[..., None]
    a3 = a[..., None]
    blur_f = cv2.blur(fg * a3, k) / (blur_a + 1e-5)
    blur_b = cv2.blur(bg * (1.0 - a3), k) / ((1.0 - blur_a) + 1e-5)
    fg = blur_f + a3 * (image - a3 * blur_f - (1.0 - a3) * blur_b)
    return np.clip(fg, 0.0, 1.0, out=fg), blur_b


def blur_fusion(rgb: np.ndarray, alpha: np.ndarray, radii: tuple[int, ...] = (90, 6, 3, 2)) -> np.ndarray:
    """Blur-fusion foreground estimate (uint8 HxWx3) of ``rgb`` under ``alpha``."""
    image = rgb.astype(np.float32) * np.float32(1 / 255)
    a = alpha.astype(np.float32) * np.float32(1 / 255)
    fg, bg = image, image
    for r in radii:
        fg, bg = _blur_fusion_pass(image, fg, bg, a, r)
    return (fg * 255.0 + 0.5).astype(np.uint8)


def estimate_foreground(rgb: np.ndarray, alpha: np.ndarray, max_side: int = 1024,
                        method: str = "blur") -> np.ndarray:
    """Foreground colours (uint8 HxWx3) with the background's tint removed at edges.

    ``method`` "blur" (blur-fusion, default) or "ml" (pymatting's multi-level
    estimator). Work is capped at ``max_side`` px: larger inputs are estimated at
    a lower resolution and only the edge pixels take the upsampled estimate.
    """
    edge = (alpha > 0) & (alpha < 255)
    if not edge.any():
        return rgb
    h, w = alpha.shape
    small_rgb, small_a, scale = downscale_pair(rgb, alpha, max_side)
    if method == "blur":
        fg = blur_fusion(small_rgb, small_a)
    elif method == "ml":
        from pymatting import estimate_foreground_ml

        fg = estimate_foreground_ml(small_rgb.astype(np.float64) / 255.0, small_a.astype(np.float64) / 255.0)
        fg = np.clip(fg * 255.0 + 0.5, 0, 255).astype(np.uint8)
    else:
        raise ValueError(f"method must be 'blur' or 'ml', got {method!r}")
    if scale < 1.0:
        fg = cv2.resize(fg, (w, h), interpolation=cv2.INTER_LINEAR)
    out = rgb.copy()
    out[edge] = fg[edge]
    return out



def product_region(rgb: np.ndarray, alpha: np.ndarray, box: tuple[int, int, int, int], layout: Layout,
                   fg_estimation: bool) -> np.ndarray:
    """The product's box as placed by ``layout``: RGBA, (placed height, placed width, 4).

    Foreground colours are estimated at the photo's own resolution (cheaper than on the
    upscaled canvas, and upscaling adds no edge information), on the box only; then one
    resize of colour and alpha together (cv2 filters each channel alike)."""
    pw, ph = layout.placed[2] - layout.placed[0], layout.placed[3] - layout.placed[1]
    x0, y0, x1, y1 = box
    fg, box_a = rgb[y0:y1, x0:x1], alpha[y0:y1, x0:x1]
    if fg_estimation:
        fg = estimate_foreground(fg, box_a)
    return resize_region(np.dstack([fg, box_a]), (0, 0, x1 - x0, y1 - y0), pw, ph)


def on_white(fg: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Blend foreground onto pure white; alpha 0 gives exactly 255.

    Integer arithmetic: (F*a + 255*(255-a) + 127) // 255, exact rounding of the
    float blend, and a = 0 gives 255 by construction."""
    a = alpha.astype(np.uint16)[..., None]
    out = fg.astype(np.uint16) * a
    out += (255 * 255 + 127) - 255 * a
    out //= 255
    return out.astype(np.uint8)


def composite(fg: np.ndarray, alpha: np.ndarray, transparent: bool) -> Image.Image:
    """RGB on white, or RGBA keeping ``alpha``, from (estimated) foreground colours."""
    if transparent:
        return Image.fromarray(np.dstack([fg, alpha]), "RGBA")
    return Image.fromarray(on_white(fg, alpha), "RGB")
