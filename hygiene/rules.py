"""Marketplace main-image rules beyond white and fill: borders and colour blocks, a product
cut off by the photo's frame, inset pictures (issue 27). No model; OpenCV and NumPy only.

Each function measures; ``hygiene.checks.readiness`` turns the measures into checks against
``RuleConfig``'s limits (``CheckConfig.rules``).
"""
from __future__ import annotations

import cv2
import numpy as np

from .config import RuleConfig

SIDES = ("top", "bottom", "left", "right")


def _lines(rgb: np.ndarray, side: str, depth: int, samples: int = 0) -> np.ndarray:
    """The first ``depth`` lines of ``side``, outermost first, as (depth, length, 3) int16; with
    ``samples``, about that many evenly spaced pixels of each line (their share is what is read)."""
    if side == "top":
        block = rgb[:depth]
    elif side == "bottom":
        block = rgb[::-1][:depth]
    elif side == "left":
        block = rgb[:, :depth].transpose(1, 0, 2)
    else:
        block = rgb[:, ::-1][:, :depth].transpose(1, 0, 2)
    step = max(1, block.shape[1] // samples) if samples else 1
    return block[:, ::step].astype(np.int16)


def border_sides(rgb: np.ndarray, cfg: RuleConfig) -> list[str]:
    """Sides with a border: a run of uniform, non-white lines (a strip, a frame line, a banner
    across the whole side) that starts within ``cfg.border_max_depth`` of the edge and ends
    before it (a uniform colour that goes on deeper is a background, which the white check
    judges)."""
    h, w = rgb.shape[:2]
    found = []
    for side in SIDES:
        length = w if side in ("top", "bottom") else h
        depth = max(2, int(round(cfg.border_max_depth * (h if side in ("top", "bottom") else w))))
        lines = _lines(rgb, side, min(depth + 1, h if side in ("top", "bottom") else w), cfg.border_samples)
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


def colour_blocks(rgb: np.ndarray, cfg: RuleConfig) -> int:
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


def cut_off_sides(mask: np.ndarray, cfg: RuleConfig, threshold: int = 128) -> list[str]:
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


def _side_support(edges: np.ndarray, x: int, y: int, w: int, h: int) -> float:
    """The least share, over the four sides of the box, of positions with an edge on the side."""
    return min(edges[y, x:x + w].mean(), edges[y + h - 1, x:x + w].mean(),
               edges[y:y + h, x].mean(), edges[y:y + h, x + w - 1].mean())


def _segments(edges: np.ndarray, shortest: int, axis: int) -> list[tuple[int, int, int]]:
    """Straight edge segments at least ``shortest`` px long: rows (axis 0) as (y, x0, x1), columns
    (axis 1) as (x, y0, y1), sorted by their position."""
    kernel = np.ones((1, shortest) if axis == 0 else (shortest, 1), np.uint8)
    lines = cv2.morphologyEx(edges.astype(np.uint8), cv2.MORPH_OPEN, kernel)
    n, _, stats, centroids = cv2.connectedComponentsWithStats(lines, connectivity=8)
    out = []
    for i in range(1, n):
        x, y, w, h, _ = stats[i]
        if axis == 0:
            out.append((int(round(centroids[i][1])), int(x), int(x + w - 1)))
        else:
            out.append((int(round(centroids[i][0])), int(y), int(y + h - 1)))
    return sorted(out)


def _side_contrast(img: np.ndarray, box, gap: int = 3, depth: int = 4) -> float:
    """The least, over the box's four sides, of the median colour difference (sum of |RGB|)
    between a strip just inside the side and one just outside it. A picture pasted in differs
    from what is around it; the lines of a checked or striped fabric have the same cloth on
    both sides."""
    h, w = img.shape[:2]
    x0, y0, x1, y1 = box
    lo, hi = gap, gap + depth
    if x0 - hi < 0 or y0 - hi < 0 or x1 + hi > w or y1 + hi > h:
        return 255.0 * 3  # against the frame: nothing outside to differ from
    img = img.astype(np.int16)
    pairs = [(img[y0 + lo:y0 + hi, x0:x1].mean(0), img[y0 - hi:y0 - lo, x0:x1].mean(0)),
             (img[y1 - hi:y1 - lo, x0:x1].mean(0), img[y1 + lo:y1 + hi, x0:x1].mean(0)),
             (img[y0:y1, x0 + lo:x0 + hi].mean(1), img[y0:y1, x0 - hi:x0 - lo].mean(1)),
             (img[y0:y1, x1 - hi:x1 - lo].mean(1), img[y0:y1, x1 + lo:x1 + hi].mean(1))]
    return float(min(np.median(np.abs(a - b).sum(axis=1)) for a, b in pairs))


def _outside_share(img: np.ndarray, solid: np.ndarray | None, box, cfg: RuleConfig, ring: int = 6) -> float:
    """How far a rectangle lies off the product: with a mask, the share of the rectangle outside
    it; without one, the share of white pixels in a ring just around it (a picture pasted on the
    white background; a print or pattern on the product has product all round)."""
    x0, y0, x1, y1 = box
    if solid is not None:
        return 1.0 - float(solid[y0:y1, x0:x1].mean())
    h, w = img.shape[:2]
    outer = img[max(0, y0 - ring):min(h, y1 + ring), max(0, x0 - ring):min(w, x1 + ring)]
    white = np.all(outer >= cfg.white_level - cfg.border_tolerance, axis=2)
    inner = white[min(ring, y0):min(ring, y0) + (y1 - y0), min(ring, x0):min(ring, x0) + (x1 - x0)]
    n_ring = white.size - inner.size
    return float((white.sum() - inner.sum()) / n_ring) if n_ring else 0.0


def _iou(a, b) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


def insets(rgb: np.ndarray, cfg: RuleConfig, product_box=None, mask: np.ndarray | None = None,
           threshold: int = 128) -> list[list[int]]:
    """Boxes (x0, y0, x1, y1, in ``rgb``'s pixels) of pictures inside the picture: axis-aligned
    rectangles whose four sides are straight edges along at least ``cfg.inset_min_support`` of
    their length, covering ``cfg.inset_min_share``-``cfg.inset_max_share`` of the picture, that
    differ from what is around them (``cfg.inset_min_contrast``), are not the product's own box
    (a boxed product) and lie at least ``cfg.inset_min_outside`` off the product
    (``_outside_share``: a print on the product is not an inset)."""
    h, w = rgb.shape[:2]
    f = min(1.0, cfg.rules_side / max(h, w))
    small = cv2.resize(rgb, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA) \
        if f < 1.0 else rgb
    sh, sw = small.shape[:2]
    gray = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
    edges = cv2.dilate(cv2.Canny(gray, 40, 120), np.ones((3, 3), np.uint8)) > 0
    solid = None
    if mask is not None:
        solid = cv2.resize((mask >= threshold).astype(np.uint8), (sw, sh), interpolation=cv2.INTER_NEAREST)
    pbox = None if product_box is None else [v * f for v in product_box]
    shortest = max(8, round(cfg.inset_min_side * max(sw, sh)))
    for_rows, for_cols = _segments(edges, shortest, 0), _segments(edges, shortest, 1)
    tol = 3
    found: list[list[int]] = []
    for i, (ty, tx0, tx1) in enumerate(for_rows):
        for by, bx0, bx1 in for_rows[i + 1:]:
            if by - ty < shortest:
                continue
            # vertical segments that span from the top line to the bottom one within both lines' extent
            cols = sorted(x for x, y0, y1 in for_cols
                          if y0 <= ty + tol and y1 >= by - tol and max(tx0, bx0) - tol <= x <= min(tx1, bx1) + tol)
            for a, left in enumerate(cols):
                for right in cols[a + 1:]:
                    if right - left < shortest:
                        continue
                    box = [left, ty, right + 1, by + 1]
                    area = (box[2] - box[0]) * (box[3] - box[1]) / (sw * sh)
                    if not cfg.inset_min_share <= area <= cfg.inset_max_share:
                        continue
                    if _side_support(edges, left, ty, right - left + 1, by - ty + 1) < cfg.inset_min_support:
                        continue
                    if _side_contrast(small, box) < cfg.inset_min_contrast:
                        continue
                    if pbox is not None and _iou(box, pbox) >= cfg.inset_product_iou:
                        continue
                    if _outside_share(small, solid, box, cfg) < cfg.inset_min_outside:
                        continue
                    scaled = [round(v / f) for v in box]
                    if not any(_iou(scaled, other) >= 0.5 for other in found):
                        found.append(scaled)
    return found
