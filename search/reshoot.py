"""A stand-in "second shot" of a product, for the demo's retrieval check.

The demo has only the shipped sample photos. To show the before/after report
without any dev data, each photo is re-shot synthetically (mirrored, cropped
off-centre, tilted, re-lit, re-encoded), and the task is to find the product's
listing (its cleaned photo) from the re-shot. Real figures come from the
benches on real data (bench/retrieval_*.py), never from these.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Sequence

from PIL import Image, ImageEnhance, ImageOps

from .datasets import LabelledImage


def reshoot(image: Image.Image, rng: random.Random) -> Image.Image:
    img = ImageOps.mirror(image.convert("RGB"))
    w, h = img.size
    dx, dy = int(w * rng.uniform(0.0, 0.08)), int(h * rng.uniform(0.0, 0.08))
    img = img.crop((dx, dy, w - int(w * rng.uniform(0.0, 0.08)), h - int(h * rng.uniform(0.0, 0.08))))
    img = img.rotate(rng.uniform(-6, 6), resample=Image.Resampling.BICUBIC, expand=False,
                     fillcolor=img.getpixel((0, 0)))
    img = ImageEnhance.Brightness(img).enhance(rng.uniform(0.85, 1.15))
    return ImageEnhance.Color(img).enhance(rng.uniform(0.85, 1.15))


def make_reshoots(paths: Sequence[Path], out_dir: Path, seed: int = 0) -> list[LabelledImage]:
    """Write one re-shot per photo as out_dir/<stem>/<stem>.jpg; label = sku = stem."""
    from photos.config import OutputConfig
    from photos.io import load_image, save_image_atomic

    rng = random.Random(seed)
    items = []
    for path in sorted(paths):
        target = out_dir / path.stem / f"{path.stem}.jpg"
        shot = reshoot(load_image(path), rng)
        target.parent.mkdir(parents=True, exist_ok=True)
        save_image_atomic(shot, target, OutputConfig(format="jpg", jpeg_quality=85))
        items.append(LabelledImage(target, path.stem, path.stem))
    return items
