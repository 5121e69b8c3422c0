"""Catalog index types on seeded synthetic embeddings: build time, latency, recall, size.

    nice .venv/bin/python bench/catalog_speed.py --n 20000                  # quick check (~1 min)
    nice .venv/bin/python bench/catalog_speed.py --n 1000000 --types flat hnsw ivfpq binary

Vectors: float32, dim 1280 (the default embedder's), L2-normalised, two-level
clustered like real catalog embeddings: ``--clusters`` categories, products
around them, ~10 photos around each product (see ``synthetic``). Queries come
from the same distribution (new photos of catalog products), not in the catalog.
Exact inner-product search (chunked numpy matrix products, all queries at once)
is the ground truth.

For each index type, through the real ``search.Catalog`` (autosave off):
build = ``Catalog.add`` of all vectors (training included), save = writing the
generation to disk, bytes per vector = index file size / n, latency = one query
at a time through ``Catalog.search`` (faiss + SQLite metadata lookup) with p50
and p99 over ``--queries`` queries, recall@10 against exact search.

Memory: n x dim x 4 bytes for the vectors (5.1 GB at 1M), plus one index at a
time (flat/hnsw hold another copy); each catalog is dropped before the next.
"""
from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np


def synthetic(n: int, dim: int, clusters: int, seed: int, per_product: int = 10,
              spread_product: float = 0.025, spread_photo: float = 0.015,
              chunk: int = 100_000) -> np.ndarray:
    """Two-level clustered unit vectors: categories -> products -> photos.

    ``clusters`` category centres; n / per_product product centres scattered
    around them; each vector is a product centre plus photo noise. Spreads are
    per dimension (at dim 1280: photo-to-own-product cosine ~0.8, same category
    ~0.5, other categories ~0). Generated in chunks: one n x dim array only.
    """
    rng = np.random.default_rng(seed)
    cats = rng.standard_normal((clusters, dim), dtype=np.float32)
    cats /= np.linalg.norm(cats, axis=1, keepdims=True)
    n_products = max(1, n // per_product)
    products = np.empty((n_products, dim), dtype=np.float32)
    for s in range(0, n_products, chunk):
        m = min(chunk, n_products - s)
        products[s:s + m] = cats[rng.integers(0, clusters, m)]
        products[s:s + m] += rng.standard_normal((m, dim), dtype=np.float32) * spread_product
    out = np.empty((n, dim), dtype=np.float32)
    for s in range(0, n, chunk):
        m = min(chunk, n - s)
        block = products[rng.integers(0, n_products, m)]
        block += rng.standard_normal((m, dim), dtype=np.float32) * spread_photo
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[s:s + m] = block
    return out


def exact_top(xb: np.ndarray, xq: np.ndarray, k: int, chunk: int = 100_000) -> tuple[np.ndarray, float]:
    """Exact top-k inner product by chunked matrix products (no second copy of xb)."""
    t0 = time.perf_counter()
    best_s = np.full((len(xq), k), -np.inf, dtype=np.float32)
    best_i = np.zeros((len(xq), k), dtype=np.int64)
    for s in range(0, len(xb), chunk):
        sims = xq @ xb[s:s + chunk].T
        cand_s = np.concatenate([best_s, sims], axis=1)
        cand_i = np.concatenate([best_i, np.arange(s, s + sims.shape[1])[None].repeat(len(xq), 0)], axis=1)
        top = np.argpartition(-cand_s, k - 1, axis=1)[:, :k]
        best_s, best_i = np.take_along_axis(cand_s, top, 1), np.take_along_axis(cand_i, top, 1)
    order = np.argsort(-best_s, axis=1)
    return np.take_along_axis(best_i, order, 1), time.perf_counter() - t0


def dir_bytes(path: Path, pattern: str) -> int:
    return sum(p.stat().st_size for p in path.glob(pattern))


def fixed_bytes(cat, gen: Path) -> int:
    """Size-independent part of an index: IVF centroids + PQ codebooks, or the ITQ transform."""
    import faiss

    if cat.index_type == "binary":
        return dir_bytes(gen, "*.faissvt")
    if cat.index_type == "ivfpq":
        ivf = faiss.extract_index_ivf(cat._index)
        pq = faiss.downcast_index(ivf).pq
        return 4 * ivf.nlist * cat.dim + 4 * pq.M * pq.ksub * pq.dsub
    return 0


def bench_type(kind: str, xb, xq, truth, k: int, cfg, workdir: Path, sweep: dict | None = None) -> list[dict]:
    from search import Catalog

    folder = workdir / kind
    cat = Catalog.create(folder, "bench:synthetic", xb.shape[1], kind, config=cfg, autosave=False)
    t0 = time.perf_counter()
    cat.add(xb)
    build = time.perf_counter() - t0
    t0 = time.perf_counter()
    cat.save()
    save = time.perf_counter() - t0
    gen = folder / cat.header()["generation"]
    index_bytes = dir_bytes(gen, "index.*") + dir_bytes(gen, "*.faissvt")
    fixed = fixed_bytes(cat, gen)
    p50, p99, recall = measure(cat, xq, truth, k)
    row = {
        "type": cat.index_type, "n": len(cat), "build_s": round(build, 1), "save_s": round(save, 1),
        "bytes_per_vector": round(index_bytes / len(cat), 1),
        "per_vector_excl_fixed": round((index_bytes - fixed) / len(cat), 1), "fixed_bytes": fixed,
        "p50_ms": p50, "p99_ms": p99, f"recall@{k}": recall, "note": cat.note,
    }
    rows = [row]
    knob = {"hnsw": "hnsw_ef_search", "ivfpq": "ivf_nprobe"}.get(cat.index_type)
    for value in (sweep or {}).get(cat.index_type, []):  # same index, other search-time setting
        cat.config = dataclasses.replace(cfg, **{knob: value})
        cat._tune()
        p50, p99, recall = measure(cat, xq, truth, k)
        rows.append({**row, "type": f"{cat.index_type} {knob}={value}", "p50_ms": p50, "p99_ms": p99,
                     f"recall@{k}": recall})
    del cat
    gc.collect()
    shutil.rmtree(folder, ignore_errors=True)
    return rows


def measure(cat, xq, truth, k: int) -> tuple[float, float, float]:
    """(p50 ms, p99 ms, recall@k) of one-at-a-time queries through Catalog.search."""
    for q in xq[:20]:  # warm-up
        cat.search(q[None], k)
    lat, got = [], []
    for q in xq:
        t0 = time.perf_counter()
        hits = cat.search(q[None], k)[0]
        lat.append(time.perf_counter() - t0)
        got.append([h.id for h in hits])
    recall = float(np.mean([len(set(g) & set(t)) / k for g, t in zip(got, truth)]))
    return (round(1000 * float(np.percentile(lat, 50)), 2), round(1000 * float(np.percentile(lat, 99)), 2),
            round(recall, 4))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--dim", type=int, default=1280)
    ap.add_argument("--clusters", type=int, default=500)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--types", nargs="+", default=["flat", "hnsw", "ivfpq", "binary"])
    ap.add_argument("--vectors", type=Path, default=None,
                    help=".npy of real L2-normalised embeddings instead of synthetic ones "
                         "(seeded shuffle; the last --queries rows are the queries)")
    ap.add_argument("--workdir", type=Path, default=None, help="where catalogs are written (default: a temp dir)")
    ap.add_argument("--omp-threads", type=int, default=None,
                    help="faiss OpenMP threads (default: faiss's; 1 avoids spin-waiting on a busy machine)")
    ap.add_argument("--ef-search", type=int, nargs="*", default=[],
                    help="also measure the built HNSW index at these efSearch values")
    ap.add_argument("--nprobe", type=int, nargs="*", default=[],
                    help="also measure the built IVF-PQ index at these nprobe values")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args(argv)

    import faiss

    from search import IndexConfig

    if args.omp_threads:
        faiss.omp_set_num_threads(args.omp_threads)
    t0 = time.perf_counter()
    if args.vectors:
        data = np.load(args.vectors).astype(np.float32)
        data = data[np.random.default_rng(args.seed).permutation(len(data))]
        args.n, args.dim, args.clusters = len(data) - args.queries, data.shape[1], None
    else:
        data = synthetic(args.n + args.queries, args.dim, args.clusters, args.seed)
    xb, xq = data[:args.n], data[args.n:]
    cfg = IndexConfig(ivfpq_min_train=min(IndexConfig().ivfpq_min_train, args.n),
                      binary_min_train=min(IndexConfig().binary_min_train, args.n))
    env = {"n": args.n, "dim": args.dim, "clusters": args.clusters, "vectors": str(args.vectors or "synthetic"), "queries": args.queries,
           "cpus": os.cpu_count(), "faiss": faiss.__version__, "omp_threads": faiss.omp_get_max_threads(),
           "load_avg_1m": round(os.getloadavg()[0], 1),
           "hnsw": {"M": cfg.hnsw_m, "efConstruction": cfg.hnsw_ef_construction, "efSearch": cfg.hnsw_ef_search},
           "ivfpq": {"nprobe": cfg.ivf_nprobe, "pq_m": cfg.pq_m, "pq_nbits": cfg.pq_nbits},
           "binary_bits": cfg.binary_bits}
    print(json.dumps({"env": env}), flush=True)
    print(json.dumps({"generate_s": round(time.perf_counter() - t0, 1)}), flush=True)
    truth, exact_s = exact_top(xb, xq, args.k)
    print(json.dumps({"exact_batch_search_s": round(exact_s, 2),
                      "exact_ms_per_query_batched": round(1000 * exact_s / len(xq), 2)}), flush=True)

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="shelfready-catbench-"))
    rows = []
    try:
        for kind in args.types:
            for row in bench_type(kind, xb, xq, truth, args.k, cfg, workdir,
                                  {"hnsw": args.ef_search, "ivfpq": args.nprobe}):
                rows.append(row)
                print(json.dumps(row), flush=True)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps({"env": env, "rows": rows}, indent=2))
    print(f"\nn={args.n} dim={args.dim}, {env['cpus']} CPUs, load {env['load_avg_1m']}")
    print(f"{'type':<24} {'build s':>8} {'save s':>7} {'B/vector':>9} {'B/v-fixed':>9} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'R@' + str(args.k):>6}")
    for r in rows:
        print(f"{r['type']:<24} {r['build_s']:>8} {r['save_s']:>7} {r['bytes_per_vector']:>9} "
              f"{r['per_vector_excl_fixed']:>9} "
              f"{r['p50_ms']:>7} {r['p99_ms']:>7} {r[f'recall@{args.k}']:>6}")


if __name__ == "__main__":
    main()
