"""Model alpha -> a cleaner alpha: GrabCut on the uncertain band, holes, blobs.

A small remover (u2netp) fails in a few repeatable ways: half-transparent
"ghost" regions where it was unsure, holes where a label or print inside the
product looked like background, thin parts (handles, straps) cut off, and
stray blobs on the background. The model's confident pixels are usually right,
so they seed an OpenCV GrabCut colour model (``GC_INIT_WITH_MASK``) that
decides the rest from colour and edges, on a downscaled copy for speed. The
full-resolution alpha keeps the model's own soft edge wherever GrabCut agrees
with it; only where GrabCut changed the decision does the new, upsampled
mask take over.
"""
from __future__ import annotations

import cv2
import numpy as np

from .config import RefineConfig
from .frame import downscale_pair


def _check(rgb: np.ndarray, alpha: np.ndarray) -> None:
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"rgb must be HxWx3 uint8, got {rgb.shape} {rgb.dtype}")
    if alpha.shape != rgb.shape[:2] or alpha.dtype != np.uint8:
        raise ValueError(f"alpha must be HxW uint8 matching rgb, got {alpha.shape} {alpha.dtype}")


def _disk(radius: int) -> np.ndarray:
    r = max(1, int(radius))
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))


def keep_main_components(solid: np.ndarray, min_share: float) -> np.ndarray:
    """Binary mask without blobs smaller than ``min_share`` of the largest one."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(solid.astype(np.uint8), connectivity=8)
    if n <= 2:
        return solid.astype(bool)
    areas = stats[1:, cv2.CC_STAT_AREA]
    keep = np.zeros(n, dtype=bool)
    keep[1:] = areas >= min_share * areas.max()
    return keep[labels]


def fill_small_holes(solid: np.ndarray, max_share: float) -> np.ndarray:
    """Fill background regions enclosed by the object, up to ``max_share`` of its area."""
    solid = solid.astype(bool)
    inv = (~solid).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(inv, connectivity=4)
    if n <= 1:
        return solid
    h, w = solid.shape
    limit = max_share * max(1, int(solid.sum()))
    fill = np.zeros(n, dtype=bool)
    for i in range(1, n):
        x, y, bw, bh, area = stats[i]
        touches = x == 0 or y == 0 or x + bw == w or y + bh == h
        fill[i] = not touches and area <= limit
    return solid | fill[labels]


def grabcut_mask(rgb: np.ndarray, alpha: np.ndarray, cfg: RefineConfig) -> np.ndarray:
    """GrabCut's binary decision (bool, same size as rgb's work copy) seeded by alpha."""
    h, w = alpha.shape
    side = max(h, w)
    erode = _disk(round(cfg.erode_frac * side))
    band = _disk(round(cfg.bg_band_frac * side))
    gc = np.full((h, w), cv2.GC_PR_BGD, np.uint8)
    gc[alpha >= 128] = cv2.GC_PR_FGD
    sure_fg = cv2.erode((alpha >= cfg.sure_fg).astype(np.uint8), erode) > 0
    near = cv2.dilate((alpha > cfg.sure_bg).astype(np.uint8), band) > 0
    gc[~near] = cv2.GC_BGD
    gc[sure_fg] = cv2.GC_FGD
    if not (gc == cv2.GC_BGD).any() or not ((gc == cv2.GC_FGD) | (gc == cv2.GC_PR_FGD)).any():
        return alpha >= 128  # GrabCut needs both models; nothing to learn from
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(0)
    cv2.grabCut(rgb, gc, None, bgd, fgd, cfg.iterations, cv2.GC_INIT_WITH_MASK)
    return (gc == cv2.GC_FGD) | (gc == cv2.GC_PR_FGD)


def refine_alpha(rgb: np.ndarray, alpha: np.ndarray, cfg: RefineConfig = RefineConfig()) -> np.ndarray:
    """Refined alpha (uint8 HxW) for an RGB photo and its model alpha."""
    _check(rgb, alpha)
    if not cfg.enabled:
        return alpha.copy()
    h, w = alpha.shape
    if np.count_nonzero(alpha >= 128) < cfg.min_object_share * h * w:
        return alpha.copy()
    small_rgb, small_a, scale = downscale_pair(rgb, alpha, cfg.work_side)
    solid = grabcut_mask(small_rgb, small_a, cfg) if cfg.grabcut else small_a >= 128
    solid = keep_main_components(solid, cfg.min_component_share)
    solid = fill_small_holes(solid, cfg.max_hole_share)
    if not solid.any():
        return alpha.copy()
    changed = solid != (small_a >= 128)
    if not changed.any():
        return alpha.copy()
    soft = solid.astype(np.uint8) * 255
    if scale < 1.0:
        soft = cv2.resize(soft, (w, h), interpolation=cv2.INTER_LINEAR)
        changed = cv2.resize(changed.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) > 0
        changed &= (soft >= 128) != (alpha >= 128)  # at full size, only flipped decisions
    # the model's own soft edge stays wherever the work-size decision did not change
    out = alpha.copy()
    out[changed] = soft[changed]
    return out
