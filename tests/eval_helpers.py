"""Checks of an evaluation's verdict against its own per-photo numbers (report.json or
``Evaluation.to_json()``), shared by the evaluate, CLI and report tests."""
from __future__ import annotations

import numpy as np
import pytest


def rr_column(variant: str) -> str:
    """The per-photo reciprocal-rank key of a variant: "clean/raw" -> "rr_clean_raw"."""
    return "rr_" + variant.replace("/", "_")


def expected_verdict(data: dict) -> str:
    """The headline verdict recomputed from the per-photo reciprocal ranks of ``data``: the MRR
    difference's mean and the two-sided Wilcoxon p computed here (scipy) must equal the
    reported ones; "gain"/"loss" only when the reported CI of the difference excludes 0 and
    p < alpha. Returns the verdict the numbers give."""
    from scipy.stats import wilcoxon

    headline, base = data["headline"], data["baseline"]
    photos = data["photos"]
    assert photos, "no scored photos"
    diff = (np.array([p[rr_column(headline)] for p in photos], float)
            - np.array([p[rr_column(base)] for p in photos], float))
    p = 1.0 if not diff.any() else float(wilcoxon(diff, zero_method="wilcox").pvalue)
    comp = data["comparisons"][headline]
    assert comp["wilcoxon_p_rr"] == pytest.approx(p, abs=1e-9)
    mrr = comp["diff"]["MRR"]
    assert mrr["mean"] == pytest.approx(diff.mean(), abs=1e-9)
    assert mrr["low"] <= mrr["mean"] <= mrr["high"]
    alpha = data["settings"]["eval_config"]["alpha"]
    if mrr["low"] > 0 and p < alpha:
        return "gain"
    if mrr["high"] < 0 and p < alpha:
        return "loss"
    return "no significant change"


def assert_verdict_follows_the_numbers(data: dict) -> str:
    """The reported verdict (top level and the headline comparison) is the one its numbers give."""
    want = expected_verdict(data)
    assert data["verdict"] == data["comparisons"][data["headline"]]["verdict"] == want, (data["verdict"], want)
    return want


def assert_too_few_queries_for_a_verdict(data: dict) -> None:
    """With at most 4 scored queries the two-sided Wilcoxon p is at least 0.068 (exact: 2/2^4 = 0.125;
    normal approximation, used with tied ranks: 0.068), so no difference can be significant at 0.05:
    the verdict must be "no significant change", whatever the photos."""
    assert len(data["photos"]) <= 4 and data["settings"]["eval_config"]["alpha"] <= 0.05
    assert assert_verdict_follows_the_numbers(data) == "no significant change"
