"""Why cleanup gains or loses: what the embedder finds these photos by, measured on the same photos.

Each condition shows the embedder both sides (queries and catalog) the same way, at
the photo's own framing, with the cleanup's own mask (``search.views.framed_view``):

* ``raw``: the photos as given;
* ``product-grey``: the product alone, its surroundings a neutral grey;
* ``background``: the surroundings alone, the product's box filled with that grey;
* ``product-white``: the product alone on white, still at the photo's framing;
* ``clean``: the cleanup's output (white, centred, filling the square).

From them, with seeded bootstrap CIs over the query photos (paired where two
conditions are compared):

* context reliance: ``product-grey`` minus ``raw``; a drop means part of what the raw
  photo found came from around the product;
* background shortcut: ``background`` against chance (the expected score of a random
  ranking); a CI above chance means the backgrounds alone carry the class;
* removal: ``product-white`` minus ``raw``, the background taken away and nothing moved;
* framing: ``clean`` minus ``product-white``, the same cut-out reframed or not (removal plus
  framing is the whole of clean minus raw on these photos);
* per class: the scenario's MRR change beside the background's and the product's R@1.

``explain`` turns these into plain sentences, the first of which says how far they
account for the scenario's gain or loss.
"""
from __future__ import annotations

import numpy as np

from . import metrics
from .config import DEFAULT_REASONS, ReasonsConfig

CONDITIONS = ("raw", "product-grey", "background", "product-white", "clean")
CONDITION_TEXT = {
    "raw": "the photos as given",
    "product-grey": "the product alone on grey, in the photo's own framing",
    "background": "the background alone (the product's box filled grey)",
    "product-white": "the product alone on white, in the photo's own framing",
    "clean": "the cleaned photos (white, reframed: centred and filling the square)",
}


def scores_by_query(q_vecs: np.ndarray, c_vecs: np.ndarray, q_labels: np.ndarray,
                    c_labels: np.ndarray) -> dict[str, np.ndarray]:
    """Per-query R@1 and reciprocal rank over the full ranking of the catalog."""
    order = np.argsort(-(q_vecs @ c_vecs.T), axis=1, kind="stable")
    rel = c_labels[order] == q_labels[:, None]
    return {"R@1": metrics.hit_rate_at_k(rel, 1), "MRR": metrics.reciprocal_rank(rel)}


def chance(q_labels: np.ndarray, c_labels: np.ndarray) -> dict[str, float]:
    """Expected R@1 and MRR of a random ranking: a query with r relevant items among m finds one
    first at rank k with probability C(m-k, r-1) / C(m, r)."""
    from scipy.special import gammaln

    m = c_labels.size
    r1, rr = [], []
    counts = {lab: int((c_labels == lab).sum()) for lab in set(q_labels.tolist())}
    for lab in q_labels.tolist():
        r = counts[lab]
        if r == 0:
            r1.append(0.0)
            rr.append(0.0)
            continue
        k = np.arange(1, m - r + 2)
        log_p = (gammaln(m - k + 1) - gammaln(r) - gammaln(m - k - r + 2)) - (
            gammaln(m + 1) - gammaln(r + 1) - gammaln(m - r + 1))
        r1.append(r / m)
        rr.append(float((np.exp(log_p) / k).sum()))
    return {"R@1": float(np.mean(r1)), "MRR": float(np.mean(rr))}


def _ci(x: np.ndarray, idx: np.ndarray, confidence: float) -> dict:
    boots = x[idx].mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    return {"mean": float(x.mean()), "low": float(np.percentile(boots, tail)),
            "high": float(np.percentile(boots, 100 - tail))}


def measure(vectors: dict, q_labels, c_labels, variant_rr: dict, baseline: str, variant: str,
            resamples: int = 1000, confidence: float = 0.95, seed: int = 0,
            config: ReasonsConfig = DEFAULT_REASONS) -> dict:
    """The reasons block (module doc). ``vectors``: condition -> (query vectors, catalog vectors),
    rows aligned with ``q_labels`` / ``c_labels``; ``variant_rr``: variant -> per-query reciprocal
    ranks of the evaluation (same queries), for the per-class table of ``variant`` vs ``baseline``."""
    q_labels, c_labels = np.asarray(q_labels, dtype=object), np.asarray(c_labels, dtype=object)
    n = q_labels.size
    idx = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    per = {c: scores_by_query(*vectors[c], q_labels, c_labels) for c in CONDITIONS if c in vectors}
    luck = chance(q_labels, c_labels)
    out = {"n_queries": int(n), "n_catalog": int(c_labels.size), "metric": config.metric,
           "grey": config.grey, "variant": variant, "chance": luck,
           "conditions": {c: {m: _ci(x, idx, confidence) for m, x in s.items()} for c, s in per.items()},
           "condition_text": {c: CONDITION_TEXT[c] for c in per}}
    if "product-grey" in per:
        out["context"] = {m: _ci(per["product-grey"][m] - per["raw"][m], idx, confidence) for m in ("R@1", "MRR")}
    if "background" in per:
        bg = out["conditions"]["background"]
        out["shortcut"] = {m: {**bg[m], "chance": luck[m], "times_chance": bg[m]["mean"] / luck[m] if luck[m] else None,
                               "present": bool(bg[m]["low"] > luck[m])} for m in ("R@1", "MRR")}
    if "product-white" in per:
        out["removal"] = {m: _ci(per["product-white"][m] - per["raw"][m], idx, confidence) for m in ("R@1", "MRR")}
    if "clean" in per and "product-white" in per:
        out["framing"] = {m: _ci(per["clean"][m] - per["product-white"][m], idx, confidence) for m in ("R@1", "MRR")}
    by_class = {}
    for lab in sorted(set(q_labels.tolist())):
        sel = q_labels == lab
        row = {"n": int(sel.sum()), "chance_R@1": float((c_labels == lab).mean())}
        if baseline in variant_rr and variant in variant_rr:
            row["MRR_" + baseline] = float(variant_rr[baseline][sel].mean())
            row["MRR_" + variant] = float(variant_rr[variant][sel].mean())
            row["MRR_change"] = row["MRR_" + variant] - row["MRR_" + baseline]
        for c in ("raw", "product-grey", "background"):
            if c in per:
                row[f"R@1_{c}"] = float(per[c]["R@1"][sel].mean())
        by_class[lab] = row
    out["by_class"] = by_class
    return out


def _sig(d: dict) -> int:
    """+1 / -1 when the CI lies above / below 0, else 0."""
    return 1 if d["low"] > 0 else -1 if d["high"] < 0 else 0


def _f(d: dict, signed: bool = False) -> str:
    f = "{:+.3f}" if signed else "{:.3f}"
    return f"{f.format(d['mean'])} [{f.format(d['low'])}, {f.format(d['high'])}]"


def explain(r: dict, verdict: str) -> list[str]:
    """Plain sentences: the first says how far the reasons account for ``verdict`` (gain / loss /
    no significant change of the scenario); then one per measured reason, figures with CIs."""
    m = r["metric"]
    out = []
    shortcut = r.get("shortcut", {}).get(m, {}).get("present", False)
    context = _sig(r["context"][m]) if "context" in r else 0
    framing = _sig(r["framing"][m]) if "framing" in r else 0
    removal = _sig(r["removal"][m]) if "removal" in r else 0
    leans = shortcut or context < 0
    what = "their backgrounds" if shortcut else "what surrounds the product"
    if verdict == "loss":
        if leans:
            out.append(f"This embedder finds these photos partly by {what}, so the loss says as much about "
                       "the embedder and these photos as about the cleanup: cleanup takes away surroundings the "
                       "embedder was using" + (", and reframing the product costs on its own." if framing < 0
                                               else "."))
        elif removal < 0:
            out.append("The loss comes with taking the background away: the product alone on white, in the "
                       "photo's own framing, already scores lower than the raw photo.")
        elif framing < 0:
            out.append("The loss comes with reframing: the same cut-out scores lower centred and enlarged "
                       "than in the photo's own framing.")
        else:
            out.append("The loss is not explained by the measured reasons: the backgrounds carry no shortcut "
                       "and the product alone scores as well as the raw photo, so look at the cut-outs "
                       "(below) for damage to the product.")
    elif verdict == "gain":
        if removal > 0 and framing > 0:
            out.append("The gain comes from both steps of the cleanup: taking the background away and "
                       "reframing the product each raise the score on these photos.")
        elif removal > 0:
            out.append("The gain comes from taking the background away: the product alone on white, in the "
                       "photo's own framing, already scores higher than the raw photo; reframing adds no "
                       "significant change.")
        elif framing > 0:
            out.append("Part of the gain comes from reframing: the same cut-out scores higher centred and "
                       "enlarged than in the photo's own framing.")
        elif context > 0:
            out.append("The gain fits these photos' surroundings being a distraction: the product alone scores "
                       "higher than the raw photo.")
        else:
            out.append("The measured reasons do not single out where the gain comes from.")
        if leans:
            out.append(f"Even so, this embedder also finds these photos partly by {what}.")
    elif removal and framing and removal != framing:
        out.append("No significant change, because the cleanup's two steps pull apart on these photos: taking "
                   f"the background away {'raises' if removal > 0 else 'lowers'} the score and reframing the "
                   f"product {'raises' if framing > 0 else 'lowers'} it."
                   + (f" This embedder also finds these photos partly by {what}." if leans else ""))
    elif leans:
        out.append(f"No significant change, but this embedder finds these photos partly by {what}, so its "
                   "verdict on cleanup is a fact about the embedder and these photos as much as about the cleanup.")
    else:
        out.append("No significant change, and the measured reasons show no reliance on the photos' "
                   "surroundings.")
    if "shortcut" in r:
        s = r["shortcut"][m]
        times = f"{s['times_chance']:.1f} times chance" if s["times_chance"] is not None else "chance is 0"
        out.append(f"Background shortcut: the backgrounds alone give {m} {_f(s)}, {times} ({s['chance']:.3f})"
                   + ("; the CI lies above chance." if s["present"] else "; that is not above chance."))
    if "context" in r:
        raw, prod = r["conditions"]["raw"][m], r["conditions"]["product-grey"][m]
        word = {-1: "falls", 1: "rises", 0: "does not change significantly"}[context]
        out.append(f"Context reliance: with the product alone on grey, in the photo's framing, {m} {word}: "
                   f"{raw['mean']:.3f} -> {prod['mean']:.3f} (difference {_f(r['context'][m], True)}).")
    if "removal" in r:
        word = {-1: f"lowers {m}", 1: f"raises {m}", 0: f"leaves {m} about the same"}[removal]
        out.append(f"Background removal: the product alone on white, in the photo's framing, {word} "
                   f"(difference {_f(r['removal'][m], True)} against the raw photos).")
    if "framing" in r:
        word = {-1: f"lowers {m}", 1: f"raises {m}", 0: f"leaves {m} about the same"}[framing]
        out.append(f"Framing: centring and enlarging the same cut-out on white {word} "
                   f"(difference {_f(r['framing'][m], True)}).")
    return out
