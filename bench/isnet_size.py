"""Mask IoU against time for the isnet-imgly input side, u2netp as the anchor, in one run.

    python -m bench.isnet_size [--sides 640,1024,768,512] [--coco-every 1] [--out FILE] [--resume]

Protocol of bench/segmentation.py: GrabCut (25 photos) IoU over the frame with
the unlabelled band left out; COCO_MVal IoU inside the labelled object's box
grown by 0.10 of its side; masks binarised at alpha >= 128. ``--coco-every N``
takes every N-th COCO_MVal photo (all 240 with 1, the default).

Memory: one IS-Net session at a time. The sides are run one after the other
(a pass each); a pass loads the IS-Net session of its side, segments every
photo, and frees the session before the next side (an IS-Net session at 1024
px holds well over a GB). The small u2netp session stays loaded: in every pass
each photo is segmented by u2netp and by IS-Net side by side (order alternated
from photo to photo), one onnxruntime thread each, so the times are per-photo
ratios to u2netp measured at the same moment (the machine may be shared). The
times include the pre- and post-processing (``segment.predict_alpha``). The
peak resident memory of the process is recorded after each pass.

The masks of u2netp and of IS-Net at the default side are kept in the mask
cache of bench/segmentation.py (``cached_alpha`` reads them later, e.g.
bench/calibrate_gate.py). ``--out`` is rewritten after every photo;
``--resume`` keeps the finished photos of an earlier ``--out``.

The pick: the smallest side whose mean IoU is within ``--tolerance`` (0.01) of
the largest side's on every set.
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from itertools import zip_longest
from pathlib import Path

import numpy as np
from PIL import Image

from bench.segmentation import coco_gt, coco_items, grabcut_gt, grabcut_items, iou, load_rgb, store_alpha
from removers import isnet, segment
from removers.config import RuntimeConfig

ANCHOR = "u2netp"


def summarise(rows: list[dict], names: list[str], sets: list[str], sides: list[int], tolerance: float) -> dict:
    out: dict = {"sets": {}, "ms_median": {}, "ratio_to_u2netp": {}}
    for s in sets:
        sub = [r for r in rows if r["set"] == s]
        out["sets"][s] = {n: {"n": len(got), "mean_iou": round(float(np.mean(got)), 4),
                              "median_iou": round(float(np.median(got)), 4)}
                          for n in names if (got := [r[n]["iou"] for r in sub if n in r])}
    for n in names:
        done = [r for r in rows if n in r]
        if done:
            out["ms_median"][n] = round(1000 * float(np.median([r[n]["s"] for r in done])), 1)
            if n != ANCHOR:  # per-photo ratio to u2netp timed beside it, then the median
                out["ratio_to_u2netp"][n] = round(float(np.median([r[n]["s"] / r[n]["anchor_s"] for r in done])), 2)
    done_sides = [s for s in sides if all(f"isnet@{s}" in out["sets"][k] for k in sets)]
    if done_sides:
        best = f"isnet@{max(done_sides)}"
        ok = [side for side in done_sides if all(
            out["sets"][k][f"isnet@{side}"]["mean_iou"] >= out["sets"][k][best]["mean_iou"] - tolerance
            for k in sets)]
        out["pick"] = {"side": min(ok), "rule": f"smallest side with mean IoU within {tolerance} of {best} "
                                                f"on {', '.join(sets)} (sides done: {done_sides})"}
    return out


def _rss_mb() -> dict:
    cur = 0.0
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                cur = int(line.split()[1]) / 1024
    return {"rss_mb": round(cur), "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def _trim() -> None:
    """Hand freed heap pages back to the system (glibc keeps them otherwise)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _timed(pil: Image.Image, model: str, runtime: RuntimeConfig) -> tuple[np.ndarray, float]:
    t0 = time.perf_counter()
    alpha = segment.predict_alpha(pil, model, runtime)
    return alpha, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sides", default="640,1024,768,512", help="IS-Net input sides, run in this order")
    ap.add_argument("--sets", default="grabcut,coco")
    ap.add_argument("--coco-every", type=int, default=1, help="every N-th COCO_MVal photo")
    ap.add_argument("--margin", type=float, default=0.10, help="COCO box margin, share of box side")
    ap.add_argument("--tolerance", type=float, default=0.01)
    ap.add_argument("--out", type=Path, default=None, help="per-photo rows and the summary (JSON)")
    ap.add_argument("--resume", action="store_true", help="keep the finished photos of --out")
    args = ap.parse_args(argv)
    sides = [isnet.check_side(int(s)) for s in args.sides.split(",")]
    sets = args.sets.split(",")
    names = [ANCHOR] + [f"isnet@{s}" for s in sides]
    per_set = [[("grabcut", img, gt) for img, gt in grabcut_items()] if s == "grabcut" else
               [("coco", img, gt) for img, gt in coco_items()[::args.coco_every]] for s in sets]
    # the sets interleaved, so a pass stopped early still covers each of them
    items = [it for group in zip_longest(*per_set) for it in group if it is not None]
    args.planned = len(items)
    rows = {(r["set"], r["image"]): r for r in (json.loads(args.out.read_text())["rows"]
                                               if args.resume and args.out and args.out.is_file() else [])}
    rows = {(s, img.name): rows.get((s, img.name), {"set": s, "image": img.name}) for s, img, _ in items}
    anchor_rt = RuntimeConfig(threads=1)
    default_side = RuntimeConfig().isnet_side
    started = time.perf_counter()
    memory: dict = {}
    for side in sides:
        name, runtime = f"isnet@{side}", RuntimeConfig(threads=1, isnet_side=side)
        todo = [it for it in items if name not in rows[(it[0], it[1].name)]]
        if todo:
            warm = Image.fromarray(load_rgb(todo[0][1]))
            segment.predict_alpha(warm, ANCHOR, anchor_rt)  # session start-up, untimed
            segment.predict_alpha(warm, isnet.NAME, runtime)
        for k, (s, img, gtp) in enumerate(todo):
            pil = Image.fromarray(load_rgb(img))
            fg, scored = grabcut_gt(gtp) if s == "grabcut" else coco_gt(gtp, args.margin)
            runs = {}
            for model, rt in ([(ANCHOR, anchor_rt), (isnet.NAME, runtime)][::1 if k % 2 else -1]):
                runs[model] = _timed(pil, model, rt)
            row = rows[(s, img.name)]
            (a_alpha, a_s), (i_alpha, i_s) = runs[ANCHOR], runs[isnet.NAME]
            if ANCHOR not in row:
                row[ANCHOR] = {"iou": round(iou(a_alpha >= 128, fg, scored), 4), "s": round(a_s, 4)}
                store_alpha(img, ANCHOR, a_alpha)
            row[name] = {"iou": round(iou(i_alpha >= 128, fg, scored), 4), "s": round(i_s, 4),
                         "anchor_s": round(a_s, 4)}
            if side == default_side:
                store_alpha(img, isnet.NAME, i_alpha)
            print(f"{name} {k + 1}/{len(todo)} {s} {img.name} u2netp={row[ANCHOR]['iou']:.3f} "
                  f"{name}={row[name]['iou']:.3f}", file=sys.stderr, flush=True)
            summary = _write(args, list(rows.values()), names, sets, sides, started, memory)
        segment.release(isnet.NAME)  # free this side's session before the next one
        _trim()
        memory[name] = _rss_mb()
    summary = _write(args, list(rows.values()), names, sets, sides, started, memory)
    json.dump(summary, sys.stdout, indent=1)
    print()
    return 0


def _write(args, rows, names, sets, sides, started, memory) -> dict:
    rows = [r for r in rows if len(r) > 2]
    done = [s for s in sets if any(r["set"] == s for r in rows)]
    summary = summarise(rows, names, done, sides, args.tolerance)
    summary["photos"] = {n: f"{sum(n in r for r in rows)} of {args.planned}" for n in names}
    summary["memory_after_pass"] = memory
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
