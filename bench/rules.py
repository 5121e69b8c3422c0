"""The marketplace rules (issue 27) on the shipped real photos: each photo of sample_images/ and
demo_data/ is cleaned, then judged plain (false findings) and with a synthetic border, colour
block, inset and text overlay drawn onto its cleaned output (found or missed), by
`hygiene.check` of the written file (no mask, as `shelfready check` sees it). Also the time of
the rules against clean's own time per photo, and false findings on the raw photos.

    .venv/bin/python -m bench.rules [--text-overlay] [--limit N]
"""
from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from bench._common import cpu_name
from hygiene import CleanConfig, check, clean
from hygiene.checks import rule_checks
from hygiene.config import CheckConfig, RuleConfig
from hygiene.frame import product_box

ROOT = Path(__file__).resolve().parents[1]
FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf")
WORDS = ("FREE SHIPPING", "50% OFF", "BEST SELLER", "NEW")


def photos(limit: int) -> list[Path]:
    found = sorted((ROOT / "sample_images").glob("*.jpg")) + sorted((ROOT / "demo_data").glob("*/*/*.jpg"))
    return found[:limit] if limit else found


def drawn(image: Image.Image, kind: str, rng: random.Random, inset_from: Image.Image) -> Image.Image:
    """The cleaned ``image`` with one synthetic violation of ``kind`` drawn on."""
    out = image.convert("RGB").copy()
    side = out.size[0]
    colour = tuple(rng.randrange(0, 200) for _ in range(3))
    draw = ImageDraw.Draw(out)
    if kind == "border":
        width = max(2, round(side * rng.uniform(0.004, 0.04)))
        draw.rectangle((0, 0, side - 1, side - 1), outline=colour, width=width)
    elif kind == "colour_block":
        w, h = round(side * rng.uniform(0.12, 0.3)), round(side * rng.uniform(0.08, 0.2))
        x = 0 if rng.random() < 0.5 else side - w
        y = 0 if rng.random() < 0.5 else side - h
        draw.rectangle((x, y, x + w - 1, y + h - 1), fill=colour)
    elif kind == "inset":
        inset = inset_from.copy()
        inset.thumbnail((round(side * rng.uniform(0.18, 0.3)),) * 2)
        pad = side // 40
        x = pad if rng.random() < 0.5 else side - inset.size[0] - pad
        y = pad if rng.random() < 0.5 else side - inset.size[1] - pad
        out.paste(inset, (x, y))
    elif kind == "overlay":
        size = max(12, round(side * rng.uniform(0.03, 0.08)))
        font = ImageFont.truetype(str(FONT), size) if FONT.is_file() else ImageFont.load_default(size)
        text = rng.choice(WORDS)
        x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font)
        pad = side // 50
        x = pad if rng.random() < 0.5 else side - (x1 - x0) - pad
        y = pad if rng.random() < 0.5 else side - (y1 - y0) - pad
        draw.text((x - x0, y - y0), text, fill=colour, font=font)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--text-overlay", action="store_true", help="also the overlay check (ppocr-det weights)")
    ap.add_argument("--limit", type=int, default=0, help="first N photos only (0 = all)")
    ap.add_argument("--seed", type=int, default=27)
    ap.add_argument("--out", default="out/bench/rules.json")
    args = ap.parse_args(argv)
    config = CleanConfig(checks=CheckConfig(rules=RuleConfig(text_overlay=args.text_overlay)))
    plain_config = CleanConfig()
    kinds = ["border", "colour_block", "inset"] + (["overlay"] if args.text_overlay else [])
    rules = ["border", "colour_block", "inset", "cut_off"] + (["overlay"] if args.text_overlay else [])
    rng = random.Random(args.seed)
    inset_from = Image.open(ROOT / "sample_images" / "shoes.jpg").convert("RGB")
    found = {k: 0 for k in kinds}
    false_clean = {r: 0 for r in rules}
    false_raw = {r: 0 for r in ("border", "colour_block", "inset")}  # cut-off and overlay need a mask or white
    n = n_raw = cut_found = 0
    t_clean = t_rules = t_overlay = 0.0
    for path in photos(args.limit):
        photo = Image.open(path).convert("RGB")
        n_raw += 1
        raw = check(photo, plain_config)["checks"]
        for r in false_raw:
            false_raw[r] += not raw[r]["passed"]
        t = time.perf_counter()
        result = clean(photo, plain_config)
        t_clean += time.perf_counter() - t
        if result.status != "cleaned":
            continue
        n += 1
        rgb = np.asarray(result.image.convert("RGB"))
        t = time.perf_counter()
        rule_checks(rgb, None, True, plain_config.checks)
        t_rules += time.perf_counter() - t
        t = time.perf_counter()
        plain = check(result.image, config)["checks"]
        t_overlay += time.perf_counter() - t
        for r in rules:
            false_clean[r] += not plain[r]["passed"]
        for kind in kinds:
            found[kind] += not check(drawn(result.image, kind, rng, inset_from), config)["checks"][kind]["passed"]
        # cut off: the photo cropped through its product (at the middle of the mask's box) on a random side
        x0, y0, x1, y1 = product_box(result.mask, 128)
        w, h = photo.size
        side = rng.choice(("left", "right", "top", "bottom"))
        crop = {"right": (0, 0, (x0 + x1) // 2, h), "left": ((x0 + x1) // 2, 0, w, h),
                "bottom": (0, 0, w, (y0 + y1) // 2), "top": (0, (y0 + y1) // 2, w, h)}[side]
        cut = clean(photo.crop(crop), plain_config).report["checks"]["cut_off"]
        cut_found += side in (cut["sides"] or [])
    figures = {
        "cpu": cpu_name(), "photos": n_raw, "cleaned": n, "seed": args.seed,
        "found (synthetic, on the cleaned photos)": {**{k: f"{v}/{n}" for k, v in found.items()},
                                                     "cut_off (photo cropped through the product)": f"{cut_found}/{n}"},
        "false findings on the plain cleaned photos": {k: f"{v}/{n}" for k, v in false_clean.items()},
        "false findings on the raw photos (no mask)": {k: f"{v}/{n_raw}" for k, v in false_raw.items()},
        "seconds per photo": {"clean": round(t_clean / max(1, n_raw), 3),
                              "rules without overlay": round(t_rules / max(1, n), 3),
                              "check with the rules" + (" and overlay" if args.text_overlay else ""):
                                  round(t_overlay / max(1, n), 3)},
    }
    text = json.dumps(figures, indent=2)
    print(text)
    out = ROOT / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")


if __name__ == "__main__":
    main()
