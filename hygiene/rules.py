"""Marketplace main-image rules beyond white and fill: borders and colour blocks, a product
cut off by the photo's frame, inset pictures (issue 27). No model; OpenCV and NumPy only.

Each function measures; ``hygiene.checks.readiness`` turns the measures into checks against
``CheckConfig``'s limits.
"""
from __future__ import annotations

import cv2
import numpy as np

from .config import CheckConfig

SIDES = ("top", "bottom", "left", "right")


def _lines(rgb: np.ndarray, side: str, depth: int) -> np.ndarray:
    """The first ``depth`` lines of ``side``, outermost first, as (depth, length, 3) int16."""
    if side == "top":
        block = rgb[:depth]
    elif side == "bottom":
        block = rgb[::-1][:depth]
    elif side == "left":
        block = rgb[:, :depth].transpose(1, 0, 2)
    else:
        block = rgb[:, ::-1][:, :depth].transpose(1, 0, 2)
    return block.astype(np.int16)


def border_sides(rgb: np.ndarray, cfg: CheckConfig) -> list[str]:
    """Sides with a border: a run of uniform, non-white lines (a strip, a frame line, a banner
    across the whole side) that starts within ``cfg.border_max_depth`` of the edge and ends
    before it (a uniform colour that goes on deeper is a background, which the white check
    judges)."""
    h, w = rgb.shape[:2]
    found = []
    for side in SIDES:
        length = w if side in ("top", "bottom") else h
        depth = max(2, int(round(cfg.border_max_depth * (h if side in ("top", "bottom") else w))))
        lines = _lines(rgb, side, min(depth + 1, h if side in ("top", "bottom") else w))
        median = np.median(lines, axis=1)  # (depth, 3): each line's colour
        near = np.all(np.abs(lines - median[:, None, :]) <= cfg.border_tolerance, axis=2)
        uniform = near.mean(axis=1) >= cfg.border_min_coverage
        white = np.all(median >= cfg.white_level - cfg.border_tolerance, axis=1)
        strip = uniform & ~white
        idx = np.flatnonzero(strip)
        if idx.size == 0 or idx[0] >= depth:
            continue
        start = idx[0]
        end = start
        while end + 1 < len(strip) and strip[end + 1] and np.all(
                np.abs(median[end + 1] - median[start]) <= cfg.border_tolerance):
            end += 1
        if end + 1 >= len(strip) or length < 8:  # goes on past the depth limit: a background
            continue
        # a border's inner edge is a straight line: the line after the strip differs from the
        # strip's colour along most of the side (a wall fading into a room does not)
        after = np.any(np.abs(lines[end + 1] - median[start]) > cfg.border_tolerance, axis=1)
        if after.mean() >= cfg.border_min_edge:
            found.append(side)
    return found


def colour_blocks(rgb: np.ndarray, cfg: CheckConfig) -> int:
    """Flat, rectangular, non-white blocks that touch the frame (corner badges, side banners,
    a coloured panel), at least ``cfg.block_min_share`` of the picture and at most
    ``cfg.block_max_share`` (more is a background)."""
    h, w = rgb.shape[:2]
    f = min(1.0, cfg.rules_side / max(h, w))
    small = cv2.resize(rgb, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA) \
        if f < 1.0 else rgb
    sh, sw = small.shape[:2]
    img = small.astype(np.float32)
    mean = cv2.blur(img, (3, 3))
    var = np.maximum(cv2.blur(img * img, (3, 3)) - mean * mean, 0).sum(axis=2)
    flat = (var <= cfg.block_max_var) & ~np.all(small >= cfg.white_level - cfg.border_tolerance, axis=2)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(flat.astype(np.uint8), connectivity=4)
    blocks = 0
    for i in range(1, n):
        x, y, bw, bh, area = stats[i]
        share = area / (sh * sw)
        if not cfg.block_min_share <= share <= cfg.block_max_share:
            continue
        if x > 0 and y > 0 and x + bw < sw and y + bh < sh:
            continue
        if area / (bw * bh) >= cfg.block_min_rectangularity:
            blocks += 1
    return blocks


def cut_off_sides(mask: np.ndarray, cfg: CheckConfig, threshold: int = 128) -> list[str]:
    """Sides of the photo the product runs into: the mask (>= ``threshold``) covers a
    continuous run of at least ``cfg.cutoff_min_run`` of the side along its outermost
    ``cfg.cutoff_ring_px`` lines."""
    solid = mask >= threshold
    h, w = solid.shape
    ring = max(1, min(cfg.cutoff_ring_px, min(h, w) // 4))
    edges = {"top": solid[:ring].any(axis=0), "bottom": solid[-ring:].any(axis=0),
             "left": solid[:, :ring].any(axis=1), "right": solid[:, -ring:].any(axis=1)}
    found = []
    for side in SIDES:
        line = edges[side].astype(np.int8)
        if not line.any():
            continue
        # longest run of True: positions where runs start and end
        d = np.diff(np.concatenate(([0], line, [0])))
        run = int((np.flatnonzero(d == -1) - np.flatnonzero(d == 1)).max())
        if run >= cfg.cutoff_min_run * line.size:
            found.append(side)
    return found
