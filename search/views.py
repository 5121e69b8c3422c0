"""Views of a cleaned photo for the embedder: background and fill, composed without a model run.

The marketplace output is pure white with the product at the preset's fill. What
helps visual search may differ, so the evaluation can show the embedder another
*view* of the same cleanup (``search.config.ViewConfig``):

* background ``white`` (the marketplace output), ``grey`` (a light grey level), or
  ``blur`` (the photo's own background, strongly blurred: the product stays sharp);
* ``fill``: the product's longer side as a share of the square canvas.

A view is composed from the original photo, the remover's mask cached beside the
cleaned image (``engines.job.mask_path``) and the cleaning's own steps (the same
refine/tidy/box/layout/foreground estimation as ``hygiene.pipeline.clean``), so white
at the preset's fill reproduces the cleaned image exactly. Only photos the gate
trusted (status ``cleaned``) have views; a ``needs_review`` photo (the safe crop,
original background) is the same image in every view.

The blurred background is a normalised convolution of the photo with the product
masked out (blur(B (1 - a)) / blur(1 - a)), so the product's colours do not bleed
into its surroundings; where the canvas reaches past the photo it is mirrored.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from hygiene import compose, frame, refine
from hygiene.config import CleanConfig

from .config import DEFAULT_VIEW, ViewConfig

BLUR_WORK_SIDE = 256  # the blurred background is made at most this large (it carries no detail)


def parse_view(spec: str, base: ViewConfig = DEFAULT_VIEW) -> ViewConfig:
    """``"grey"``, ``"blur@0.95"``, ``"white@1.0"`` or ``"@0.95"`` -> ViewConfig (other fields from ``base``)."""
    background, _, fill = spec.strip().partition("@")
    try:
        fill_value = float(fill) if fill else base.fill
    except ValueError:
        raise ValueError(f"view {spec!r}: fill must be a number, e.g. blur@0.95") from None
    return ViewConfig(background=background or base.background, fill=fill_value, grey=base.grey,
                      blur_sigma=base.blur_sigma)


def view_name(view: ViewConfig) -> str:
    """Short text of a view: ``white``, ``grey@0.95``, ``blur`` ..."""
    return view.background + ("" if view.fill is None else f"@{view.fill:g}")


def is_output(view: ViewConfig, config: CleanConfig) -> bool:
    """Whether the view is the marketplace output itself (white at the preset's fill)."""
    return view.background == "white" and (view.fill is None or view.fill == config.target_fill)


def view_key(view: ViewConfig, config: CleanConfig) -> str:
    """Cache tag of a view's embeddings ("" for the marketplace output: today's cache)."""
    if is_output(view, config):
        return ""
    param = {"white": "", "grey": f"{view.grey}", "blur": f"{view.blur_sigma:g}"}[view.background]
    return f"{view.background}{param}@{view.fill or config.target_fill:g}"


def _rgb_of(image: Image.Image) -> np.ndarray:
    """The photo's colours as the cleanup sees them (transparency flattened onto white)."""
    if image.mode == "RGBA":
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, image).convert("RGB"))
    return np.asarray(image.convert("RGB"))


def over(fg: np.ndarray, alpha: np.ndarray, bg: np.ndarray) -> np.ndarray:
    """``fg`` over ``bg`` by ``alpha`` (uint8); on a white ``bg`` exactly ``compose.on_white``."""
    a = alpha.astype(np.uint16)[..., None]
    out = fg.astype(np.uint16) * a + bg.astype(np.uint16) * (255 - a) + 127
    out //= 255
    return out.astype(np.uint8)


def blurred_background(rgb: np.ndarray, alpha: np.ndarray, layout: frame.Layout, sigma_share: float) -> np.ndarray:
    """The photo's background with the product masked out, blurred, on the layout's canvas (uint8)."""
    h, w = alpha.shape
    k = min(1.0, BLUR_WORK_SIDE / max(h, w))
    size = (max(1, round(w * k)), max(1, round(h * k)))
    small = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA).astype(np.float32)
    weight = 1.0 - cv2.resize(alpha, size, interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    # sigma in canvas px -> source px -> work px
    sigma = max(0.5, sigma_share * layout.canvas / layout.scale * k)
    num = cv2.GaussianBlur(small * weight[..., None], (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    den = cv2.GaussianBlur(weight, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)[..., None]
    # far inside a large product no background is near: its mean colour fills in
    fallback = (small * weight[..., None]).sum((0, 1)) / max(float(weight.sum()), 1e-6)
    if weight.sum() < 1e-6:
        fallback = small.reshape(-1, 3).mean(0)
    bg = np.where(den > 1e-3, num / np.maximum(den, 1e-6), fallback)
    # work px -> canvas px: the product box lands on layout.placed
    s = layout.scale / k
    x0, y0 = layout.box[:2]
    px, py = layout.placed[:2]
    m = np.float32([[s, 0, px - x0 * k * s], [0, s, py - y0 * k * s]])
    canvas = cv2.warpAffine(bg, m, (layout.canvas, layout.canvas), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_REFLECT)
    return np.clip(canvas + 0.5, 0, 255).astype(np.uint8)


def _photo_and_alpha(image, mask: np.ndarray, config, given_alpha: bool):
    """The photo's RGB and the cleanup's alpha from ``mask``: refined and tidied as
    ``hygiene.pipeline.clean`` does for a trusted mask (the photo's own transparency as given)."""
    rgb = _rgb_of(image)
    if mask.shape != rgb.shape[:2]:
        raise ValueError(f"mask {mask.shape[1]}x{mask.shape[0]} does not match the photo "
                         f"{rgb.shape[1]}x{rgb.shape[0]}")
    alpha = mask if given_alpha else refine.refine_alpha(rgb, mask, config.refine)
    return rgb, compose.tidy_alpha(alpha, config.mask_threshold, config.min_component_share)


def compose_view(image: Image.Image, mask: np.ndarray, config: CleanConfig, view: ViewConfig,
                 given_alpha: bool = False) -> Image.Image:
    """The view of a cleaned photo: ``image`` is the original, ``mask`` the remover's alpha of it.

    Follows ``hygiene.pipeline.clean``'s steps for a trusted mask (refine, tidy, box,
    layout, foreground estimation, one resize), then puts the product on the view's
    background at the view's fill. ``given_alpha``: the mask is the photo's own
    transparency (no refinement, like the cleanup).
    """
    rgb, alpha = _photo_and_alpha(image, mask, config, given_alpha)
    box = frame.product_box(alpha, config.mask_threshold)
    if box is None:
        raise ValueError("no product in the cached mask")
    fill = view.fill if view.fill is not None else config.target_fill
    layout = frame.plan(box, config.target_size, fill, config.max_upscale)
    region = compose.product_region(rgb, alpha, box, layout, config.fg_estimation)
    region_rgb, region_a = region[..., :3], region[..., 3]
    if view.background == "blur":
        canvas = blurred_background(rgb, alpha, layout, view.blur_sigma)
    else:
        level = 255 if view.background == "white" else view.grey
        canvas = np.full((layout.canvas, layout.canvas, 3), level, np.uint8)
    px, py, px1, py1 = layout.placed
    canvas[py:py1, px:px1] = over(region_rgb, region_a, canvas[py:py1, px:px1])
    return Image.fromarray(canvas, "RGB")


def load_view(source: Path, cleaned: Path, mask: Path | None, status: str, model: str,
              config: CleanConfig, view: ViewConfig) -> Image.Image:
    """The image the embedder sees of one cached photo in ``view`` (see module doc)."""
    from photos.io import load_image

    if status != "cleaned" or is_output(view, config):
        return load_image(cleaned)  # the marketplace output, or the safe crop in every view
    if mask is None or not Path(mask).is_file():
        raise ValueError("no cached mask for this photo (cache made before views): clean it again "
                         "without --cache-key")
    alpha = np.asarray(Image.open(mask).convert("L"))
    return compose_view(load_image(source), alpha, config, view, given_alpha=model == "input-alpha")


# --------------------------------------------------------------------------- the photo's own framing
# What the reasons (search/reasons.py) show the embedder: the raw photo, nothing moved or resized,
# with the product or its surroundings taken away, using the same tidied mask as the cleanup.

FRAMED_KINDS = ("product-grey", "product-white", "background")


def framed_view(image: Image.Image, mask: np.ndarray, config: CleanConfig, kind: str, grey: int,
                given_alpha: bool = False) -> Image.Image:
    """The photo at its own framing and size: ``product-grey`` / ``product-white`` keep only the
    product (on a flat ``grey`` level / on white); ``background`` keeps only the surroundings, the
    product's box filled with ``grey``. A mask with no product gives an all-grey ``product-*``
    view and the whole photo as ``background``."""
    if kind not in FRAMED_KINDS:
        raise ValueError(f"unknown framed view {kind!r}; known: {', '.join(FRAMED_KINDS)}")
    rgb, alpha = _photo_and_alpha(image, mask, config, given_alpha)
    if kind == "background":
        out = rgb.copy()
        box = frame.product_box(alpha, config.mask_threshold)
        if box is not None:
            x0, y0, x1, y1 = box
            out[y0:y1, x0:x1] = grey
        return Image.fromarray(out, "RGB")
    level = 255 if kind == "product-white" else grey
    return Image.fromarray(over(rgb, alpha, np.full_like(rgb, level)), "RGB")


def load_framed(source: Path, mask: Path | None, model: str, config: CleanConfig, kind: str,
                grey: int) -> Image.Image:
    """``framed_view`` of one cached photo (any status: the remover's mask is cached for each)."""
    from photos.io import load_image

    if mask is None or not Path(mask).is_file():
        raise ValueError("no cached mask for this photo (cache made before views): clean it again "
                         "without --cache-key")
    alpha = np.asarray(Image.open(mask).convert("L"))
    return framed_view(load_image(source), alpha, config, kind, grey, given_alpha=model == "input-alpha")
