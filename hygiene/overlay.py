"""The overlay check (issue 27, first slice): text regions from the PP-OCRv4 detector
(removers/text_det.py) judged against the product. On a cleaned photo a region lying mostly on
the white outside the product is an overlay that survived cleanup and fails; a region on the
product is product text (a print, a label, a brand on a cap) and passes, listed in the report.

The product is the cleanup's mask when there is one; without one (``shelfready check`` of a
photo on white) it is the largest non-white blob and the blobs at least
``RuleConfig.overlay_blob_share`` of its size: letters drawn on the white are small blobs of
their own. Not done yet: the photo as given (scene text vs overlay by rendering cues) and
semi-transparent watermarks.
"""
from __future__ import annotations

import cv2
import numpy as np

from removers import text_det
from removers.config import RuntimeConfig

from .config import RuleConfig


def product_of_white(rgb: np.ndarray, cfg: RuleConfig) -> np.ndarray:
    """A mask (bool) of the product in a photo on white, without a model."""
    blob = ~np.all(rgb >= cfg.white_level - cfg.border_tolerance, axis=2)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(blob.astype(np.uint8), connectivity=8)
    if n <= 1:
        return blob
    areas = stats[1:, cv2.CC_STAT_AREA]
    keep = np.flatnonzero(areas >= cfg.overlay_blob_share * areas.max()) + 1
    return np.isin(labels, keep)


def overlay_regions(rgb: np.ndarray, cfg: RuleConfig, mask: np.ndarray | None = None, threshold: int = 128,
                    runtime: RuntimeConfig = RuntimeConfig()) -> dict[str, list[dict]]:
    """{"overlay": [...], "product_text": [...]}: each region's box, detector score and the share
    of it on the product."""
    product = (mask >= threshold) if mask is not None else product_of_white(rgb, cfg)
    found: dict[str, list[dict]] = {"overlay": [], "product_text": []}
    for region in text_det.detect(rgb, cfg.text_side, cfg.text_threshold, cfg.text_box_threshold,
                                  cfg.text_unclip, runtime):
        quad = np.zeros(product.shape, np.uint8)
        cv2.fillPoly(quad, [np.array(region.quad, np.int32)], 1)
        area = int(quad.sum())
        on_product = float(product[quad > 0].mean()) if area else 0.0
        row = {"box": list(region.box), "score": region.score, "on_product": round(on_product, 3)}
        found["product_text" if on_product >= cfg.overlay_min_on_product else "overlay"].append(row)
    return found
