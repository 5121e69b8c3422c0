"""What a photo's catalog (or query) vector is: raw, cleaned, or fused.

* ``raw``: the embedding of the photo as given (the default);
* ``clean``: the embedding of the cleaned photo (``hygiene.clean``; the embedder sees
  ``ViewConfig``'s view of it, ``search.views``);
* ``fused``: the mean of the two, L2-normalised (``fuse``).

A catalog records its mode in its header (``embed``), so searches and later additions
embed the same way (a query may still choose another mode).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from hygiene.config import CleanConfig

from .config import DEFAULT_VIEW, ViewConfig

EMBED_MODES = ("raw", "clean", "fused")


def fuse(raw: np.ndarray, cleaned: np.ndarray) -> np.ndarray:
    """Mean of the raw and the cleaned photo's embeddings, L2-normalised (row-wise)."""
    v = np.asarray(raw, np.float32) + np.asarray(cleaned, np.float32)
    norm = np.linalg.norm(v, axis=1, keepdims=True)
    return v / np.where(norm > 0, norm, 1.0)


def cleaned_view(image: Image.Image, config: CleanConfig, view: ViewConfig = DEFAULT_VIEW) -> Image.Image:
    """What the embedder sees of ``image`` cleaned (the safe crop when the gate did not trust the mask)."""
    from hygiene.pipeline import CLEANED, clean

    from .views import compose_view, is_output

    result = clean(image, config)
    if result.status != CLEANED or is_output(view, config):
        return result.image.convert("RGB")
    return compose_view(image, result.mask, config, view, given_alpha=result.model == "input-alpha")


def embed_images(images: Sequence[Image.Image], embedder, mode: str = "raw",
                 clean_config: CleanConfig | None = None, view: ViewConfig = DEFAULT_VIEW) -> np.ndarray:
    """(n, d) float32 vectors of ``images`` in ``mode`` (see module doc)."""
    if mode not in EMBED_MODES:
        raise ValueError(f"embed mode must be one of {', '.join(EMBED_MODES)}, got {mode!r}")
    if mode == "raw":
        return np.asarray(embedder.embed(list(images)), np.float32)
    config = clean_config or CleanConfig()
    cleaned = np.asarray(embedder.embed([cleaned_view(im, config, view) for im in images]), np.float32)
    if mode == "clean":
        return cleaned
    return fuse(np.asarray(embedder.embed(list(images)), np.float32), cleaned)


def embed_header(mode: str, clean_config: CleanConfig | None = None, view: ViewConfig = DEFAULT_VIEW) -> dict:
    """The catalog header's record of how its vectors are made (``Catalog.create(embed=...)``)."""
    from dataclasses import asdict

    if mode not in EMBED_MODES:
        raise ValueError(f"embed mode must be one of {', '.join(EMBED_MODES)}, got {mode!r}")
    if mode == "raw":
        return {"mode": "raw"}
    config = clean_config or CleanConfig()
    return {"mode": mode, "model": config.model, "fallback_model": config.fallback_model,
            "preset": config.preset, "view": asdict(view)}


def settings_of(header: dict, runtime=None) -> tuple[str, CleanConfig, ViewConfig]:
    """(mode, clean settings, view) back from ``embed_header``'s record."""
    mode = header.get("mode", "raw")
    if mode not in EMBED_MODES:
        raise ValueError(f"catalog embed mode {mode!r} is unknown to this version ({', '.join(EMBED_MODES)})")
    kw = {"runtime": runtime} if runtime is not None else {}
    config = CleanConfig(model=header.get("model", CleanConfig.model), preset=header.get("preset", CleanConfig.preset),
                         fallback_model=header.get("fallback_model", ""), **kw)
    return mode, config, ViewConfig(**header.get("view", {}))
