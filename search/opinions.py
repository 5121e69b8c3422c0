"""Second opinions: the same question answered under several embedders.

A search engine's embedder is not the seller's choice, so a verdict that holds under
one embedder only is a fact about that embedder. ``combine`` takes one evaluation per
embedder (same photos, same scenario) and calls a gain or a loss **robust** only when
every embedder's MRR difference has the same sign and each CI excludes 0; when every
CI includes 0 it is "no significant change" under all of them; anything else
"depends on the search engine's embedder".
"""
from __future__ import annotations

ROBUST = {1: "robust gain", -1: "robust loss"}
NONE = "no significant change under any of these embedders"
DEPENDS = "depends on the search engine's embedder"


def opinion(ev) -> dict:
    """One embedder's answer to the evaluation's own question (its headline variant)."""
    c = ev.comparisons[ev.headline]
    d = c["diff"]["MRR"]
    return {"embedder": ev.settings["embedder"], "variant": ev.headline,
            "mrr_raw": ev.metrics[ev.baseline]["MRR"]["mean"], "mrr": ev.metrics[ev.headline]["MRR"]["mean"],
            "diff": d, "wilcoxon_p_rr": c["wilcoxon_p_rr"], "verdict": c["verdict"],
            "n": c["n"]}


def _side(d: dict) -> int:
    return 1 if d["low"] > 0 else -1 if d["high"] < 0 else 0


def agreement(opinions: list[dict]) -> str:
    """robust gain / robust loss / no significant change ... / depends on the search engine's embedder."""
    sides = {_side(o["diff"]) for o in opinions}
    if len(sides) == 1:
        side = sides.pop()
        return ROBUST[side] if side else NONE
    return DEPENDS


def combine(evaluations: list) -> dict:
    """{"opinions": [...], "agreement": text}; the evaluations must answer the same question."""
    if len({ev.headline for ev in evaluations}) > 1:
        raise ValueError("second opinions must answer the same question (same scenario)")
    ops = [opinion(ev) for ev in evaluations]
    return {"opinions": ops, "agreement": agreement(ops)}


def sentence(combined: dict, level: str = "95%") -> str:
    """One line: the agreement and each embedder's MRR difference with its CI."""
    parts = [f"{o['embedder']} {o['diff']['mean']:+.3f} [{o['diff']['low']:+.3f}, {o['diff']['high']:+.3f}]"
             for o in combined["opinions"]]
    return (f"Across embedders: {combined['agreement']} (MRR difference, {level} CI: " + "; ".join(parts) + ").")
