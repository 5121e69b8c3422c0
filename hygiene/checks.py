"""Readiness checks of any photo, cleaned or not, against a marketplace preset.

Each check is ``{"value", "limit", "passed"}``; ``ready`` is true when all
pass. With a mask (from cleanup) the product box comes from the mask; without
one it is the box of everything that is not pure white.
"""
from __future__ import annotations

import cv2
import numpy as np
from PIL import Image

from .confidence import undecided_share
from .config import CheckConfig, GateConfig, Preset
from .frame import product_box
from .rules import border_sides, colour_blocks, cut_off_sides, insets


def _check(value, limit, passed: bool, unit: str = "") -> dict:
    out = {"value": round(float(value), 4) if value is not None else None, "limit": limit,
           "passed": bool(passed)}
    if unit:
        out["unit"] = unit
    return out


def white_border_share(rgb: np.ndarray, alpha: np.ndarray | None, cfg: CheckConfig) -> float:
    """Share of the border ring that is pure white (or fully transparent)."""
    b = max(1, min(cfg.border_px, min(rgb.shape[:2]) // 4))
    h = rgb.shape[0]
    # the ring as four strips (top, bottom, left, right without the corners): only these pixels are read
    strips = [(slice(0, b), slice(None)), (slice(h - b, h), slice(None)),
              (slice(b, h - b), slice(0, b)), (slice(b, h - b), slice(-b, None))]
    white = total = 0
    for ys, xs in strips:
        ok = np.all(rgb[ys, xs] >= cfg.white_level, axis=2)
        if alpha is not None:
            ok |= alpha[ys, xs] == 0
        white += int(ok.sum())
        total += ok.size
    return white / total


def sharpness(rgb: np.ndarray, box, side: int) -> float:
    """Variance of the Laplacian of the product region, normalised to ``side`` px."""
    x0, y0, x1, y1 = box
    gray = cv2.cvtColor(rgb[y0:y1, x0:x1], cv2.COLOR_RGB2GRAY)
    longer = max(gray.shape)
    if longer > side:
        f = side / longer
        gray = cv2.resize(gray, (max(1, round(gray.shape[1] * f)), max(1, round(gray.shape[0] * f))),
                          interpolation=cv2.INTER_AREA)
    return float(cv2.Laplacian(gray, cv2.CV_64F).var())


def _sides_check(sides: list[str] | None, what: str) -> dict:
    out = _check(None if sides is None else len(sides), 0, sides is not None and not sides)
    out["sides"] = sides
    if sides:
        out["finding"] = f"{what} at the {', '.join(sides)} edge" + ("s" if len(sides) > 1 else "")
    return out


def rule_checks(rgb: np.ndarray, alpha: np.ndarray | None, on_white: bool, cfg: CheckConfig,
                mask_threshold: int = 128, source_alpha: np.ndarray | None = None,
                product_box=None) -> dict[str, dict]:
    """The marketplace rules of hygiene/rules.py as checks: border, colour_block, inset, cut_off,
    and with ``cfg.rules.text_overlay`` the overlay check of hygiene/overlay.py.

    A cut-off needs a mask: the cleanup's (``source_alpha``, else ``alpha``) or, on a white
    background, the non-white pixels; a photo with neither is not judged (value None, failed:
    the white-background check names why)."""
    rules = cfg.rules
    out = {"border": _sides_check(border_sides(rgb, rules), "border")}
    blocks = colour_blocks(rgb, rules)
    out["colour_block"] = _check(blocks, 0, blocks == 0)
    boxes = insets(rgb, rules, product_box, alpha, mask_threshold)
    out["inset"] = _check(len(boxes), 0, not boxes)
    out["inset"]["boxes"] = boxes
    mask = source_alpha if source_alpha is not None else alpha
    if mask is None and on_white:
        mask = (~np.all(rgb >= cfg.white_level, axis=2)).astype(np.uint8) * 255
    sides = None if mask is None else cut_off_sides(mask, rules, mask_threshold)
    out["cut_off"] = _sides_check(sides, "product cut off")
    if rules.text_overlay:
        out["overlay"] = _overlay_check(rgb, alpha if alpha is not None or on_white else None, on_white,
                                        rules, mask_threshold)
    return out


def _overlay_check(rgb: np.ndarray, alpha: np.ndarray | None, on_white: bool, rules, mask_threshold: int) -> dict:
    """Text on the white outside the product fails; text on the product is listed and passes.
    A photo with neither a mask nor a white background is not judged (value None)."""
    from .overlay import overlay_regions  # local: loads the text detector only when asked

    if alpha is None and not on_white:
        out = _check(None, 0, False)
        out["finding"] = "overlay not judged: needs a cleaned photo (white background or a mask)"
        return out
    found = overlay_regions(rgb, rules, alpha, mask_threshold)
    out = _check(len(found["overlay"]), 0, not found["overlay"])
    out.update(found)
    if found["overlay"]:
        out["finding"] = f"text outside the product: {len(found['overlay'])} region(s) (overlay survived cleanup)"
    return out


def readiness(image: Image.Image, preset: Preset, cfg: CheckConfig,
              alpha: np.ndarray | None = None, mask_threshold: int = 128,
              detail_source: tuple[np.ndarray, tuple] | None = None, gate: GateConfig = GateConfig(),
              rgb: np.ndarray | None = None, source_alpha: np.ndarray | None = None) -> dict:
    """Readiness report of ``image`` (RGB or RGBA) for ``preset``.

    ``detail_source`` = (rgb, box) of the original photo: sharpness is a property
    of the camera shot, so a cleaned (resampled) image is judged by its source.
    ``gate`` holds the alpha bands of "undecided" (the same measure as the gate's).
    ``rgb``: the image's RGB pixels when the caller has them already (no copy made).
    ``source_alpha``: the cleanup's mask of the photo as given; the cut-off check reads it
    (cleanup cannot bring back what the frame cut off). Without it the cut-off check reads
    ``alpha``, or the non-white pixels of a photo on white.
    """
    if image.mode == "RGBA" and alpha is None:
        alpha = np.asarray(image.getchannel("A"))
    if rgb is None:
        rgb = np.asarray(image.convert("RGB"))
    h, w = rgb.shape[:2]
    if alpha is not None:
        box = product_box(alpha, mask_threshold)
    else:
        box = product_box((~np.all(rgb >= 250, axis=2)).astype(np.uint8) * 255, 128)
    checks: dict[str, dict] = {}
    white = white_border_share(rgb, alpha, cfg)
    checks["white_background"] = _check(white, cfg.min_white_border, white >= cfg.min_white_border)
    longest = max(w, h)
    checks["size"] = _check(longest, preset.min_side, longest >= preset.min_side, "px")
    checks["square"] = _check(w / h, 1.0, w == h)
    if box is None:
        checks["fill"] = _check(0.0, [preset.min_fill, preset.max_fill], False)
        checks["centred"] = _check(None, cfg.max_centre_offset, False)
        checks["sharpness"] = _check(None, cfg.min_sharpness, False)
    else:
        x0, y0, x1, y1 = box
        fill = max((x1 - x0) / w, (y1 - y0) / h)
        checks["fill"] = _check(fill, [preset.min_fill, preset.max_fill],
                                preset.min_fill - 0.005 <= fill <= preset.max_fill + 0.005)
        offset = max(abs((x0 + x1) / 2 - w / 2) / w, abs((y0 + y1) / 2 - h / 2) / h)
        checks["centred"] = _check(offset, cfg.max_centre_offset, offset <= cfg.max_centre_offset)
        sharp = sharpness(*(detail_source or (rgb, box)), cfg.sharpness_side)
        checks["sharpness"] = _check(sharp, cfg.min_sharpness, sharp >= cfg.min_sharpness)
    checks.update(rule_checks(rgb, alpha, white >= cfg.min_white_border, cfg, mask_threshold, source_alpha, box))
    if alpha is not None:
        und = undecided_share(alpha, gate)
        checks["mask_confidence"] = _check(1.0 - und, 1.0 - cfg.max_undecided_alpha,
                                           und <= cfg.max_undecided_alpha)
    return {
        "preset": preset.name,
        "width": w,
        "height": h,
        "product_box": list(box) if box else None,
        "checks": checks,
        "ready": all(c["passed"] for c in checks.values()),
        "failed": [name for name, c in checks.items() if not c["passed"]],
    }
