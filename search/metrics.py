"""Retrieval metrics, pure numpy, one value per query.

Every metric takes a boolean relevance matrix ``rel`` of shape (n_queries, K):
``rel[i, j]`` is True when the j-th retrieved item of query i is relevant.
Build it from retrieved labels (or ids) with :func:`relevance_matrix`.

The per-query functions return float64 arrays of shape (n,) so that callers can
average them, bootstrap them or pair them query by query; :func:`summarise`
returns the means.

Conventions (the ones FAISS's and TREC's evaluation code use):

* ``hit_rate_at_k`` ("recall@k" in product-search papers): 1 if any relevant
  item is in the top k, else 0.
* ``precision_at_k``: relevant items in the top k, divided by k.
* ``average_precision``: mean of precision@i over the ranks i that hold a
  relevant item, divided by ``n_relevant`` (the number of relevant items in
  the whole catalog). When the retrieved list is the full ranking of the
  catalog this is the textbook (full-ranking) AP; when the list is truncated
  at K the missing relevant items count as precision 0 (truncated AP, a lower
  bound). Without ``n_relevant`` the divisor is the number of relevant items
  found in the list (AP over the retrieved list only). A query with no
  relevant item scores 0.
* ``reciprocal_rank``: 1 / rank of the first relevant item, 0 if none in the list.
* ``ndcg_at_k``: binary gains, DCG = sum rel_i / log2(i + 1) over i = 1..k,
  divided by the DCG of an ideal list with min(n_relevant, k) relevant items
  first (``n_relevant`` defaults to the relevant items found in the list);
  0 when there is nothing relevant.

Invalid input (k < 1, k > K, empty matrix, shape mismatch, n_relevant smaller
than what was found) raises ValueError.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def relevance_matrix(retrieved, relevant) -> np.ndarray:
    """Boolean (n, K) relevance of a retrieved matrix.

    ``retrieved`` is an (n, K) array of labels or ids (best first). ``relevant``
    is either an array of n labels (item relevant = same label as its query)
    or a sequence of n collections of relevant labels/ids.
    """
    ret = np.asarray(retrieved)
    if ret.ndim != 2 or ret.shape[0] == 0 or ret.shape[1] == 0:
        raise ValueError(f"retrieved must be a non-empty 2-D (n, K) array, got shape {ret.shape}")
    n = ret.shape[0]
    if len(relevant) != n:
        raise ValueError(f"relevant has {len(relevant)} entries for {n} queries")
    if all(isinstance(r, (set, frozenset, list, tuple)) for r in relevant):
        return np.array([[x in set(r) for x in row] for row, r in zip(ret.tolist(), relevant)],
                        dtype=bool).reshape(ret.shape)
    labels = np.asarray(relevant)
    if labels.ndim != 1:
        raise ValueError("relevant must be n labels or n collections of relevant items")
    return ret == labels[:, None]


def _check(rel, k: int | None = None) -> np.ndarray:
    rel = np.asarray(rel)
    if rel.ndim != 2 or rel.shape[0] == 0 or rel.shape[1] == 0:
        raise ValueError(f"relevance must be a non-empty 2-D (n, K) matrix, got shape {rel.shape}")
    if rel.dtype != bool:
        if not np.isin(rel, (0, 1)).all():
            raise ValueError("relevance must be boolean (or 0/1)")
        rel = rel.astype(bool)
    if k is not None:
        if isinstance(k, bool) or int(k) != k or k < 1:
            raise ValueError(f"k must be an integer >= 1, got {k!r}")
        if k > rel.shape[1]:
            raise ValueError(f"k={k} is larger than the {rel.shape[1]} retrieved items per query")
    return rel


def _n_relevant(rel: np.ndarray, n_relevant) -> np.ndarray:
    found = rel.sum(axis=1)
    if n_relevant is None:
        return found.astype(np.float64)
    nr = np.asarray(n_relevant, dtype=np.float64)
    if nr.ndim == 0:
        nr = np.full(rel.shape[0], float(nr))
    if nr.shape != (rel.shape[0],):
        raise ValueError(f"n_relevant must be a scalar or {rel.shape[0]} values, got shape {nr.shape}")
    if (nr < found).any():
        raise ValueError("n_relevant is smaller than the relevant items found in the list")
    return nr


def first_relevant_rank(rel) -> np.ndarray:
    """1-based rank of the first relevant item per query; 0 when none was retrieved."""
    rel = _check(rel)
    any_hit = rel.any(axis=1)
    return np.where(any_hit, rel.argmax(axis=1) + 1, 0).astype(np.int64)


def hit_rate_at_k(rel, k: int) -> np.ndarray:
    """1.0 if any relevant item is in the top k ("recall@k" of product search), else 0.0."""
    rel = _check(rel, k)
    return rel[:, :k].any(axis=1).astype(np.float64)


recall_at_k = hit_rate_at_k


def precision_at_k(rel, k: int) -> np.ndarray:
    """Share of the top k that is relevant."""
    rel = _check(rel, k)
    return rel[:, :k].sum(axis=1) / float(k)


def average_precision(rel, n_relevant=None) -> np.ndarray:
    """AP per query; see the module docstring for the divisor."""
    rel = _check(rel)
    nr = _n_relevant(rel, n_relevant)
    ranks = np.arange(1, rel.shape[1] + 1, dtype=np.float64)
    prec = np.cumsum(rel, axis=1) / ranks
    total = (prec * rel).sum(axis=1)
    return np.divide(total, nr, out=np.zeros_like(total), where=nr > 0)


def reciprocal_rank(rel) -> np.ndarray:
    """1 / rank of the first relevant item; 0 when none was retrieved."""
    first = first_relevant_rank(rel).astype(np.float64)
    return np.divide(1.0, first, out=np.zeros_like(first), where=first > 0)


def ndcg_at_k(rel, k: int, n_relevant=None) -> np.ndarray:
    """Normalised discounted cumulative gain at k with binary gains."""
    rel = _check(rel, k)
    nr = _n_relevant(rel, n_relevant)
    discounts = 1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64))
    dcg = (rel[:, :k] * discounts).sum(axis=1)
    ideal_count = np.minimum(nr, k).astype(np.int64)
    ideal = np.concatenate([[0.0], np.cumsum(discounts)])[ideal_count]
    return np.divide(dcg, ideal, out=np.zeros_like(dcg), where=ideal > 0)


def per_query(rel, ks: Sequence[int] = (1, 5, 10), precision_ks: Sequence[int] = (1, 10),
              n_relevant=None) -> dict[str, np.ndarray]:
    """All metrics per query, keyed "R@k", "P@k", "nDCG@k", "AP", "RR".

    k values larger than the list length are left out.
    """
    rel = _check(rel)
    K = rel.shape[1]
    out: dict[str, np.ndarray] = {}
    for k in ks:
        if k <= K:
            out[f"R@{k}"] = hit_rate_at_k(rel, k)
    for k in precision_ks:
        if k <= K:
            out[f"P@{k}"] = precision_at_k(rel, k)
    out["AP"] = average_precision(rel, n_relevant)
    out["RR"] = reciprocal_rank(rel)
    k10 = min(10, K)
    out[f"nDCG@{k10}"] = ndcg_at_k(rel, k10, n_relevant)
    return out


def summarise(rel, ks: Sequence[int] = (1, 5, 10), precision_ks: Sequence[int] = (1, 10),
              n_relevant=None) -> dict[str, float]:
    """Means of :func:`per_query` ("AP" -> "mAP", "RR" -> "MRR")."""
    rename = {"AP": "mAP", "RR": "MRR"}
    return {rename.get(name, name): float(v.mean())
            for name, v in per_query(rel, ks, precision_ks, n_relevant).items()}
