"""Images per second of an embedder at several batch sizes.

    nice .venv/bin/python bench/embed_speed.py                        # 12 sample_images, x4
    nice .venv/bin/python bench/embed_speed.py --folder ../shared/data/clothing_small/validation --n 256
    nice .venv/bin/python bench/embed_speed.py --threads 0 --batch-sizes 1 8 32
    nice .venv/bin/python bench/embed_speed.py --runtimes onnxruntime/fp32,openvino/fp32,openvino/bf16
    .venv/bin/python bench/embed_speed.py --runtimes auto --models cnn:efficientnet_lite0,cnn:efficientnet_lite0+flip

Runtimes (``--runtime``/``--precision`` values; "onnxruntime" is torch eager for the
embedder) are timed in alternating rounds; cosine is the per-image minimum against
the first runtime's vectors.

Images are decoded before timing (decoding belongs to io, not the embedder);
the figure covers preprocessing + forward + normalisation. One warm-up batch
first. Prints one JSON line per batch size and a summary table.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
EXTS = {".jpg", ".jpeg", ".png", ".webp"}


def load_images(folder: Path, n: int) -> list[Image.Image]:
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in EXTS)
    if not paths:
        raise SystemExit(f"no images in {folder}")
    images = [Image.open(p).convert("RGB") for p in paths[:n]]
    while len(images) < n:  # repeat a small folder to reach n
        images += images[: n - len(images)]
    return images


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="embedder name (default: search.config default)")
    ap.add_argument("--models", default=None,
                    help="comma list of embedder names timed side by side with every runtime (overrides --model)")
    ap.add_argument("--folder", type=Path, default=ROOT / "sample_images")
    ap.add_argument("--n", type=int, default=48, help="images per measurement")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[16])
    ap.add_argument("--threads", type=int, default=None, help="threads (0 = all cores; default: torch's / all)")
    ap.add_argument("--runtimes", default="onnxruntime/fp32,openvino/fp32,openvino/bf16",
                    help="comma list of RUNTIME/PRECISION (onnxruntime = torch for the embedder); "
                         "the first is the anchor of ratios and cosines")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds; medians reported")
    args = ap.parse_args(argv)

    import statistics

    import numpy as np
    import torch

    from bench._common import cpu_name
    from removers.config import RuntimeConfig
    from search import create_embedder

    images = load_images(args.folder, args.n)
    embs = {}
    models = args.models.split(",") if args.models else [args.model]
    for model in models:
        for rt in args.runtimes.split(","):
            engine, _, precision = rt.partition("/")
            e = create_embedder(model, threads=args.threads,
                                runtime=RuntimeConfig(runtime=engine, precision=precision or "auto"))
            key = f"{e.choice.engine}/{e.choice.precision}"
            embs[f"{e.name} {key}" if len(models) > 1 else key] = e
    env = {"model": args.models or args.model or "default", "torch_threads": torch.get_num_threads(),
           "cpu": cpu_name(),
           "load_avg_1m": round(os.getloadavg()[0], 1), "n_images": len(images), "folder": str(args.folder)}
    print(json.dumps({"env": env}))
    names = list(embs)
    ref = embs[names[0]].embed(images)
    cos = {k: float((e.embed(images) * ref).sum(1).min()) for k, e in embs.items()}
    speed = {(k, bs): [] for k in names for bs in args.batch_sizes}
    for r in range(args.rounds):
        for bs in args.batch_sizes:
            for k in names[r % len(names):] + names[: r % len(names)]:
                e = embs[k]
                e.batch_size = bs
                e.embed(images[:bs])  # warm-up
                t0 = time.perf_counter()
                e.embed(images)
                speed[(k, bs)].append(len(images) / (time.perf_counter() - t0))
                print(json.dumps({"round": r, "runtime": k, "batch_size": bs,
                                  "images_per_s": round(speed[(k, bs)][-1], 2)}), flush=True)
    print(f"\n{names[0]} anchor; {len(images)} images, {args.rounds} alternating rounds, "
          f"{env['cpu']}, load {env['load_avg_1m']}")
    width = max(18, *map(len, names))
    print(f"{'runtime':<{width}} {'batch':>5} {'img/s':>8} {'x anchor':>8} {'min cosine':>10}")
    for bs in args.batch_sizes:
        base = statistics.median(speed[(names[0], bs)])
        for k in names:
            v = statistics.median(speed[(k, bs)])
            print(f"{k:<{width}} {bs:>5} {v:>8.1f} {v / base:>8.2f} {cos[k]:>10.5f}")
    _ = np


if __name__ == "__main__":
    main()
