"""Mask IoU against time for the isnet-imgly input side, u2netp as the anchor, in one run.

    python -m bench.isnet_size [--sides 1024,768,640,512] [--coco-every 3] [--out FILE]

Protocol of bench/segmentation.py: GrabCut (25 photos) IoU over the frame with
the unlabelled band left out; COCO_MVal IoU inside the labelled object's box
grown by 0.10 of its side; masks binarised at alpha >= 128. ``--coco-every N``
takes every N-th COCO_MVal photo (all 240 with 1).

Every photo is segmented by every variant in the same process, one onnxruntime
thread each, the variants' order rotated from photo to photo, so the times are
ratios to u2netp measured side by side (the machine may be shared). The
times include the pre- and post-processing (``segment.predict_alpha``).

The pick: the smallest side whose mean IoU is within ``--tolerance`` (0.01) of
1024's on every set.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from itertools import zip_longest
from pathlib import Path

import numpy as np
from PIL import Image

from bench.segmentation import coco_gt, coco_items, grabcut_gt, grabcut_items, iou, load_rgb
from hygiene import isnet, segment
from hygiene.config import RuntimeConfig


def variants(sides: list[int]) -> dict[str, tuple[str, RuntimeConfig]]:
    out = {"u2netp": ("u2netp", RuntimeConfig(threads=1))}
    for side in sides:
        out[f"isnet@{side}"] = (isnet.NAME, RuntimeConfig(threads=1, isnet_side=side))
    return out


def summarise(rows: list[dict], names: list[str], sets: list[str], sides: list[int], tolerance: float) -> dict:
    out: dict = {"sets": {}, "ms_median": {}, "ratio_to_u2netp": {}}
    for s in sets:
        sub = [r for r in rows if r["set"] == s]
        out["sets"][s] = {"n": len(sub), **{n: {"mean_iou": round(float(np.mean([r[n]["iou"] for r in sub])), 4),
                                               "median_iou": round(float(np.median([r[n]["iou"] for r in sub])), 4)}
                                           for n in names}}
    for n in names:
        out["ms_median"][n] = round(1000 * float(np.median([r[n]["s"] for r in rows])), 1)
    for n in names:  # per-photo ratio, then the median: the load of the moment cancels out
        out["ratio_to_u2netp"][n] = round(float(np.median([r[n]["s"] / r["u2netp"]["s"] for r in rows])), 2)
    best = f"isnet@{max(sides)}"
    ok = [side for side in sides if all(
        out["sets"][s][f"isnet@{side}"]["mean_iou"] >= out["sets"][s][best]["mean_iou"] - tolerance
        for s in sets)]
    out["pick"] = {"side": min(ok), "rule": f"smallest side with mean IoU within {tolerance} of {best} on "
                                            f"{', '.join(sets)}"}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sides", default="1024,768,640,512")
    ap.add_argument("--sets", default="grabcut,coco")
    ap.add_argument("--coco-every", type=int, default=1, help="every N-th COCO_MVal photo")
    ap.add_argument("--margin", type=float, default=0.10, help="COCO box margin, share of box side")
    ap.add_argument("--tolerance", type=float, default=0.01)
    ap.add_argument("--out", type=Path, default=None, help="per-photo rows and the summary (JSON)")
    args = ap.parse_args(argv)
    sides = [int(s) for s in args.sides.split(",")]
    sets = args.sets.split(",")
    table = variants(sides)
    names = list(table)
    per_set = [[("grabcut", img, gt) for img, gt in grabcut_items()] if s == "grabcut" else
               [("coco", img, gt) for img, gt in coco_items()[::args.coco_every]] for s in sets]
    # the sets interleaved, so a run stopped early still covers each of them
    items = [it for group in zip_longest(*per_set) for it in group if it is not None]
    args.planned = len(items)
    warm = Image.fromarray(load_rgb(items[0][1]))
    for model, runtime in table.values():  # session start-up, untimed
        segment.predict_alpha(warm, model, runtime)
    rows = []
    started = time.perf_counter()
    for k, (s, img, gtp) in enumerate(items):
        pil = Image.fromarray(load_rgb(img))
        fg, scored = grabcut_gt(gtp) if s == "grabcut" else coco_gt(gtp, args.margin)
        row = {"set": s, "image": img.name}
        for n in names[k % len(names):] + names[:k % len(names)]:  # rotate the order
            model, runtime = table[n]
            t0 = time.perf_counter()
            alpha = segment.predict_alpha(pil, model, runtime)
            dt = time.perf_counter() - t0
            row[n] = {"iou": round(iou(alpha >= 128, fg, scored), 4), "s": round(dt, 4)}
        rows.append(row)
        print(f"{k + 1}/{len(items)} {s} {img.name} " + " ".join(f"{n}={row[n]['iou']:.3f}" for n in names),
              file=sys.stderr, flush=True)
        summary = _write(args, rows, names, sets, sides, started)  # after every photo: a partial run counts
    json.dump(summary, sys.stdout, indent=1)
    print()
    return 0


def _write(args, rows, names, sets, sides, started) -> dict:
    done = [s for s in sets if any(r["set"] == s for r in rows)]
    summary = summarise(rows, names, done, sides, args.tolerance)
    summary["photos"] = f"{len(rows)} of {args.planned}"
    summary["wall_s"] = round(time.perf_counter() - started, 1)
    summary["command"] = "python -m bench.isnet_size " + " ".join(sys.argv[1:])
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_suffix(".tmp")
        tmp.write_text(json.dumps({"summary": summary, "rows": rows}, indent=1))
        tmp.replace(args.out)
    return summary


if __name__ == "__main__":
    raise SystemExit(main())
