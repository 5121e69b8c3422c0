"""Images per second of an embedder at several batch sizes.

    nice .venv/bin/python bench/embed_speed.py                        # 12 sample_images, x4
    nice .venv/bin/python bench/embed_speed.py --folder ../shared/data/clothing_small/validation --n 256
    nice .venv/bin/python bench/embed_speed.py --threads 0 --batch-sizes 1 8 32

Images are decoded before timing (decoding belongs to io, not the embedder);
the figure covers preprocessing + forward + normalisation. One warm-up batch
first. Prints one JSON line per batch size and a summary table.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
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
    ap.add_argument("--folder", type=Path, default=ROOT / "sample_images")
    ap.add_argument("--n", type=int, default=48, help="images per measurement")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16, 32])
    ap.add_argument("--threads", type=int, default=None, help="torch threads (0 = all cores; default: torch's)")
    ap.add_argument("--device", default=None)
    args = ap.parse_args(argv)

    import torch

    from search import create_embedder

    images = load_images(args.folder, args.n)
    emb = create_embedder(args.model, device=args.device, threads=args.threads)
    env = {"model": emb.name, "device": getattr(emb, "device", "?"), "torch_threads": torch.get_num_threads(),
           "cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 1),
           "cpu": platform.processor() or platform.machine(), "n_images": len(images),
           "folder": str(args.folder)}
    print(json.dumps({"env": env}))
    rows = []
    for bs in args.batch_sizes:
        emb.batch_size = bs
        emb.embed(images[:bs])  # warm-up
        t0 = time.perf_counter()
        emb.embed(images)
        dt = time.perf_counter() - t0
        row = {"batch_size": bs, "images_per_s": round(len(images) / dt, 2), "ms_per_image": round(1000 * dt / len(images), 1)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(f"\n{emb.name} on {env['device']}, {env['torch_threads']} torch threads, load {env['load_avg_1m']}")
    print("batch  images/s  ms/image")
    for r in rows:
        print(f"{r['batch_size']:>5}  {r['images_per_s']:>8}  {r['ms_per_image']:>8}")


if __name__ == "__main__":
    main()
