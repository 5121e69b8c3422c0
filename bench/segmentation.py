"""Mask quality of the remover, plain vs refined, on real benchmark masks.

    python -m bench.segmentation [--limit N] [--model u2netp] [--sets grabcut,coco]

* GrabCut (25 photos): IoU over the whole frame, the 128 "unlabelled" band
  of ``boundary_GT`` left out of the score.
* COCO_MVal (240 photos, one labelled object each): IoU inside the labelled
  object's box expanded by ``--margin`` (default 0.10 of the box side on each
  side), because the other objects in the scene are not labelled and a remover
  that also cuts them out is not wrong.

Predicted masks are binarised at alpha >= 128. Model masks are cached on disk
(``/tmp/shelfready-masks/<model>/<sha1 of file>.png``) so re-runs only time
the refine step; the model step is timed on the photos that were not cached,
or on ``--time-model N`` photos re-run in the same process for the ratio; on
those photos ``--anchor`` (default u2netp) runs beside ``--model``, alternating,
and ``model_over_anchor`` is the median of the per-photo time ratios.

The same module holds the small data helpers the other bench scripts share
(``load_rgb``, ``cached_alpha``, ``DATA``).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from removers.config import RuntimeConfig

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SHELFREADY_DATA", ROOT.parent / "shared" / "data"))
CACHE = Path(os.environ.get("SHELFREADY_MASK_CACHE", "/tmp/shelfready-masks"))


def load_rgb(path: Path) -> np.ndarray:
    """RGB uint8 array of an image file with its EXIF orientation applied."""
    with Image.open(path) as im:
        return np.asarray(ImageOps.exif_transpose(im).convert("RGB"))


def file_key(path: Path) -> str:
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()


def store_alpha(path: Path, model: str, alpha: np.ndarray) -> None:
    """Keep a model's alpha of an image file in the mask cache (atomic write)."""
    target = CACHE / model / f"{file_key(path)}.png"
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp.png")
    Image.fromarray(alpha).save(tmp)
    tmp.replace(target)


def cached_alpha(path: Path, model: str = "u2netp", threads: int = 1,
                 timings: list | None = None) -> np.ndarray:
    """Model alpha for an image file, computed once and kept under CACHE."""
    target = CACHE / model / f"{file_key(path)}.png"
    if target.is_file():
        return np.asarray(Image.open(target))
    from removers.segment import predict_alpha

    rgb = load_rgb(path)
    t0 = time.perf_counter()
    alpha = predict_alpha(Image.fromarray(rgb), model, RuntimeConfig(threads=threads))
    if timings is not None:
        timings.append(time.perf_counter() - t0)
    store_alpha(path, model, alpha)
    return alpha


# --------------------------------------------------------------------- datasets

def grabcut_items() -> list[tuple[Path, Path]]:
    base = DATA / "iseg_benchmarks" / "GrabCut"
    out = []
    for img in sorted((base / "data_GT").iterdir()):
        gt = base / "boundary_GT" / f"{img.stem}.bmp"
        if gt.is_file():
            out.append((img, gt))
    return out


def coco_items() -> list[tuple[Path, Path]]:
    base = DATA / "iseg_benchmarks" / "COCO_MVal"
    out = []
    for img in sorted((base / "img").iterdir()):
        gt = base / "gt" / f"{img.stem}.png"
        if gt.is_file():
            out.append((img, gt))
    return out


def grabcut_gt(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(foreground bool, scored bool) of a boundary_GT mask."""
    g = np.asarray(Image.open(path).convert("L"))
    return g > 200, (g < 50) | (g > 200)


def coco_gt(path: Path, margin: float) -> tuple[np.ndarray, np.ndarray]:
    """(foreground bool, scored bool = object box expanded by margin)."""
    g = np.asarray(Image.open(path).convert("L")) > 127
    ys, xs = np.nonzero(g)
    scored = np.zeros_like(g)
    if xs.size:
        x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
        mx, my = round((x1 - x0) * margin), round((y1 - y0) * margin)
        scored[max(0, y0 - my):y1 + my, max(0, x0 - mx):x1 + mx] = True
    return g, scored


def iou(pred: np.ndarray, fg: np.ndarray, scored: np.ndarray) -> float:
    p, g = pred[scored], fg[scored]
    union = np.count_nonzero(p | g)
    return float(np.count_nonzero(p & g) / union) if union else 1.0


# ------------------------------------------------------------------------ bench

def run(sets: list[str], limit: int | None, model: str, margin: float,
        time_model: int, out: Path | None, anchor: str = "") -> dict:
    from hygiene.confidence import GateConfig, assess
    from hygiene.refine import RefineConfig, refine_alpha

    cfg = RefineConfig(enabled=True)
    results: dict = {"model": model, "margin": margin, "refine": repr(cfg), "sets": {}}
    model_times: list[float] = []
    refine_times: list[float] = []
    gate_times: list[float] = []
    rows = []
    for name in sets:
        items = grabcut_items() if name == "grabcut" else coco_items()
        if limit:
            items = items[:limit]
        plain, refined = [], []
        for img, gtp in items:
            rgb = load_rgb(img)
            alpha = cached_alpha(img, model, timings=model_times)
            fg, scored = grabcut_gt(gtp) if name == "grabcut" else coco_gt(gtp, margin)
            if fg.shape != alpha.shape:
                raise ValueError(f"{img.name}: mask {fg.shape} vs image {alpha.shape}")
            t0 = time.perf_counter()
            ref = refine_alpha(rgb, alpha, cfg)
            refine_times.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            assess(rgb, alpha, None, GateConfig())
            gate_times.append(time.perf_counter() - t0)
            a, b = iou(alpha >= 128, fg, scored), iou(ref >= 128, fg, scored)
            plain.append(a)
            refined.append(b)
            rows.append({"set": name, "image": img.name, "plain": round(a, 4), "refined": round(b, 4)})
        results["sets"][name] = {
            "n": len(items),
            "plain_mean_iou": round(float(np.mean(plain)), 4),
            "refined_mean_iou": round(float(np.mean(refined)), 4),
            "refined_better": int(np.sum(np.array(refined) > np.array(plain) + 1e-3)),
            "refined_worse": int(np.sum(np.array(refined) < np.array(plain) - 1e-3)),
        }
    # model step timed in the same run as the refine step (ratio, not seconds)
    if time_model and len(model_times) < time_model:
        from removers.segment import predict_alpha

        extra = [img for name in sets
                 for img, _ in (grabcut_items() if name == "grabcut" else coco_items())][:time_model]
        predict_alpha(Image.fromarray(load_rgb(extra[0])), model, RuntimeConfig(threads=1))  # session start-up, untimed
        for img in extra:
            pil = Image.fromarray(load_rgb(img))
            t0 = time.perf_counter()
            predict_alpha(pil, model, RuntimeConfig(threads=1))
            model_times.append(time.perf_counter() - t0)
    if anchor and anchor != model and time_model:
        results.update(anchor_ratio(sets, model, anchor, time_model))
    if model_times:
        results["model_s_median"] = round(float(np.median(model_times)), 4)
        results["refine_s_median"] = round(float(np.median(refine_times)), 4)
        results["gate_s_median"] = round(float(np.median(gate_times)), 4)
        results["gate_over_model"] = round(float(np.median(gate_times) / np.median(model_times)), 4)
        results["refine_over_model"] = round(float(np.median(refine_times) / np.median(model_times)), 3)
        results["cleanup_with_refine_over_without"] = round(
            1 + float(np.median(refine_times) / np.median(model_times)), 3)
    if out:
        out.write_text(json.dumps({"summary": results, "rows": rows}, indent=1))
    return results


def anchor_ratio(sets: list[str], model: str, anchor: str, n: int) -> dict:
    """``model``'s time a photo over ``anchor``'s, the two run side by side on the same ``n``
    photos (order alternated, one thread each, sessions started untimed): median of the
    per-photo ratios."""
    from removers.segment import predict_alpha

    photos = [img for name in sets for img, _ in (grabcut_items() if name == "grabcut" else coco_items())][:n]
    rt = RuntimeConfig(threads=1)
    first = Image.fromarray(load_rgb(photos[0]))
    for m in (model, anchor):
        predict_alpha(first, m, rt)
    secs: dict[str, list[float]] = {model: [], anchor: []}
    for k, img in enumerate(photos):
        pil = Image.fromarray(load_rgb(img))
        for m in ((model, anchor) if k % 2 == 0 else (anchor, model)):
            t0 = time.perf_counter()
            predict_alpha(pil, m, rt)
            secs[m].append(time.perf_counter() - t0)
    ratio = np.array(secs[model]) / np.array(secs[anchor])
    return {"anchor": anchor, "anchor_s_median": round(float(np.median(secs[anchor])), 4),
            "model_over_anchor": round(float(np.median(ratio)), 2), "timed_photos": len(photos)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", default="grabcut,coco")
    ap.add_argument("--limit", type=int, default=None, help="first N photos of each set")
    ap.add_argument("--model", default="u2netp", help="rembg model name (weights must be present)")
    ap.add_argument("--margin", type=float, default=0.10, help="COCO box margin, share of box side")
    ap.add_argument("--time-model", type=int, default=10,
                    help="re-run the model on N photos in this run for the speed ratio")
    ap.add_argument("--anchor", default="u2netp",
                    help="time this model beside --model on the --time-model photos, for the ratio")
    ap.add_argument("--out", type=Path, default=None, help="write per-image JSON here")
    args = ap.parse_args(argv)
    res = run(args.sets.split(","), args.limit, args.model, args.margin, args.time_model, args.out, args.anchor)
    json.dump(res, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
