"""A catalog built from Parquet shards vs the same vectors built in memory: peak RSS, recall, latency.

    nice .venv/bin/python bench/catalog_shards.py --n 200000             # ~1 GB of vectors
    nice .venv/bin/python bench/catalog_shards.py --n 2000000 --shard 100000   # 10 GB of shards on disk
    # the two builds of one data set in separate runs (e.g. the in-memory one later, when RAM is free):
    ... --n 2000000 --shard 100000 --keep /big/disk/shards2m --builds shards
    ... --n 2000000 --shard 100000 --keep /big/disk/shards2m --builds memory

Vectors: bench/catalog_speed.py's seeded two-level clustered unit vectors (dim
1280), generated shard by shard (each shard its own seed), written as Parquet
shards with the columns ``catalog build --engine ray`` writes. Queries: 200
more photos of the first shard's products, not in the catalog; ground truth:
exact inner-product top-10, scanned shard by shard.

Each build runs in its own process (peak RSS = that process's VmHWM; Linux only):
``shards``: ``search.shard_index.build_from_parquet`` (trains on a sample, adds
shard by shard); ``memory``: every vector read into one array, then one
``Catalog.add`` (what ``catalog build`` does without shards). Both with the same
index type (``--index``, ivfpq by default) and IndexConfig. Reported per build:
seconds, peak RSS, index file size, recall@10 and p50 latency of one query at a
time through ``Catalog.search``; the target is peak RSS(shards) < 2 x index
size + 1 GiB.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DIM = 1280


def write_shards(folder: Path, n: int, shard: int, seed: int, row_group: int = 16_384) -> np.ndarray:
    """Shards of n vectors (row groups of ``row_group`` rows, 84 MB at 1280-d, about Spark's 128 MB
    blocks); returns 200 query vectors: more photos of the first shard's products, not written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from bench.catalog_speed import synthetic

    folder.mkdir(parents=True)
    for i, start in enumerate(range(0, n, shard)):
        m = min(shard, n - start)
        x = synthetic(m + (200 if i == 0 else 0), DIM, clusters=max(1, m // 2000), seed=seed + i)
        if i == 0:  # 200 more photos of the first shard's products, held out: the queries
            queries, x = x[m:].copy(), x[:m]
        flat = pa.array(x.reshape(-1), type=pa.float32())
        table = pa.table({"id": np.arange(start, start + m), "sku": [f"s{j}" for j in range(start, start + m)],
                          "label": [f"c{j % 500}" for j in range(start, start + m)],
                          "path": [f"/photos/{j}.jpg" for j in range(start, start + m)],
                          "content_hash": [f"{j:064x}" for j in range(start, start + m)],
                          "vector": pa.FixedSizeListArray.from_arrays(flat, DIM)})
        pq.write_table(table, folder / f"part-{i:05d}.parquet", row_group_size=row_group)
        del x, table, flat
    (folder / "shelfready-shards.json").write_text(json.dumps({"embedder": "bench:synthetic", "dim": DIM}))
    return queries


def exact_truth(folder: Path, xq: np.ndarray, k: int = 10) -> list[set[str]]:
    from search.shard_index import _chunks, shard_files

    best_s = np.full((len(xq), 0), -np.inf, dtype=np.float32)
    best_p: np.ndarray = np.empty((len(xq), 0), dtype=object)
    for f in shard_files(folder):
        for chunk in _chunks(f, 100_000):
            s = xq @ chunk["vector"].T
            p = np.array(chunk["path"], dtype=object)
            cat_s = np.concatenate([best_s, s], axis=1)
            cat_p = np.concatenate([best_p, np.broadcast_to(p, s.shape)], axis=1)
            top = np.argsort(-cat_s, axis=1)[:, :k]
            best_s = np.take_along_axis(cat_s, top, axis=1)
            best_p = np.take_along_axis(cat_p, top, axis=1)
    return [set(row) for row in best_p]


_BUILD = r"""
import json, sys, time
from pathlib import Path
import numpy as np
sys.path.insert(0, sys.argv[1])
from search import Catalog, IndexConfig
mode, shards, out, kind, iters = sys.argv[2:7]
cfg = IndexConfig()
if int(iters):  # memory-only runs: fewer k-means iterations, the same arrays (recall not comparable)
    import faiss
    _ivfpq = faiss.IndexIVFPQ
    def _fewer(*a):
        ix = _ivfpq(*a)
        ix.cp.niter = ix.pq.cp.niter = int(iters)
        return ix
    faiss.IndexIVFPQ = _fewer
t = time.perf_counter()
def peak():  # this process's own high-water mark: ru_maxrss would also count the parent's (vfork + exec)
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmHWM:"))
if mode == "shards":
    from search.shard_index import build_from_parquet
    done = [0, 0]
    def step(n):  # progress on stderr: rows added, peak RSS so far (the first line: after training)
        done[0] += n
        if done[0] >= done[1]:
            print(f"{time.perf_counter() - t:.0f} s: {done[0]} rows added, peak RSS {peak() / 2**30:.2f} GiB",
                  file=sys.stderr, flush=True)
            done[1] = done[0] + 200_000
    build_from_parquet(Path(shards), Path(out), index_type=kind, config=cfg, on_chunk=step)
else:
    from search.shard_index import _chunks, _row_counts, shard_files
    files = shard_files(Path(shards))
    x, items, pos = None, [], 0
    for f in files:
        for c in _chunks(f, 100_000):
            if x is None:  # one array for all the vectors, filled in place
                x = np.empty((sum(_row_counts(files)), c["vector"].shape[1]), dtype=np.float32)
            x[pos:pos + len(c["vector"])] = c["vector"]
            pos += len(c["vector"])
            items += [{"sku": s, "label": l, "path": p, "content_hash": h}
                      for s, l, p, h in zip(c["sku"], c["label"], c["path"], c["content_hash"])]
    print(f"{time.perf_counter() - t:.0f} s: vectors read, peak RSS {peak() / 2**30:.2f} GiB", file=sys.stderr, flush=True)
    cat = Catalog.create(Path(out), "bench:synthetic", x.shape[1], kind, config=cfg, autosave=False)
    cat.add(x, items)
    cat.save()
print(json.dumps({"seconds": time.perf_counter() - t, "peak_rss_bytes": peak()}))
"""


def build(mode: str, shards: Path, out: Path, kind: str, iters: int = 0) -> dict:
    proc = subprocess.run([sys.executable, "-c", _BUILD, str(ROOT), mode, str(shards), str(out), kind, str(iters)],
                          stdout=subprocess.PIPE, text=True)  # progress lines go to our stderr as they come
    if proc.returncode:
        raise SystemExit(f"{mode} build failed (exit {proc.returncode})")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure(out: Path, xq: np.ndarray, truth: list[set[str]]) -> dict:
    from search import Catalog

    cat = Catalog.open(out)
    gen = out / cat.header()["generation"]
    index_bytes = sum(p.stat().st_size for p in gen.glob("index.*"))
    items_bytes = (gen / "items.sqlite").stat().st_size
    times, found = [], []
    for q, want in zip(xq, truth):
        t = time.perf_counter()
        hits = cat.search(q[None], k=10)[0]
        times.append(time.perf_counter() - t)
        found.append(len(want & {h.path for h in hits}) / 10)
    return {"index_type": cat.index_type, "items": len(cat), "index_bytes": index_bytes, "items_db_bytes": items_bytes,
            "recall_at_10": round(float(np.mean(found)), 4), "p50_ms": round(statistics.median(times) * 1000, 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=200_000)
    p.add_argument("--shard", type=int, default=50_000, help="vectors a Parquet shard")
    p.add_argument("--index", default="ivfpq")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--builds", default="shards,memory", help="which builds, in order (shards, memory)")
    p.add_argument("--keep", type=Path, default=None,
                   help="keep the shards and queries in this folder and reuse them when there (builds in separate runs)")
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--kmeans-iters", type=int, default=0,
                   help="memory-only runs: k-means iterations of the IVF and PQ training (0 = faiss' 25); "
                        "peak RSS is that of the full training (same arrays), recall is not comparable")
    args = p.parse_args()
    tmp = args.keep or Path(tempfile.mkdtemp(prefix="shelfready-shards-", dir=args.workdir))
    try:
        t = time.perf_counter()
        if args.keep and (tmp / "queries.npy").is_file():
            xq = np.load(tmp / "queries.npy")
        else:
            xq = write_shards(tmp / "shards", args.n, args.shard, args.seed)
            np.save(tmp / "queries.npy", xq)
            print(f"{args.n} vectors in shards of {args.shard}: {time.perf_counter() - t:.0f} s", flush=True)
        truth = exact_truth(tmp / "shards", xq)
        report = {"n": args.n, "dim": DIM, "index": args.index}
        for mode in args.builds.split(","):
            shutil.rmtree(tmp / f"cat-{mode}", ignore_errors=True)
            r = build(mode, tmp / "shards", tmp / f"cat-{mode}", args.index, args.kmeans_iters)
            r.update(measure(tmp / f"cat-{mode}", xq, truth))
            r["rss_target_bytes"] = 2 * r["index_bytes"] + 2**30
            r["peak_rss_over_target"] = round(r["peak_rss_bytes"] / r["rss_target_bytes"], 3)
            report[mode] = r
            print(mode, json.dumps(r), flush=True)
            shutil.rmtree(tmp / f"cat-{mode}", ignore_errors=True)
        print(json.dumps(report, indent=2))
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
