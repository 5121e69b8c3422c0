"""Cleanup time of ``--model cascade`` against u2netp alone, side by side in one run.

    python -m bench.cascade_speed [--set clothing|grocery] [--every 10] [--threads 1] [--fallback-model u2net]

Every ``--every``-th photo of the set (clothing-dataset-small validation + the
800 train photos, or grocery val; never chosen by outcome) is cleaned by
``hygiene.clean`` with ``CleanConfig()`` (u2netp) and with
``CleanConfig(model="cascade")`` (or, with ``--fallback-model NAME``, u2netp then
NAME: ``CleanConfig(fallback_model=NAME)``), one after the other in this process, the order
alternated from photo to photo, one onnxruntime thread each, sessions warmed
first. Reports the ratio of the summed times (the wall time of a one-worker
batch of those photos), the per-photo median ratio, and the share whitened by
each. Photo decoding is outside the timed part (the same for both).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from hygiene import clean
from hygiene.config import CleanConfig
from removers.config import CASCADE, RuntimeConfig


def photos(name: str, every: int) -> list[Path]:
    from search import datasets

    if name == "clothing":
        q, c = datasets.clothing_small()
        items = q + c
    else:
        q, _ = datasets.grocery_store("val")
        items = q
    return [x.path for x in items][::every]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", choices=["clothing", "grocery"], default="clothing")
    ap.add_argument("--every", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--fallback-model", default=None, help="the cascade's second remover [isnet-imgly]")
    args = ap.parse_args(argv)
    from photos.io import load_image

    rt = RuntimeConfig(threads=args.threads)
    cascade = (CleanConfig(fallback_model=args.fallback_model, runtime=rt) if args.fallback_model
               else CleanConfig(model=CASCADE, runtime=rt))
    configs = {"u2netp": CleanConfig(runtime=rt), "cascade": cascade}
    paths = photos(args.set, args.every)
    from removers import segment

    for name in (cascade.model, *cascade.fallback_models):  # every remover's session, before any timing
        segment.get_session(name, rt)
    warm = load_image(paths[0])
    for cfg in configs.values():
        clean(warm, cfg)
    secs = {n: [] for n in configs}
    status = {n: [] for n in configs}
    for k, path in enumerate(paths):
        image = load_image(path)
        for n in (list(configs) if k % 2 == 0 else list(configs)[::-1]):
            t0 = time.perf_counter()
            res = clean(image, configs[n])
            secs[n].append(time.perf_counter() - t0)
            status[n].append(res.status)
        print(f"{k + 1}/{len(paths)} {path.name} " + " ".join(f"{n}={secs[n][-1]:.2f}s" for n in configs),
              file=sys.stderr, flush=True)
    a, b = np.array(secs["u2netp"]), np.array(secs["cascade"])
    out = {"set": args.set, "photos": len(paths), "threads": args.threads,
           "cascade": [cascade.model, cascade.fallback_model],
           "sum_s": {"u2netp": round(float(a.sum()), 1), "cascade": round(float(b.sum()), 1)},
           "ratio_of_sums": round(float(b.sum() / a.sum()), 3),
           "median_per_photo_ratio": round(float(np.median(b / a)), 3),
           "whitened": {n: round(float(np.mean([s == "cleaned" for s in status[n]])), 3) for n in configs},
           "fallback_share": round(float(np.mean([s != "cleaned" for s in status["u2netp"]])), 3),
           "command": "python -m bench.cascade_speed " + " ".join(sys.argv[1:])}
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
