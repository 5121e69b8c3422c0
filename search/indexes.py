"""The FAISS indices behind a ``search.catalog.Catalog``: which type to use, building, tuning.

Float indices are ``IndexIDMap2`` over exact flat, HNSW or IVF-PQ (inner
product); ``binary`` is an ``IndexBinaryIDMap2`` of ITQ sign codes (Hamming).
The type follows the requested one and the catalog size (thresholds in
``search.config.IndexConfig``); search-time parameters come from the config.
"""
from __future__ import annotations

import math

import faiss
import numpy as np

from .config import DEFAULT_INDEX, IndexConfig, auto_index_type

_RANKS = {"flat": 0, "hnsw": 1, "ivfpq": 2, "binary": 2}


def _rank(kind: str) -> int:
    return _RANKS[kind]


def target_index_type(requested: str, n: int, cfg: IndexConfig) -> tuple[str, str]:
    """(index type a catalog that asked for ``requested`` should use at size n, note)."""
    if requested == "auto":
        kind = auto_index_type(n, cfg)
        if kind == "ivfpq" and n < cfg.ivfpq_min_train:
            kind = "hnsw"
        return kind, ""
    if requested == "ivfpq" and n < cfg.ivfpq_min_train:
        return "flat", f"ivfpq needs >= {cfg.ivfpq_min_train} vectors to train; exact flat until then"
    if requested == "binary" and n < cfg.binary_min_train:
        return "flat", f"binary needs >= {cfg.binary_min_train} vectors to train; exact flat until then"
    return requested, ""


def plan_index(current: str, requested: str, n_after: int, cfg: IndexConfig) -> tuple[str | None, str]:
    """(index type to rebuild into before holding ``n_after`` vectors, or None to add in place; note)."""
    kind, note = target_index_type(requested, n_after, cfg)
    if kind == current or current not in ("flat", "hnsw"):
        return None, note  # trained indices hold no exact vectors: they stay what they are
    if _rank(kind) < _rank(current):
        return None, note  # never shrink: keeps behaviour stable
    return kind, note


def build_index(kind: str, vecs: np.ndarray, ids: np.ndarray, dim: int, cfg: IndexConfig) -> tuple:
    """(index, itq or None, metric): a fresh ``kind`` index holding (vecs, ids)."""
    itq = None
    if kind == "binary":
        bits = min(cfg.binary_bits, dim - dim % 8) or 8
        itq = faiss.ITQTransform(dim, bits, True)
        itq.train(_train_sample(vecs, cfg))
        index = faiss.IndexBinaryIDMap2(faiss.IndexBinaryFlat(bits))
        metric = "hamming"
        index.add_with_ids(binarize(itq, vecs), ids)
    else:
        train = _train_sample(vecs, cfg, np.float16) if kind == "ivfpq" else None
        index = new_float_index(kind, dim, cfg, train, len(vecs))
        metric = "inner_product"
        if len(vecs):
            index.add_with_ids(vecs, ids)
    return index, itq, metric


def tune_index(index, cfg: IndexConfig) -> None:
    """Search-time parameters come from the config, not the file."""
    inner = _inner(index)
    if isinstance(inner, faiss.IndexHNSW):
        inner.hnsw.efSearch = cfg.hnsw_ef_search
    elif isinstance(inner, faiss.IndexIVF):
        inner.nprobe = cfg.ivf_nprobe


def _inner(index):
    return faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap2) else index


def _train_sample(vecs: np.ndarray, cfg: IndexConfig, dtype=np.float32) -> np.ndarray:
    if len(vecs) <= cfg.train_max:
        return np.ascontiguousarray(vecs, dtype=dtype)
    rng = np.random.default_rng(cfg.seed)
    pick = np.sort(rng.choice(len(vecs), cfg.train_max, replace=False))
    return np.ascontiguousarray(vecs[pick], dtype=dtype)


def ivf_nlist(n_total: int, n_train: int, cfg: IndexConfig = DEFAULT_INDEX) -> int:
    nlist = int(round(cfg.ivf_nlist_factor * math.sqrt(max(n_total, 1))))
    nlist = min(nlist, cfg.ivf_nlist_max, max(n_train // 39, 1))
    return max(nlist, 1)


def new_float_index(kind: str, dim: int, cfg: IndexConfig, train: np.ndarray | None, n_total: int = 0):
    if kind == "flat":
        return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
    if kind == "hnsw":
        inner = faiss.IndexHNSWFlat(dim, cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        inner.hnsw.efConstruction = cfg.hnsw_ef_construction
        inner.hnsw.efSearch = cfg.hnsw_ef_search
        return faiss.IndexIDMap2(inner)  # the wrapper keeps a Python reference to inner
    if kind == "ivfpq":
        return trained_ivfpq(train, n_total, dim, cfg)
    raise ValueError(f"unknown float index type {kind!r}")


_DECODE_BLOCK = 8192  # rows of the float16 training sample decoded at a time (42 MB at 1280-d)


def trained_ivfpq(sample: np.ndarray, n_total: int, dim: int, cfg: IndexConfig):
    """An empty IVF-PQ index for a catalog of ``n_total`` vectors, trained on ``sample`` (float32 or
    float16 rows) with faiss' own steps: k-means of the coarse centroids on the whole sample, then
    the PQ on the residuals of a seeded subset of ``pq.cp.max_points_per_centroid * ksub`` rows.

    The sample is held as float16 codes (faiss' fp16 scalar quantizer is the codec): the k-means
    decodes them ``_DECODE_BLOCK`` rows at a time (``Clustering.train_encoded``), so training holds
    half of the float32 sample plus the PQ subset's float32 residuals (the rounding, 2^-11 of a
    unit vector's components, is far below the distances k-means compares). Search tables are not
    precomputed (adding does not use them; faiss builds them when the saved index is read)."""
    x16 = np.ascontiguousarray(sample, dtype=np.float16)
    if dim % cfg.pq_m:
        raise ValueError(f"pq_m={cfg.pq_m} must divide dim={dim}")
    nlist = ivf_nlist(n_total, len(x16), cfg)
    quantizer = faiss.IndexFlatIP(dim)
    inner = faiss.IndexIVFPQ(quantizer, dim, nlist, cfg.pq_m, cfg.pq_nbits, faiss.METRIC_INNER_PRODUCT)
    inner.cp.seed = cfg.seed
    inner.pq.cp.seed = cfg.seed
    clustering = faiss.Clustering(dim, nlist, inner.cp)
    clustering.decode_block_size = _DECODE_BLOCK
    codec = faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_fp16)
    clustering.train_encoded(x16.view(np.uint8), codec, quantizer)
    m = min(len(x16), inner.pq.cp.max_points_per_centroid * inner.pq.ksub)
    pick = np.sort(np.random.default_rng(cfg.seed).choice(len(x16), m, replace=False))
    centroids = quantizer.reconstruct_n(0, nlist)
    residuals = np.empty((m, dim), dtype=np.float32)
    for s in range(0, m, 1024):  # computed in place, a small block at a time
        block = residuals[s:s + 1024]
        block[:] = x16[pick[s:s + 1024]]
        block -= centroids[quantizer.search(block, 1)[1][:, 0]]
    inner.pq.train(residuals)
    inner.is_trained = True
    inner.nprobe = cfg.ivf_nprobe
    return faiss.IndexIDMap2(inner)


def binarize(itq, x: np.ndarray) -> np.ndarray:
    """ITQ rotation then sign bits, packed 8 a byte (faiss' binary layout)."""
    z = itq.apply(np.ascontiguousarray(x, dtype=np.float32))
    return np.packbits(z > 0, axis=1, bitorder="little")
