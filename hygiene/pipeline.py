"""clean(image, config) -> CleanResult: segment -> refine -> gate -> frame -> compose -> check.

A photo whose cut-out the gate does not trust is not whitened: it gets the safe
treatment (a square crop around the product, original background kept) and is
flagged ``needs_review`` with the reasons. Whitening a wrong mask makes a photo
harder to find than the raw one; the crop alone never measured worse.

With ``config.fallback_model`` (``model="cascade"``) the fast remover runs first
and only a photo whose cut-out the gate does not trust is segmented again with
the strong one; that mask is whitened if the gate passes it, else it gives the
safe crop. A chain (``fallback_model="isnet-imgly,u2net"``) tries each in turn
until one's cut-out passes its gate. ``CleanResult.model`` names the remover whose
mask was used, ``report["cascade"]`` what the first one gave and, in a chain, which
of the others were refused and why.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from removers import segment

from . import checks, compose, confidence, frame, refine
from .config import CleanConfig

CLEANED = "cleaned"
NEEDS_REVIEW = "needs_review"


@dataclass
class CleanResult:
    image: Image.Image  # RGB on pure white, RGBA when transparent, or the safe fallback
    mask: np.ndarray  # uint8 alpha of the input photo (255 = product)
    report: dict  # readiness checks of the output
    status: str = CLEANED  # "cleaned" | "needs_review"
    reasons: list[str] = field(default_factory=list)
    model: str = ""
    timings: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict:
        """JSON-serialisable description (no pixels)."""
        return {"status": self.status, "reasons": self.reasons, "model": self.model,
                "report": self.report, "timings": self.timings}


def _input_alpha(image: Image.Image) -> np.ndarray | None:
    """An input that is already a cut-out (real transparency) needs no model."""
    if image.mode != "RGBA":
        return None
    alpha = np.asarray(image.getchannel("A"))
    return alpha if alpha.min() < 255 else None


def _rgb_of(image: Image.Image) -> np.ndarray:
    if image.mode == "RGBA":
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, image).convert("RGB"))
    return np.asarray(image.convert("RGB"))


def needs_model(image: Image.Image) -> bool:
    """Whether ``clean`` runs the remover on ``image`` (a cut-out with real transparency does not)."""
    return _input_alpha(image) is None


def mask_of(image: Image.Image, config: CleanConfig, alpha: np.ndarray | None = None) -> tuple[np.ndarray, str]:
    """Alpha of the product in ``image`` and the name of what produced it; ``alpha``: the mask
    ``config.model`` gave for ``image``, already computed (a batch's, engines/batch_group.py)."""
    given = _input_alpha(image)
    if given is not None:
        return given, "input-alpha"
    if alpha is not None:
        return alpha, config.model
    return segment.predict_alpha(image.convert("RGB"), config.model, config.runtime), config.model


def _safe_treatment(rgb: np.ndarray, raw_alpha: np.ndarray, config: CleanConfig, source: str) -> Image.Image:
    """Untrusted mask: square crop around the product, original background kept.

    The crop fills the canvas (white pads only a photo too narrow for a square);
    with no product at all, or only a speck (``GateConfig.safe_min_box``), the photo
    is returned as it is.
    """
    gate = config.gate_for(source)
    box = confidence.safe_crop_box(raw_alpha, gate.safe_margin, config.mask_threshold, gate.safe_min_box)
    if box is None:
        return Image.fromarray(rgb, "RGB")
    layout = frame.plan(box, config.target_size, 1.0, config.max_upscale)
    region = frame.resize_region(rgb, box, layout.placed[2] - layout.placed[0],
                                 layout.placed[3] - layout.placed[1])
    return Image.fromarray(frame.place(region, layout, 255), "RGB")


def _judge(rgb: np.ndarray, raw_alpha: np.ndarray, source: str, config: CleanConfig):
    """(tidy alpha, product box, gate verdict or None, reasons not to whiten) of one mask,
    judged by the gate of the remover that made it (``config.gate_for``)."""
    gate = None
    alpha = raw_alpha
    if source != "input-alpha":  # a given cut-out is the seller's own decision
        alpha = refine.refine_alpha(rgb, raw_alpha, config.refine)
        gate = confidence.assess(rgb, raw_alpha, alpha if config.refine.enabled else None,
                                 config.gate_for(source))
    alpha = compose.tidy_alpha(alpha, config.mask_threshold, config.min_component_share)
    box = frame.product_box(alpha, config.mask_threshold)
    reasons: list[str] = []
    if gate is not None and not gate.passed:
        reasons.extend(gate.reasons)
    elif box is None:
        reasons.append("no product found in the mask")
    return alpha, box, gate, reasons


def clean(image: Image.Image, config: CleanConfig = CleanConfig(), alpha: np.ndarray | None = None) -> CleanResult:
    """Cut the product out, put it on pure white, square and centre it, check it.

    ``alpha``: ``config.model``'s mask of ``image`` when it was already predicted (in a batch
    of photos); the rest is the same code either way."""
    timings: dict[str, float] = {}
    t = time.perf_counter()
    rgb = _rgb_of(image)
    raw_alpha, source = mask_of(image, config, alpha)
    timings["segment"] = time.perf_counter() - t

    t = time.perf_counter()
    alpha, box, gate, reasons = _judge(rgb, raw_alpha, source, config)
    timings["mask"] = time.perf_counter() - t

    cascade = None
    for fallback in config.fallback_models if source != "input-alpha" else ():
        if not reasons:  # this remover's cut-out is trusted: the chain stops here
            break
        if cascade is None:
            cascade = {"first_model": source, "first_reasons": reasons,
                       "first_score": gate.score if gate is not None else None,
                       "fallback_model": config.fallback_model}
        else:  # a chain: each refused remover after the first, with its reasons
            cascade.setdefault("refused", []).append({"model": source, "reasons": reasons})
        t = time.perf_counter()
        raw_alpha = segment.predict_alpha(image.convert("RGB"), fallback, config.runtime)
        source = fallback
        timings["segment_fallback"] = timings.get("segment_fallback", 0.0) + time.perf_counter() - t
        t = time.perf_counter()
        alpha, box, gate, reasons = _judge(rgb, raw_alpha, source, config)
        timings["mask"] += time.perf_counter() - t

    t = time.perf_counter()
    if reasons:
        out = _safe_treatment(rgb, raw_alpha, config, source)
        out_alpha, box, out_rgb = None, None, None
        status = NEEDS_REVIEW
    else:
        layout = frame.plan(box, config.target_size, config.target_fill, config.max_upscale)
        region = compose.product_region(rgb, alpha, box, layout, config.fg_estimation)
        region_rgb, region_a = region[..., :3], region[..., 3]
        if config.transparent:
            out_arr = frame.place(region, layout, (255, 255, 255, 0))
            out = Image.fromarray(out_arr, "RGBA")
            out_rgb = None
        else:
            out_arr = out_rgb = frame.place(compose.on_white(region_rgb, region_a), layout, 255)
            out = Image.fromarray(out_arr, "RGB")
        out_alpha = frame.place(np.ascontiguousarray(region_a), layout, 0)
        status = CLEANED
        if layout.upscale_limited:
            reasons.append(f"photo too small: canvas {layout.canvas} px instead of "
                           f"{config.target_size} px (max upscale {config.max_upscale}x)")
    timings["compose"] = time.perf_counter() - t

    t = time.perf_counter()
    report = checks.readiness(out, config.preset_rules, config.checks, alpha=out_alpha,
                              mask_threshold=config.mask_threshold,
                              detail_source=(rgb, box) if box else None, gate=config.gate, rgb=out_rgb,
                              source_alpha=alpha)
    if gate is not None:
        report["gate"] = {"passed": gate.passed, "score": gate.score, "signals": gate.signals}
    if cascade is not None:
        report["cascade"] = cascade
    timings["checks"] = time.perf_counter() - t
    return CleanResult(image=out, mask=raw_alpha, report=report, status=status,
                       reasons=reasons, model=source,
                       timings={k: round(v, 4) for k, v in timings.items()})


def check(image: Image.Image, config: CleanConfig = CleanConfig()) -> dict:
    """Readiness report of a photo as it is (no cleanup, no model)."""
    alpha = _input_alpha(image)
    return checks.readiness(image if alpha is None else image.convert("RGBA"), config.preset_rules,
                            config.checks, alpha=alpha, mask_threshold=config.mask_threshold, gate=config.gate)
