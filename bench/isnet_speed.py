"""isnet-imgly per inference: onnxruntime vs OpenVINO f32 (and bf16, opt-in), per input side.

    python -m bench.isnet_speed [--sides 640,1024] [--rounds 8] [--threads 1] [--photos 4]

For each side, the variants' sessions are built (OpenVINO from the same
re-targeted graph, ``removers.isnet.graph_file``), then ``--rounds`` rounds
each segment the same ``--photos`` sample photos with every variant, the
variants' order rotated from round to round, so every time has its anchor
(onnxruntime fp32) measured beside it on a shared machine. Times are
``segment.predict_alpha`` (pre- and post-processing included), the per-photo
ratio to onnxruntime taken before the median; mask IoU (alpha >= 128) against
onnxruntime's mask of the same photo is reported too. One side's sessions are
freed before the next side's are built. Names the CPU.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from bench._common import cpu_name
from removers import isnet, runtime, segment
from removers.config import RuntimeConfig

SAMPLES = Path(__file__).resolve().parents[1] / "sample_images"


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a >= 128, b >= 128
    union = (a | b).sum()
    return 1.0 if union == 0 else float((a & b).sum() / union)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sides", default="640,1024")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--photos", type=int, default=4, help="sample photos per round")
    ap.add_argument("--no-bf16", action="store_true")
    ap.add_argument("--cache-dir", default="/tmp/shelfready-bench/openvino")
    args = ap.parse_args(argv)
    caps = runtime.detect()
    photos = []
    for p in sorted(SAMPLES.glob("*.jpg"))[:args.photos]:
        with Image.open(p) as im:
            photos.append(ImageOps.exif_transpose(im).convert("RGB"))
    result: dict = {"cpu": cpu_name(), "openvino": caps.openvino, "native_bf16": caps.native_bf16,
                    "threads": args.threads, "photos": len(photos), "rounds": args.rounds, "sides": {},
                    "command": "python -m bench.isnet_speed " + " ".join(sys.argv[1:])}
    for side in (int(s) for s in args.sides.split(",")):
        base = dict(threads=args.threads, isnet_side=side, cache_dir=args.cache_dir)
        table = {"onnxruntime fp32": RuntimeConfig(runtime="onnxruntime", precision="fp32", **base),
                 "openvino f32": RuntimeConfig(runtime="openvino", precision="fp32", **base)}
        if not args.no_bf16 and caps.native_bf16:
            table["openvino bf16"] = RuntimeConfig(runtime="openvino", precision="bf16", **base)
        names = list(table)
        ref = {}
        for n, cfg in table.items():  # build + warm every session, untimed; reference masks
            for k, im in enumerate(photos):
                alpha = segment.predict_alpha(im, isnet.NAME, cfg)
                if n == names[0]:
                    ref[k] = alpha
        times = {n: [] for n in names}
        ratios = {n: [] for n in names}
        ious = {n: [_iou(segment.predict_alpha(im, isnet.NAME, table[n]), ref[k]) for k, im in enumerate(photos)]
                for n in names}
        for r in range(args.rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            for k, im in enumerate(photos):
                got = {}
                for n in order:
                    t0 = time.perf_counter()
                    segment.predict_alpha(im, isnet.NAME, table[n])
                    got[n] = time.perf_counter() - t0
                for n in names:
                    times[n].append(got[n])
                    ratios[n].append(got[n] / got[names[0]])
            print(f"side {side} round {r + 1}/{args.rounds}", file=sys.stderr, flush=True)
        result["sides"][side] = {n: {"ms_median": round(1000 * float(np.median(times[n])), 1),
                                     "ratio_to_onnxruntime": round(float(np.median(ratios[n])), 3),
                                     "min_iou_vs_onnxruntime": round(min(ious[n]), 4),
                                     "engine": runtime.resolve(table[n], "remover").engine,
                                     "precision": runtime.resolve(table[n], "remover").precision}
                                 for n in names}
        segment.release(isnet.NAME)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
