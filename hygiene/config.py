"""Every default of the cleanup steps lives here and nowhere else (the photo files',
the removers' and the engines' live in photos/config.py, removers/config.py and
engines/config.py).

The CLI and the API read these dataclasses; library code takes them as
arguments. All are frozen so a config can be hashed into the batch manifest.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

from removers.config import CASCADE, CASCADE_PAIR, RuntimeConfig
from removers.runtime import settings_fields


@dataclass(frozen=True)
class Preset:
    """A marketplace's published image rules (see README for the sources)."""

    name: str
    size: int  # side of the square output canvas, px
    min_side: int  # minimum longest side the marketplace accepts, px
    fill: float  # share of the canvas the product's longer side should fill
    min_fill: float  # readiness check: below this the product looks too small
    max_fill: float  # readiness check: above this it touches the frame


PRESETS: dict[str, Preset] = {
    # Amazon main image: pure white (RGB 255,255,255), product fills >= 85 % of
    # the frame, >= 1000 px longest side enables zoom, 1600+ recommended.
    "amazon": Preset("amazon", size=1600, min_side=1000, fill=0.85, min_fill=0.85, max_fill=1.0),
    # Shopify: 2048 x 2048 square recommended, 800 x 800 minimum for zoom.
    "shopify": Preset("shopify", size=2048, min_side=800, fill=0.85, min_fill=0.75, max_fill=0.95),
    # Google Merchant Center: >= 100 px (250 px apparel) required, >= 1500 px
    # recommended; the product should take 75-90 % of the image.
    "google": Preset("google", size=1500, min_side=250, fill=0.85, min_fill=0.75, max_fill=0.90),
    # eBay: >= 500 px on the longest side, 1600 px recommended.
    "ebay": Preset("ebay", size=1600, min_side=500, fill=0.85, min_fill=0.75, max_fill=0.95),
    # Etsy: >= 2000 px on the shortest side recommended, 635 px wide minimum.
    "etsy": Preset("etsy", size=2000, min_side=635, fill=0.85, min_fill=0.75, max_fill=0.95),
}
DEFAULT_PRESET = "amazon"


@dataclass(frozen=True)
class RuleConfig:
    """Thresholds of the marketplace main-image rules (hygiene/rules.py, issue 27): borders and
    colour blocks, insets, a product cut off by the frame. Set by hand on sample_images/ and
    demo_data/; ``python -m bench.rules`` measures them."""

    white_level: int = 255  # the white of the background (CheckConfig.white_level)
    border_max_depth: float = 0.15  # a border starts and ends within this share of the side from the edge
    border_tolerance: int = 12  # RGB distance of a pixel from its line's median colour that is still "uniform"
    border_min_coverage: float = 0.9  # share of a line's pixels within the tolerance for a uniform line
    border_samples: int = 400  # pixels read along each line (evenly spaced), at least
    border_min_edge: float = 0.5  # share of the line inside a strip that differs from it (a straight inner edge)
    rules_side: int = 512  # colour blocks are looked for on a copy with this long side, px
    block_max_var: float = 12.0  # summed RGB variance over 3x3 px below which a pixel is flat
    block_min_share: float = 0.01  # a colour block covers at least this share of the picture ...
    block_max_share: float = 0.5  # ... and at most this (more is a background)
    block_min_rectangularity: float = 0.9  # block area / its box area
    inset_min_support: float = 0.9  # share of each side of a rectangle that is a straight edge
    inset_min_side: float = 0.06  # each side of an inset is at least this share of the long side
    inset_min_share: float = 0.01  # an inset covers at least this share of the picture ...
    inset_max_share: float = 0.6  # ... and at most this
    inset_min_contrast: float = 40.0  # median |RGB| sum between strips just inside and outside each side
    inset_product_iou: float = 0.8  # a rectangle this close to the product's box is the product (a box)
    inset_min_outside: float = 0.3  # share outside the mask, or without one of white around the rectangle
    # overlay text (hygiene/overlay.py; needs `shelfready models fetch ppocr-det`): off unless asked
    text_overlay: bool = False
    text_side: int = 960  # the detector's input: longer side at most this, px (PaddleOCR's default)
    text_threshold: float = 0.3  # text probability of a pixel (PaddleOCR's default)
    text_box_threshold: float = 0.6  # mean probability of a region that is kept (0.5 at PaddleOCR)
    text_unclip: float = 1.5  # DB box growth: area * this / perimeter
    overlay_min_on_product: float = 0.5  # a region with less of its box on the product is an overlay
    overlay_blob_share: float = 0.2  # without a mask: blobs this share of the largest are product
    cutoff_ring_px: int = 2  # outermost lines of the photo read for a product running off it
    cutoff_min_run: float = 0.05  # continuous run of product along a side, share of the side


@dataclass(frozen=True)
class CheckConfig:
    """Thresholds of the readiness report."""

    white_level: int = 255  # a pixel is "pure white" only if R=G=B=255
    border_px: int = 4  # width of the border ring sampled for whiteness
    min_white_border: float = 0.99  # share of border pixels that must be pure white
    min_sharpness: float = 60.0  # variance of the Laplacian on a 1024 px long side
    max_centre_offset: float = 0.05  # product-box centre vs canvas centre, share of side
    max_undecided_alpha: float = 0.05  # undecided share (hygiene.confidence.undecided_share, the gate's bands)
    sharpness_side: int = 1024  # images are resized to this long side before the Laplacian
    # marketplace rules of issue 27 (hygiene/rules.py): judge the output, never shape it, so
    # they are left out of the settings key (CleanConfig.fingerprint)
    rules: RuleConfig = field(default_factory=RuleConfig)


@dataclass(frozen=True)
class RefineConfig:
    """Defaults measured with ``python -m bench.segmentation`` / ``bench.calibrate_gate``.

    Off by default: on the benchmarks it moved mask IoU by +0.008 (GrabCut) and
    -0.003 (COCO_MVal in-box) and grocery retrieval R@1 by +0.010 / R@5 by
    -0.014, i.e. nothing the numbers support paying for. The other fields are
    the best settings found for when it is switched on.
    """

    enabled: bool = False
    grabcut: bool = True  # re-decide the uncertain band with GrabCut (else threshold at 128)
    work_side: int = 320  # GrabCut runs on a copy whose longer side is this, px
    iterations: int = 4  # GrabCut iterations
    sure_fg: int = 230  # model alpha >= this (after erosion) seeds "surely product"
    sure_bg: int = 10  # model alpha <= this (away from the product) seeds "surely background"
    erode_frac: float = 0.0  # erosion of the sure-fg seed, share of the work image's side
    bg_band_frac: float = 0.0  # sure-bg only farther than this from the model's product
    min_component_share: float = 0.05  # drop blobs smaller than this share of the largest
    max_hole_share: float = 0.05  # fill enclosed holes up to this share of the object area
    min_object_share: float = 0.002  # masks smaller than this share of the frame are left alone

    def __post_init__(self) -> None:
        if not 64 <= self.work_side <= 4096:
            raise ValueError(f"work_side must be between 64 and 4096, got {self.work_side}")
        if not 0 < self.sure_bg < self.sure_fg < 256:
            raise ValueError("need 0 < sure_bg < sure_fg < 256")
        if self.iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {self.iterations}")


@dataclass(frozen=True)
class GateConfig:
    """Pass rules. The thresholds are the joint grid-search optimum of
    ``python -m bench.calibrate_gate --sets grocery_val,clothing_val --limit clothing_val=60
    --catalog-limit 160 --variants raw,white,crop0 --safe crop0 --fit`` (whiten when
    passed, square crop with the original background when not); 0 = rule unused."""

    enabled: bool = True
    solid: int = 128  # alpha >= this counts as product
    low: int = 26  # 0.1 * 255: alpha in (low, high) is "undecided"
    high: int = 230  # 0.9 * 255
    border_px_frac: float = 0.01  # width of the frame ring for border_touch, share of the short side
    min_blob_share: float = 0.05  # blobs below this share of the largest are not counted as objects
    max_undecided: float = 0.15  # undecided pixels / (undecided + solid) pixels
    min_fg_share: float = 0.0  # product area / frame area
    max_fg_share: float = 0.80
    max_border_touch: float = 0.10  # share of the frame ring covered by product
    max_objects: int = 1  # separate products (blobs; a matched pair of blobs counts as one)
    # a matched pair (a pair of shoes, earrings, gloves shot side by side) is one product:
    # exactly two blobs whose areas are within this ratio (smaller / larger) ...
    pair_min_area_ratio: float = 0.8  # 0 = never count two blobs as one product
    # ... and whose outlines have nearly the same shape: cv2.matchShapes (Hu moments, method
    # I1; a blob and its mirror image score ~0). Both values set by hand, not fitted;
    # ``python -m bench.gate_pairs`` lists what they take. Two like items cut out of a
    # shelf pass this test too: the other rules have to refuse those masks.
    pair_max_shape_distance: float = 0.2
    min_main_share: float = 0.0  # largest blob / all product pixels
    min_solidity: float = 0.0  # product area / its box area
    min_refine_iou: float = 0.0  # IoU(model mask, refined mask); 0 = not used
    safe_margin: float = 0.0  # safe treatment: square crop around the mask box grown by this share
    # no crop around a speck: a mask box whose longer side is under this share of the photo's
    # short side leaves the photo whole (a 3 px blob made a 6x6 px "photo" before)
    safe_min_box: float = 0.1


# Per remover: a gate fitted on that remover's own masks (their signals differ in
# kind: rules calibrated on u2netp masks refuse good IS-Net masks that touch the
# frame). Fitted with ``python -m bench.calibrate_gate --labelled isnet-imgly``: the
# most good masks (IoU >= 0.8 with the labelled object) passed on GrabCut + COCO_MVal
# at no lower precision than the default gate has on u2netp's masks (0.480 vs 0.479;
# 36 vs 31 of 51 good IS-Net masks passed). Models not listed use ``CleanConfig.gate``.
# u2net is not listed on purpose: the same fit (``--labelled u2netp,u2net``; its masks
# pass the default gate at precision 0.398, u2netp's 0.486) keeps 0.486 only by refusing
# any mask over 40 % of the frame (or, with that rule kept at 0.8, any with over 5 %
# undecided alpha). Behind u2netp on the clothing photos the 40 % rule refused 88 masks,
# 29 of which the default gate whitens, every one a clean cut-out of a garment that
# fills the photo (docs/u2net-large-products.jpg); on grocery val both gates measured
# the same (README, "u2net: the commercial-licence cascade").
MODEL_GATES: tuple[tuple[str, GateConfig], ...] = (
    ("isnet-imgly", GateConfig(max_border_touch=0.30, min_fg_share=0.02, max_fg_share=1.0)),
)


@dataclass(frozen=True)
class CleanConfig:
    """Everything `hygiene.clean` needs to know. `fill`/`size` None = preset's."""

    preset: str = DEFAULT_PRESET
    model: str = "u2netp"  # or "cascade" (= cascade[0] with fallback_model cascade[1])
    # second remover, run only on photos whose first cut-out the gate does not trust;
    # "" = none. Opt-in: the strong remover's weights are AGPL-3.0. A comma-separated
    # chain ("isnet-imgly,u2net") tries each in turn until one's cut-out passes its gate.
    fallback_model: str = ""
    cascade: tuple[str, str] = CASCADE_PAIR  # (fast, strong) of model="cascade"
    fill: float | None = None
    size: int | None = None
    max_upscale: float = 2.0  # never enlarge the product more than this; flag instead
    transparent: bool = False  # keep a transparent PNG instead of white
    mask_threshold: int = 128  # alpha >= this counts as product for the box
    min_component_share: float = 0.05  # mask blobs smaller than this share of the largest are dropped
    fg_estimation: bool = True  # foreground colour estimation at soft edges (blur-fusion, compose.py)
    checks: CheckConfig = field(default_factory=CheckConfig)
    refine: RefineConfig = field(default_factory=RefineConfig)
    gate: GateConfig = field(default_factory=GateConfig)
    # (remover, its own gate): used for that remover's masks instead of ``gate``
    model_gates: tuple[tuple[str, GateConfig], ...] = MODEL_GATES
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    def __post_init__(self) -> None:
        if self.model == CASCADE:  # resolved here so every caller (CLI, API, benches) agrees
            object.__setattr__(self, "model", self.cascade[0])
            object.__setattr__(self, "fallback_model", self.fallback_model or self.cascade[1])
        chain: list[str] = []
        for name in (n.strip() for n in self.fallback_model.split(",")):
            if name and name != self.model and name not in chain:
                chain.append(name)
        object.__setattr__(self, "fallback_model", ",".join(chain))
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; choose from {', '.join(PRESETS)}")
        if self.fill is not None and not 0.1 <= self.fill <= 1.0:
            raise ValueError(f"fill must be between 0.1 and 1.0, got {self.fill}")
        if self.size is not None and not 64 <= self.size <= 10_000:
            raise ValueError(f"size must be between 64 and 10000 px, got {self.size}")
        if self.max_upscale < 1.0:
            raise ValueError(f"max_upscale must be >= 1.0, got {self.max_upscale}")

    @property
    def fallback_models(self) -> tuple[str, ...]:
        """The removers tried in turn after ``model`` (``fallback_model`` split)."""
        return tuple(self.fallback_model.split(",")) if self.fallback_model else ()

    def gate_for(self, model: str) -> GateConfig:
        """The gate that judges ``model``'s masks: its own from ``model_gates``, else ``gate``.

        ``gate.enabled=False`` turns every gate off."""
        own = dict(self.model_gates).get(model)
        return own if own is not None and self.gate.enabled else self.gate

    @property
    def preset_rules(self) -> Preset:
        return PRESETS[self.preset]

    @property
    def target_fill(self) -> float:
        return self.fill if self.fill is not None else self.preset_rules.fill

    @property
    def target_size(self) -> int:
        return self.size if self.size is not None else self.preset_rules.size

    def fingerprint(self) -> str:
        """Stable text of every setting that can change the output (the batch manifest's key)."""
        d = dataclasses.asdict(self)
        d["runtime"] = settings_fields(self.runtime, model=self.model)
        del d["checks"]["rules"]  # the rules judge the output and do not shape it (RuleConfig)
        return json.dumps(d, sort_keys=True)
