"""search.metrics against hand-computed cases and a plain-Python reference."""
import math
import random

import numpy as np
import pytest

from search import metrics

# ---- brute-force reference: plain loops, textbook definitions -------------------------

def ref_hit(row, k):
    return 1.0 if any(row[:k]) else 0.0


def ref_precision(row, k):
    return sum(1 for x in row[:k] if x) / k


def ref_ap(row, n_relevant=None):
    hits, total = 0, 0.0
    for i, x in enumerate(row, start=1):
        if x:
            hits += 1
            total += hits / i
    denom = hits if n_relevant is None else n_relevant
    return total / denom if denom else 0.0


def ref_rr(row):
    for i, x in enumerate(row, start=1):
        if x:
            return 1.0 / i
    return 0.0


def ref_ndcg(row, k, n_relevant=None):
    dcg = sum(1.0 / math.log2(i + 1) for i, x in enumerate(row[:k], start=1) if x)
    n = sum(1 for x in row if x) if n_relevant is None else n_relevant
    idcg = sum(1.0 / math.log2(i + 1) for i in range(1, min(n, k) + 1))
    return dcg / idcg if idcg else 0.0


# ---- hand-computed cases ---------------------------------------------------------------

ROW = [0, 1, 0, 1, 0]  # relevant at ranks 2 and 4


@pytest.mark.parametrize("fn, args, expected", [
    (metrics.hit_rate_at_k, (1,), 0.0),
    (metrics.hit_rate_at_k, (2,), 1.0),
    (metrics.precision_at_k, (1,), 0.0),
    (metrics.precision_at_k, (2,), 0.5),
    (metrics.precision_at_k, (5,), 0.4),
    (metrics.average_precision, (), (1 / 2 + 2 / 4) / 2),  # 0.5
    (metrics.average_precision, (4,), (1 / 2 + 2 / 4) / 4),  # two relevant never retrieved
    (metrics.reciprocal_rank, (), 0.5),
    (metrics.ndcg_at_k, (5,), (1 / math.log2(3) + 1 / math.log2(5)) / (1 + 1 / math.log2(3))),
    (metrics.ndcg_at_k, (1,), 0.0),
])
def test_hand_computed(fn, args, expected):
    got = fn(np.array([ROW], dtype=bool), *args)
    assert got.shape == (1,)
    assert got[0] == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("row, rank", [([1, 0, 0], 1), ([0, 0, 1], 3), ([0, 0, 0], 0)])
def test_first_relevant_rank(row, rank):
    assert metrics.first_relevant_rank(np.array([row], bool))[0] == rank


def test_no_relevant_scores_zero():
    rel = np.zeros((2, 4), bool)
    assert metrics.average_precision(rel).tolist() == [0.0, 0.0]
    assert metrics.reciprocal_rank(rel).tolist() == [0.0, 0.0]
    assert metrics.ndcg_at_k(rel, 3).tolist() == [0.0, 0.0]


def test_relevance_from_labels_and_sets():
    retrieved = np.array([["a", "b", "a"], ["c", "c", "b"]])
    by_label = metrics.relevance_matrix(retrieved, ["a", "b"])
    assert by_label.tolist() == [[True, False, True], [False, False, True]]
    by_set = metrics.relevance_matrix(np.array([[3, 7, 9], [1, 2, 3]]), [{7, 9}, {5}])
    assert by_set.tolist() == [[False, True, True], [False, False, False]]


def test_summarise_names_and_means():
    rel = np.array([[1, 0, 0], [0, 1, 0]], bool)
    s = metrics.summarise(rel, ks=(1, 3), precision_ks=(1,))
    assert s["R@1"] == 0.5 and s["R@3"] == 1.0 and s["P@1"] == 0.5
    assert s["MRR"] == pytest.approx(0.75)
    assert s["mAP"] == pytest.approx(0.75)
    assert "R@10" not in s  # longer than the list: left out


# ---- seeded random data against the reference -----------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    n, K = 40, 12
    rel = rng.random((n, K)) < rng.uniform(0.05, 0.4)
    rel[0] = False  # a query with nothing relevant
    n_rel = rel.sum(axis=1) + rng.integers(0, 3, size=n)
    rows = rel.astype(int).tolist()
    for k in (1, 3, 5, 12):
        np.testing.assert_allclose(metrics.hit_rate_at_k(rel, k), [ref_hit(r, k) for r in rows])
        np.testing.assert_allclose(metrics.precision_at_k(rel, k), [ref_precision(r, k) for r in rows])
        np.testing.assert_allclose(metrics.ndcg_at_k(rel, k), [ref_ndcg(r, k) for r in rows])
        np.testing.assert_allclose(metrics.ndcg_at_k(rel, k, n_rel),
                                   [ref_ndcg(r, k, int(m)) for r, m in zip(rows, n_rel)])
    np.testing.assert_allclose(metrics.average_precision(rel), [ref_ap(r) for r in rows])
    np.testing.assert_allclose(metrics.average_precision(rel, n_rel),
                               [ref_ap(r, int(m)) for r, m in zip(rows, n_rel)])
    np.testing.assert_allclose(metrics.reciprocal_rank(rel), [ref_rr(r) for r in rows])


def test_labels_path_matches_reference():
    rnd = random.Random(7)
    labels = list("abcde")
    retrieved = [[rnd.choice(labels) for _ in range(8)] for _ in range(30)]
    queries = [rnd.choice(labels) for _ in range(30)]
    rel = metrics.relevance_matrix(np.array(retrieved), queries)
    for i in range(30):
        assert rel[i].tolist() == [x == queries[i] for x in retrieved[i]]


# ---- invalid input ----------------------------------------------------------------------

@pytest.mark.parametrize("call", [
    lambda: metrics.hit_rate_at_k(np.ones((2, 3), bool), 0),
    lambda: metrics.precision_at_k(np.ones((2, 3), bool), 4),
    lambda: metrics.precision_at_k(np.ones((2, 3), bool), 1.5),
    lambda: metrics.reciprocal_rank(np.ones((0, 3), bool)),
    lambda: metrics.reciprocal_rank(np.ones((3,), bool)),
    lambda: metrics.average_precision(np.full((1, 2), 2)),
    lambda: metrics.average_precision(np.ones((2, 3), bool), n_relevant=[1, 5, 5]),
    lambda: metrics.average_precision(np.ones((1, 3), bool), n_relevant=2),
    lambda: metrics.relevance_matrix(np.array([[1, 2]]), [1, 2]),
    lambda: metrics.relevance_matrix(np.zeros((0, 2)), []),
])
def test_invalid_input_raises(call):
    with pytest.raises(ValueError):
        call()
