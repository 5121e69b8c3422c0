"""Does the cleanup help visual search? The same runner over raw and cleaned photos.

``evaluate(queries, catalog, embedder)`` embeds the query photos raw and cleaned
(``hygiene.clean``), optionally the catalog cleaned too, ranks the whole
catalog for every query by exact inner product (cosine; no approximate index,
so index errors cannot blur the effect), and scores each variant with
``search.metrics``. The same embedder and preprocessing serve every variant, so
the only difference is the cleanup.

Variants are named ``query/catalog``: ``raw/raw`` is the baseline, ``clean/raw``
cleaned queries against the catalog as given, ``clean/clean`` both cleaned,
``raw/clean`` raw queries against a cleaned catalog; ``fused`` is the mean of the
raw and the cleaned photo's embeddings. ``clean`` and ``fused`` show the embedder
``EvalConfig.view`` of the cleaned photo (``search.views``; default: the marketplace
output); ``clean:<view>`` / ``fused:<view>`` name another view, e.g.
``clean:blur/clean:blur`` or ``fused:grey@0.95/fused:grey@0.95``, so views compare
in one run on the same photos.

A *scenario* (``search.scenarios``: shop-search, catalog-match, normalised-index)
names the seller's question and the variant that answers it; ``evaluate(...,
scenario=...)`` runs raw/raw, that variant and any extra ``variants``, and gives the
verdict of the scenario's variant. Every evaluation also measures its *reasons*
(``search.reasons``: context reliance, background shortcut, framing, per class) on the
same photos, unless ``EvalConfig.reasons.enabled`` is off; they need both sides cleaned.

Statistics (all seeded): 95 % percentile bootstrap CIs of each metric's mean;
for each variant against ``raw/raw`` a paired bootstrap of the difference
(the same resampled photos for both) and a Wilcoxon signed-rank test on the
per-photo reciprocal ranks. Verdict: "gain" / "loss" when the MRR difference's
CI excludes 0 AND Wilcoxon p < alpha, in the same direction; otherwise
"no significant change".

Cleaned images and embeddings come from the disk cache in ``search.photo_cache``,
so a re-run or a second bench reuses them. Photos that cannot be read or
cleaned are left out of every variant and listed.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from hygiene.config import CleanConfig
from hygiene.version import code_version

from . import metrics, scenarios
from . import reasons as reasons_mod
from .config import DEFAULT_REASONS, DEFAULT_VIEW, EmbedConfig, ReasonsConfig, ViewConfig
from .datasets import LabelledImage
from .embed_modes import fuse
from .photo_cache import cache_info, clean_key, clean_photos, default_cache_dir, embed_prepared, raw_photos
from .views import FRAMED_KINDS, load_framed, load_view, parse_view, view_key, view_name

BASELINE = scenarios.BASELINE
MODES = ("raw", "clean", "fused")  # fused: mean of the raw and the cleaned photo's embeddings, normalised
VARIANTS = tuple(f"{q}/{c}" for q in MODES for c in MODES)


@dataclass(frozen=True)
class EvalConfig:
    ks: tuple[int, ...] = (1, 5, 10)  # hit rate ("recall") at these k
    precision_ks: tuple[int, ...] = (1, 10)
    curve_max_k: int = 50  # recall@k curve for k = 1..this
    max_rank: int = 1000  # ranking depth; AP is truncated AP when the catalog is larger
    resamples: int = 1000  # bootstrap resamples
    confidence: float = 0.95
    alpha: float = 0.05  # significance level of the Wilcoxon test
    seed: int = 0
    workers: int = 0  # cleaning processes (0 = one per core this process is given)
    batch_size: int = EmbedConfig().batch_size  # images per embedder call
    cache_dir: Path | None = None  # None = default_cache_dir()
    cache_key: str | None = None  # pin cleaned images to this cache key (default: clean_key(config))
    view: ViewConfig = DEFAULT_VIEW  # what the embedder sees of a cleaned photo in "clean"/"fused" modes
    reasons: ReasonsConfig = DEFAULT_REASONS  # why a gain or a loss (search/reasons.py)

    def __post_init__(self) -> None:
        if self.resamples < 100:
            raise ValueError(f"resamples must be >= 100, got {self.resamples}")
        if not 0.5 < self.confidence < 1:
            raise ValueError(f"confidence must be in (0.5, 1), got {self.confidence}")
        if self.max_rank < 1 or self.workers < 0 or self.batch_size < 1:
            raise ValueError("max_rank and batch_size must be >= 1, workers >= 0")


def rank_catalog(query_vecs: np.ndarray, catalog_vecs: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``depth`` catalog indices and scores per query (ties: lower index first)."""
    scores = query_vecs @ catalog_vecs.T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :depth]
    return order, np.take_along_axis(scores, order, axis=1)


# --------------------------------------------------------------------------- runner


@dataclass
class Evaluation:
    variants: list[str]
    baseline: str
    headline: str  # the variant whose comparison gives the verdict
    verdict: str
    metrics: dict  # variant -> metric -> {"mean", "low", "high"}
    comparisons: dict  # variant -> comparison against the baseline
    by_class: dict  # variant -> label -> metric -> mean (+ "n")
    curves: dict  # variant -> [hit rate at k = 1..K]
    photos: list[dict]  # per query photo
    catalog: list[dict]  # per catalog item: path, label, sku, cleaned path, status
    excluded: list[dict]  # photos left out and why
    settings: dict
    scenario: dict | None = None  # search.scenarios.Scenario as a dict (None: no scenario named)
    reasons: dict | None = None  # search.reasons.measure + "sentences", or {"error": ...}
    opinions: list | None = None  # other embedders' verdicts on the same question (search.opinions)

    def to_json(self) -> dict:
        return asdict(self)


def split_mode(mode: str) -> tuple[str, str | None]:
    """``"fused:blur@0.95"`` -> ("fused", "blur@0.95"); ``"clean"`` -> ("clean", None)."""
    base, sep, view = mode.partition(":")
    if base not in MODES or (sep and (base == "raw" or not view)):
        raise ValueError(f"unknown mode {mode!r}: raw, clean, fused, or clean:<view> / fused:<view> "
                         "(view = white|grey|blur[@fill], e.g. clean:blur@0.95)")
    return base, (view if sep else None)


def _needed(modes: set[str]) -> set[str]:
    """The embedded photo sets a set of modes needs: raw and clean views (fused = raw + its clean view)."""
    out = set()
    for m in modes:
        base, view = split_mode(m)
        out.add("raw" if base == "raw" else "clean" + (f":{view}" if view else ""))
        if base == "fused":
            out.add("raw")
    return out


def _variant_list(variants, clean_catalog: bool) -> list[str]:
    if variants is None:
        variants = [BASELINE, "clean/raw"] + (["clean/clean"] if clean_catalog else [])
    variants = list(dict.fromkeys(v.strip() for v in variants))
    bad = [v for v in variants if v.count("/") != 1]
    if bad:
        raise ValueError(f"unknown variant(s) {bad}: query/catalog, each raw, clean or fused "
                         "(optionally :<view>), e.g. {', '.join(VARIANTS[:3])}, clean:blur/clean:blur")
    for v in variants:
        for mode in v.split("/"):
            try:
                split_mode(mode)
            except ValueError as exc:
                raise ValueError(f"unknown variant {v!r}: {exc}") from None
    if BASELINE not in variants:
        variants.insert(0, BASELINE)
    if len(variants) < 2:
        raise ValueError("need at least one variant besides the raw/raw baseline")
    return variants


def evaluate(queries: Sequence[LabelledImage], catalog: Sequence[LabelledImage], embedder,
             clean_config: CleanConfig = CleanConfig(), variants: Sequence[str] | None = None,
             clean_catalog: bool = False, config: EvalConfig = EvalConfig(),
             progress: bool = True, scenario: str | None = None) -> Evaluation:
    """Score raw vs cleaned query photos (and catalog) against the same catalog; see module doc.

    ``scenario`` (search.scenarios) picks the variant that gives the verdict; ``variants`` then
    adds others to the same run (``clean_catalog`` is ignored)."""
    if not queries or not catalog:
        raise ValueError("need at least one query photo and one catalog item")
    scene = scenarios.get(scenario) if scenario else None
    if isinstance(embedder, str):
        from .embedders import create_embedder

        embedder = create_embedder(embedder, batch_size=config.batch_size)
    if scene is not None:
        variants = _variant_list(scenarios.variants_for(scene.name, variants), True)
    else:
        variants = _variant_list(variants, clean_catalog)
    cache = Path(config.cache_dir) if config.cache_dir else default_cache_dir()
    q_modes = _needed({v.split("/")[0] for v in variants})
    c_modes = _needed({v.split("/")[1] for v in variants})
    views = {m: (config.view if m == "clean" else parse_view(m.partition(":")[2], config.view))
             for m in q_modes | c_modes if m != "raw"}

    prep = {("q", "raw"): raw_photos([q.path for q in queries]),
            ("c", "raw"): raw_photos([c.path for c in catalog])}
    ckey = config.cache_key or clean_key(clean_config)
    want_reasons = config.reasons.enabled
    if q_modes - {"raw"} or want_reasons:
        prep[("q", "clean")] = clean_photos([q.path for q in queries], clean_config, cache,
                                            config.workers, progress, ckey)
    if c_modes - {"raw"} or want_reasons:
        prep[("c", "clean")] = clean_photos([c.path for c in catalog], clean_config, cache,
                                            config.workers, progress, ckey)
    composed = [m for m in views if view_key(views[m], clean_config)]
    if composed and any(p.status == "cleaned" and not (p.mask_path and p.mask_path.is_file())
                        for side in ("q", "c") for p in prep.get((side, "clean"), [])):
        raise ValueError(f"the cleaned-photo cache {ckey} holds no masks (made before views), so the "
                         f"view(s) {', '.join(sorted(composed))} cannot be composed: clean again "
                         "(without --cache-key)")
    vecs = {}
    for side, modes in (("q", q_modes), ("c", c_modes)):
        for mode in sorted(modes):
            photos = prep[(side, "raw" if mode == "raw" else "clean")]
            if mode == "raw":
                vecs[(side, mode)] = embed_prepared(photos, embedder, cache, "raw", config.batch_size, progress)
                continue
            vkey = view_key(views[mode], clean_config)
            tag = f"clean-{ckey}" + (f"-{vkey}" if vkey else "")
            loader = None if not vkey else (
                lambda p, v=views[mode]: load_view(p.source, p.image_path, p.mask_path, p.status, p.model,
                                                   clean_config, v))
            vecs[(side, mode)] = embed_prepared(photos, embedder, cache, tag, config.batch_size, progress,
                                                loader=loader)

    def vectors(side: str, mode: str) -> np.ndarray:
        base, view = split_mode(mode)
        if base != "fused":
            return vecs[(side, mode)]
        return fuse(vecs[(side, "raw")], vecs[(side, "clean" + (f":{view}" if view else ""))])

    # a photo is used only if every variant can use it
    q_sets = {"raw"} | ({"clean"} if q_modes - {"raw"} else set())
    c_sets = {"raw"} | ({"clean"} if c_modes - {"raw"} else set())
    q_ok = np.array([all(prep[("q", m)][i].ok for m in q_sets) for i in range(len(queries))])
    c_ok = np.array([all(prep[("c", m)][i].ok for m in c_sets) for i in range(len(catalog))])
    excluded = [{"path": str(p.source), "side": side, "variant": mode, "error": p.error}
                for (side, mode), photos in prep.items() for p in photos if not p.ok]
    if not c_ok.any():
        raise ValueError("no catalog image could be read")
    c_idx = np.flatnonzero(c_ok)
    c_labels = np.array([catalog[j].label for j in c_idx], dtype=object)
    label_count = {lab: int((c_labels == lab).sum()) for lab in set(c_labels.tolist())}
    for i, q in enumerate(queries):
        if q_ok[i] and q.label not in label_count:
            q_ok[i] = False
            excluded.append({"path": str(q.path), "side": "q", "variant": "all",
                             "error": f"label {q.label!r} has no catalog item"})
    q_idx = np.flatnonzero(q_ok)
    if q_idx.size == 0:
        raise ValueError("no query photo could be scored (unreadable, or labels absent from the catalog)")
    q_labels = np.array([queries[i].label for i in q_idx], dtype=object)
    n_relevant = np.array([label_count[lab] for lab in q_labels])
    depth = min(len(c_idx), config.max_rank)

    per_variant, tops = {}, {}
    for v in variants:
        qm, cm = v.split("/")
        order, scores = rank_catalog(vectors("q", qm)[q_idx], vectors("c", cm)[c_idx], depth)
        rel = c_labels[order] == q_labels[:, None]
        per_variant[v] = (rel, metrics.per_query(rel, config.ks, config.precision_ks, n_relevant))
        tops[v] = (c_idx[order[:, 0]], scores[:, 0])

    stats = _statistics(per_variant, variants, q_labels, config)
    photos = []
    for row, i in enumerate(q_idx):
        q = queries[i]
        cp = prep.get(("q", "clean"), [None] * len(queries))[i]
        rec = {"path": str(q.path), "label": q.label,
               "status": cp.status if cp else "", "reasons": "; ".join(cp.reasons) if cp else "",
               "model": cp.model if cp else "",
               "cleaned_path": str(cp.image_path) if cp and cp.image_path else ""}
        for v in variants:
            rel, per_q = per_variant[v]
            rank = int(metrics.first_relevant_rank(rel[row:row + 1])[0])
            slug = v.replace("/", "_")
            rec[f"rank_{slug}"] = rank or None  # None: not within max_rank
            rec[f"rr_{slug}"] = float(per_q["RR"][row])
            rec[f"top1_{slug}"] = int(tops[v][0][row])
            rec[f"top1_label_{slug}"] = catalog[int(tops[v][0][row])].label
            rec[f"top1_score_{slug}"] = round(float(tops[v][1][row]), 5)
        photos.append(rec)
    cat_clean = prep.get(("c", "clean"))
    cat_rows = [{"path": str(c.path), "label": c.label, "sku": c.sku,
                 "cleaned_path": str(cat_clean[j].image_path) if cat_clean and cat_clean[j].image_path else "",
                 "status": cat_clean[j].status if cat_clean else "raw",
                 "model": cat_clean[j].model if cat_clean else "", "used": bool(c_ok[j])}
                for j, c in enumerate(catalog)]
    headline = scene.variant if scene else "clean/clean" if "clean/clean" in variants else variants[1]
    why = None
    if want_reasons:
        why = _reasons(prep, q_idx, c_idx, q_labels, c_labels, vecs, embedder, cache, ckey, clean_config, config,
                       {v: per_variant[v][1]["RR"] for v in variants}, headline, progress)
        if "error" not in why:
            why["sentences"] = reasons_mod.explain(why, stats["comparisons"][headline]["verdict"])
    settings = {"embedder": embedder.name, "clean_config": json.loads(clean_config.fingerprint()),
                "clean_key": ckey, "hygiene_code": code_version(),
                "views": {m: {"name": view_name(v), **asdict(v)} for m, v in sorted(views.items())},
                "cleaned_with": cache_info(cache, ckey), "eval_config": {
                    k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()},
                "n_queries": int(q_idx.size), "n_catalog": int(c_idx.size), "ranking_depth": depth,
                "ranking": "exact inner product over the whole catalog" if depth == len(c_idx)
                else f"exact inner product, top {depth} (AP truncated)"}
    return Evaluation(variants=variants, baseline=BASELINE, headline=headline,
                      verdict=stats["comparisons"][headline]["verdict"], metrics=stats["metrics"],
                      comparisons=stats["comparisons"], by_class=stats["by_class"],
                      curves=stats["curves"], photos=photos, catalog=cat_rows, excluded=excluded,
                      settings=settings, scenario=asdict(scene) if scene else None, reasons=why)


def _reasons(prep, q_idx, c_idx, q_labels, c_labels, vecs, embedder, cache, ckey, clean_config, config,
             variant_rr, headline, progress) -> dict:
    """Embed the framed views of the scored photos (cached) and measure the reasons on them."""
    import copy

    rc = config.reasons
    views, ok = {"raw": {}, "clean": {}}, {}
    for side, idx in (("q", q_idx), ("c", c_idx)):
        views["raw"][side] = vecs[(side, "raw")][idx]
        photos = [copy.copy(p) for p in prep[(side, "clean")]]  # a failed view must not touch the variants
        if not any(p.ok for p in photos):
            return {"error": "no photo could be cleaned, so nothing can be said about why"}
        if any(p.ok and not (p.mask_path and p.mask_path.is_file()) for p in photos):
            return {"error": f"the cleaned-photo cache {ckey} holds no masks (made before views): clean "
                             "again (without --cache-key) to measure the reasons"}
        views["clean"][side] = embed_prepared(photos, embedder, cache, f"clean-{ckey}", config.batch_size,
                                              progress)[idx]  # the marketplace output, whatever config.view
        for kind in FRAMED_KINDS:
            loader = (lambda p, k=kind: load_framed(p.source, p.mask_path, p.model, clean_config, k, rc.grey))
            v = embed_prepared(photos, embedder, cache, f"framed-{ckey}-{kind}{rc.grey}", config.batch_size,
                               progress, loader=loader)
            views.setdefault(kind, {})[side] = v[idx]
        ok[side] = np.array([photos[i].ok for i in idx])
    return _measure_ok(views, ok["q"], ok["c"], q_labels, c_labels, variant_rr, headline, config)


def _measure_ok(views, q_ok, c_ok, q_labels, c_labels, variant_rr, headline, config) -> dict:
    if not q_ok.any() or not c_ok.any():
        return {"error": "no photo had a usable mask on one side, so nothing can be said about why"}
    vectors = {k: (v["q"][q_ok], v["c"][c_ok]) for k, v in views.items()}
    cl = np.asarray(c_labels, dtype=object)[c_ok]
    ql = np.asarray(q_labels, dtype=object)[q_ok]
    keep = np.isin(ql, np.unique(cl))
    vectors = {k: (q[keep], c) for k, (q, c) in vectors.items()}
    out = reasons_mod.measure(vectors, ql[keep], cl, {v: rr[q_ok][keep] for v, rr in variant_rr.items()},
                              BASELINE, headline, config.resamples, config.confidence, config.seed, config.reasons)
    out["left_out"] = {"queries": int(q_ok.size - keep.sum()), "catalog": int((~c_ok).sum())}
    return out


def _statistics(per_variant: dict, variants: list[str], labels: np.ndarray, config: EvalConfig) -> dict:
    n = labels.size
    rng = np.random.default_rng(config.seed)
    idx = rng.integers(0, n, size=(config.resamples, n))  # shared by all variants: paired
    lo_q, hi_q = (1 - config.confidence) / 2 * 100, (1 + config.confidence) / 2 * 100
    rename = {"AP": "mAP", "RR": "MRR"}

    def ci(x: np.ndarray) -> dict:
        boots = x[idx].mean(axis=1)
        return {"mean": float(x.mean()), "low": float(np.percentile(boots, lo_q)),
                "high": float(np.percentile(boots, hi_q))}

    out = {"metrics": {}, "comparisons": {}, "by_class": {}, "curves": {}}
    for v in variants:
        rel, per_q = per_variant[v]
        out["metrics"][v] = {rename.get(m, m): ci(x) for m, x in per_q.items()}
        kmax = min(config.curve_max_k, rel.shape[1])
        out["curves"][v] = np.cumsum(rel[:, :kmax], axis=1).astype(bool).mean(axis=0).round(5).tolist()
        out["by_class"][v] = {
            lab: {"n": int((labels == lab).sum()),
                  **{rename.get(m, m): float(x[labels == lab].mean()) for m, x in per_q.items()}}
            for lab in sorted(set(labels.tolist()))}
    base_rel, base = per_variant[BASELINE]
    base_rank = metrics.first_relevant_rank(base_rel)
    for v in variants:
        if v == BASELINE:
            continue
        rel, per_q = per_variant[v]
        diffs = {rename.get(m, m): ci(per_q[m] - base[m]) for m in per_q}
        p = wilcoxon_p(per_q["RR"], base["RR"])
        d = diffs["MRR"]
        if d["low"] > 0 and p < config.alpha:
            verdict = "gain"
        elif d["high"] < 0 and p < config.alpha:
            verdict = "loss"
        else:
            verdict = "no significant change"
        rank = metrics.first_relevant_rank(rel)
        big = rel.shape[1] + 1  # "not found" ranks last
        r0, r1 = np.where(base_rank == 0, big, base_rank), np.where(rank == 0, big, rank)
        out["comparisons"][v] = {"vs": BASELINE, "diff": diffs, "wilcoxon_p_rr": p, "verdict": verdict,
                                 "improved": int((r1 < r0).sum()), "worse": int((r1 > r0).sum()),
                                 "same": int((r1 == r0).sum()), "n": int(n)}
    return out


def wilcoxon_p(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p of paired samples (1.0 when every pair is tied)."""
    from scipy.stats import wilcoxon

    d = np.asarray(a, float) - np.asarray(b, float)
    if not np.any(d != 0):
        return 1.0
    return float(wilcoxon(d, zero_method="wilcox").pvalue)
