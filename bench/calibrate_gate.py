"""Calibrate the cleanup gate on retrieval outcomes, photo by photo.

    python -m bench.calibrate_gate [--sets grocery_val,clothing_val] [--limit N]
                                   [--fit] [--out /tmp/gate.json] [--workers N]

For every query photo it embeds (with search's default embedder) the raw
photo, the whitened cut-out (``white``: on pure white, square, product filling
85 %, gate off) and the safe treatments (``cropN``: square crop around the mask
box grown by N % of its longer side, original background kept), ranks the
catalog and records each variant's per-photo outcome next to the mask signals
of ``hygiene.confidence``. ``--fit`` then searches the gate thresholds that
maximise the gated result (white when the gate passes, safe treatment when it
does not) summed over the fitted sets, and reports the result on every set
with paired-bootstrap 95 % CIs against raw.

Every cleaned variant is made by the product's one cleaning engine (the batch
engine through ``search.photo_cache.clean_photos``, cached like an evaluation's
cleanups, keyed by settings + hygiene code version) with a ``CleanConfig``
that expresses it (``CONFIGS``), on a 448 px canvas (the embedder sees 224 px):

* ``white``: gate off, fill 0.85, upscale up to 10x, no foreground colour
  estimation; ``white_refined`` the same with mask refinement on.
* ``cropN``: a gate that no photo with a product passes (``max_fg_share=0``)
  with ``safe_margin=N/100``, so every photo gets the safe treatment: the crop
  variants are exactly what the product does to a photo the gate fails
  (square crop, white padding only where the photo is too narrow for a square,
  scaled onto the canvas).
* ``raw``: the photo as loaded (``photos.io.load_image``).

The gate signals are computed from the model's mask of each query photo
(``bench.segmentation.cached_alpha``: a mask cache, not a cleaning path).

``--labelled MODELS`` instead scores the gate on labelled masks, per remover
(GrabCut and COCO_MVal, each model's masks from the mask cache): how many
masks it passes and how many of those are bad (IoU with the labelled object
< ``--good-iou``), under the default gate, under a gate fitted for that
remover (the most good masks passed at no lower precision than the default
gate has on ``--reference``'s masks) and under the gate the product ships for
it (``CleanConfig.gate_for``); ``--unlabelled FILE`` adds the pass share of
those photos (e.g. the ones a cascade's first remover fails on). This is how
``MODEL_GATES`` in hygiene/config.py was fitted.

Sets: grocery_val / grocery_train (store photos vs the 81 iconic images;
grocery_train is a seeded 400-photo subset kept for checking), clothing_val
(validation photos vs the train photos). Cleaned photos and embeddings are
cached under ``--cache-dir`` (default: the evaluation cache), masks for the
signals under /tmp/shelfready-masks. A photo the engine cannot clean in some
variant is left out of every variant (and named on stderr).
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from bench.gate_rules import GRID, gate_pass
from bench.segmentation import CACHE, cached_alpha, file_key
from hygiene.confidence import mask_signals
from hygiene.config import CleanConfig, GateConfig, RefineConfig
from search.photo_cache import (
    Prepared,
    clean_key,
    clean_photos,
    default_cache_dir,
    embed_prepared,
    raw_photos,
)

EMBEDDER = "cnn:efficientnet_lite0"
CANVAS = 448


# -------------------------------------------------------------------- renderings

WHITE = CleanConfig(size=CANVAS, fill=0.85, max_upscale=10.0, fg_estimation=False,
                    gate=GateConfig(enabled=False))


def crop_config(margin: float) -> CleanConfig:
    """The safe treatment forced for every photo: a "max" rule with limit 0 fails any product."""
    return CleanConfig(size=CANVAS, gate=GateConfig(max_fg_share=0.0, safe_margin=margin))


CONFIGS: dict[str, CleanConfig | None] = {  # None = the photo itself
    "raw": None,
    "white": WHITE,
    "white_refined": replace(WHITE, refine=RefineConfig(enabled=True)),
    "crop0": crop_config(0.0),
    "crop10": crop_config(0.10),
    "crop25": crop_config(0.25),
}
SAFE = ("raw", "crop0", "crop10", "crop25")


# ------------------------------------------------------------------------- data

def load_set(name: str, limit: int | None, catalog_limit: int | None = None):
    from search import datasets as d

    if name == "grocery_val":
        q, c = d.grocery_store("val", limit=limit)
    elif name == "grocery_train":
        q, c = d.grocery_store("train", limit=limit or 400, seed=0)
    elif name == "clothing_val":
        q, c = d.clothing_small(limit=limit)
    else:
        raise ValueError(f"unknown set {name!r}")
    return q, d.subset(c, catalog_limit, seed=0)


class Variants:
    """Each variant's photos from the cleaning engine, and their embeddings (both cached)."""

    def __init__(self, cache_dir: Path, workers: int = 1, progress: bool = True) -> None:
        self.cache_dir, self.workers, self.progress = Path(cache_dir), workers, progress
        self.embedder = None

    def _emb(self):
        if self.embedder is None:
            from search import create_embedder

            self.embedder = create_embedder(EMBEDDER, threads=1)
        return self.embedder

    def prepare(self, paths: list[Path], variant: str) -> list[Prepared]:
        config = CONFIGS[variant]
        if config is None:
            return raw_photos(paths)
        return clean_photos(paths, config, self.cache_dir, self.workers, self.progress)

    def embed(self, photos: list[Prepared], variant: str) -> np.ndarray:
        config = CONFIGS[variant]
        tag = "raw" if config is None else f"clean-{clean_key(config)}"  # the evaluation's tags
        return embed_prepared(photos, self._emb(), self.cache_dir, tag, progress=self.progress)


# ---------------------------------------------------------------------- metrics

def per_photo(q_vecs: np.ndarray, c_vecs: np.ndarray, q_labels, c_labels) -> dict[str, np.ndarray]:
    """Per query: rank of the first correct item (1-based), AP, P@10, hit@1, hit@5."""
    order = np.argsort(-(q_vecs @ c_vecs.T), axis=1, kind="stable")
    rel = np.asarray(c_labels, dtype=object)[order] == np.asarray(q_labels, dtype=object)[:, None]
    first = rel.argmax(axis=1) + 1
    n_rel = rel.sum(axis=1)
    cum = np.cumsum(rel, axis=1)
    ap = (rel * cum / np.arange(1, rel.shape[1] + 1)).sum(axis=1) / np.maximum(n_rel, 1)
    return {"rank": first, "r1": (first <= 1).astype(float), "r5": (first <= 5).astype(float),
            "p10": rel[:, :10].mean(axis=1), "ap": ap}


def boot_diff(a: np.ndarray, b: np.ndarray, n: int = 1000, seed: int = 0) -> tuple[float, float, float]:
    """Mean of b - a with a paired percentile bootstrap 95 % CI."""
    d = b - a
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, d.size, size=(n, d.size))
    means = d[idx].mean(axis=1)
    return float(d.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def _usable(prepared: dict[str, list[Prepared]], name: str, side: str) -> np.ndarray:
    """Photos every variant could make; the others are named on stderr and left out."""
    ok = np.array([all(ps[i].ok for ps in prepared.values()) for i in range(len(next(iter(prepared.values()))))])
    for v, ps in prepared.items():
        for p in ps:
            if not p.ok:
                print(f"{name}: {side} photo left out ({v}): {p.source}: {p.error}", file=sys.stderr)
    return ok


def collect(name: str, limit: int | None, vs: Variants, variants: list[str],
            clean_catalog: bool, cached_only: bool = False, catalog_limit: int | None = None) -> dict:
    q, c = load_set(name, limit, catalog_limit)
    if cached_only:
        q = [x for x in q if (CACHE / "u2netp" / f"{file_key(x.path)}.png").is_file()]
    c_prep = {v: vs.prepare([x.path for x in c], v) for v in (["raw", "white"] if clean_catalog else ["raw"])}
    q_prep = {v: vs.prepare([x.path for x in q], v) for v in variants}
    c_ok, q_ok = _usable(c_prep, name, "catalog"), _usable(q_prep, name, "query")
    c = [x for x, ok in zip(c, c_ok) if ok]
    q = [x for x, ok in zip(q, q_ok) if ok]
    c_prep = {v: [p for p, ok in zip(ps, c_ok) if ok] for v, ps in c_prep.items()}
    q_prep = {v: [p for p, ok in zip(ps, q_ok) if ok] for v, ps in q_prep.items()}
    ql, cl = [x.label for x in q], [x.label for x in c]
    cat = {v: vs.embed(ps, v) for v, ps in c_prep.items()}
    outcomes = {}
    for v in variants:
        vecs = vs.embed(q_prep[v], v)
        for cv, cvecs in cat.items():
            outcomes[v if cv == "raw" else f"{v}|cat_{cv}"] = per_photo(vecs, cvecs, ql, cl)
    cfg = GateConfig()
    sigs = [mask_signals(cached_alpha(x.path), cfg) for x in q]
    return {"name": name, "paths": [x.path for x in q], "outcomes": outcomes, "signals": sigs,
            "left_out": {"query": int((~q_ok).sum()), "catalog": int((~c_ok).sum())}}


def metric_of(name: str) -> str:
    return "p10" if name.startswith("clothing") else "r1"


def summarise(data: dict, rules: dict, safe: str, white: str = "white") -> dict:
    out = data["outcomes"]
    ok = gate_pass(data["signals"], rules)
    gated = {m: np.where(ok, out[white][m], out[safe][m]) for m in out["raw"]}
    res = {"n": len(ok), "pass_rate": round(float(ok.mean()), 3)}
    for m in ("r1", "r5", "p10", "ap"):
        res[f"raw_{m}"] = round(float(out["raw"][m].mean()), 4)
        res[f"white_{m}"] = round(float(out[white][m].mean()), 4)
        res[f"safe_{m}"] = round(float(out[safe][m].mean()), 4)
        d, lo, hi = boot_diff(out["raw"][m], gated[m])
        res[f"gated_{m}"] = round(float(gated[m].mean()), 4)
        res[f"gated_minus_raw_{m}"] = [round(d, 4), round(lo, 4), round(hi, 4)]
    return res


def signal_table(data: dict, white: str = "white") -> list[dict]:
    """How well each signal separates 'whitening hurt' from 'whitening helped' (AUC)."""
    out = data["outcomes"]
    m = metric_of(data["name"])
    key = "rank" if m == "r1" else "ap"
    delta = out[white][key] - out["raw"][key]
    hurt = delta > 0 if key == "rank" else delta < 0
    helped = delta < 0 if key == "rank" else delta > 0
    rows = []
    for sig in data["signals"][0]:
        vals = np.array([s[sig] for s in data["signals"]], dtype=float)
        a, b = vals[hurt], vals[helped]
        if a.size and b.size:
            auc = float((a[:, None] > b[None, :]).mean() + 0.5 * (a[:, None] == b[None, :]).mean())
            rows.append({"signal": sig, "auc_hurt_higher": round(auc, 3),
                         "median_hurt": round(float(np.median(a)), 4),
                         "median_helped": round(float(np.median(b)), 4)})
    return rows


def fit(sets: list[dict], safe: str, white: str = "white") -> tuple[dict, float]:
    """Grid search of the rules maximising the summed gated gain of each set's main metric."""
    best, best_gain = {}, -1e9
    keys = list(GRID)
    for combo in itertools.product(*(GRID[k] for k in keys)):
        rules = dict(zip(keys, combo))
        gain = 0.0
        for data in sets:
            m = metric_of(data["name"])
            out = data["outcomes"]
            ok = gate_pass(data["signals"], rules)
            gated = np.where(ok, out[white][m], out[safe][m])
            gain += float(gated.mean() - out["raw"][m].mean())
        # prefer looser rules on ties (fewer photos sent to review)
        if gain > best_gain + 1e-9:
            best, best_gain = rules, gain
    return best, best_gain


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--labelled", default="", metavar="MODELS",
                    help="instead of retrieval: gate precision on the labelled masks of GrabCut and COCO_MVal "
                         "for these removers (comma-separated), default vs fitted vs shipped gate")
    ap.add_argument("--good-iou", type=float, default=0.8, help="--labelled: a mask is good from this IoU")
    ap.add_argument("--reference", default="u2netp",
                    help="--labelled: the model whose precision under the default gate a fitted gate must keep")
    ap.add_argument("--unlabelled", type=Path, default=None,
                    help="--labelled: a file of photo paths (one a line) whose pass share is reported")
    ap.add_argument("--sets", default="grocery_val,clothing_val")
    ap.add_argument("--check-sets", default="", help="sets scored with the fitted rules, not fitted on")
    ap.add_argument("--limit", default=None,
                    help="query photos per set: N for every set, or set=N,set=N (seeded subsets)")
    ap.add_argument("--variants", default="raw,white,crop0,crop10,crop25")
    ap.add_argument("--clean-catalog", action="store_true", help="also rank against a whitened catalog")
    ap.add_argument("--safe", default="crop10", help="safe treatment when the gate fails")
    ap.add_argument("--catalog-limit", type=int, default=None, help="seeded subset of the catalog")
    ap.add_argument("--fit", action="store_true")
    ap.add_argument("--cached-only", action="store_true",
                    help="only query photos whose mask is cached (quick exploration)")
    ap.add_argument("--rules", default="", help="JSON rules to score instead of fitting")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--cache-dir", type=Path, default=None,
                    help="cleaned photos and embeddings (default: the evaluation cache)")
    ap.add_argument("--workers", type=int, default=1, help="cleaning processes (0 = one per core)")
    args = ap.parse_args(argv)
    if args.labelled:
        models = args.labelled.split(",")
        models += [args.reference] if args.reference not in models else []
        paths = [Path(x) for x in args.unlabelled.read_text().split()] if args.unlabelled else []
        from bench.gate_labelled import labelled_report

        text = json.dumps(labelled_report(models, args.good_iou, args.reference, paths), indent=1)
        if args.out:
            args.out.write_text(text)
        print(text)
        return 0
    variants = args.variants.split(",")
    unknown = [v for v in variants + [args.safe] if v not in CONFIGS]
    if unknown:
        ap.error(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(CONFIGS)}")
    if args.safe not in variants:
        ap.error(f"--safe {args.safe} must be one of --variants")
    vs = Variants(args.cache_dir or default_cache_dir(), args.workers)
    limits: dict[str, int | None] = {}
    if args.limit and "=" in args.limit:
        limits = {k: int(v) for k, v in (part.split("=") for part in args.limit.split(","))}
    elif args.limit:
        limits = {s: int(args.limit) for s in (args.sets + "," + args.check_sets).split(",") if s}
    fitted = [collect(s, limits.get(s), vs, variants, args.clean_catalog, args.cached_only,
                      args.catalog_limit) for s in args.sets.split(",") if s]
    checked = [collect(s, limits.get(s), vs, variants, args.clean_catalog, args.cached_only,
                      args.catalog_limit)
               for s in args.check_sets.split(",") if s]
    report: dict = {"embedder": EMBEDDER, "safe": args.safe, "sets": {},
                    "clean_keys": {v: clean_key(CONFIGS[v]) for v in variants if CONFIGS[v] is not None}}
    for data in fitted + checked:
        report["sets"][data["name"]] = {
            "variants": {v: {m: round(float(o[m].mean()), 4) for m in ("r1", "r5", "p10", "ap")}
                         for v, o in data["outcomes"].items()},
            "signals_auc": signal_table(data),
            "left_out": data["left_out"],
        }
    rules = json.loads(args.rules) if args.rules else {}
    if args.fit:
        rules, gain = fit(fitted, args.safe)
        report["fit_gain"] = round(gain, 4)
    report["rules"] = rules
    for data in fitted + checked:
        report["sets"][data["name"]]["gated"] = summarise(data, rules, args.safe)
        report["sets"][data["name"]]["fitted_on"] = data in fitted
    text = json.dumps(report, indent=1)
    if args.out:
        photos = []
        for data in fitted + checked:
            ok = gate_pass(data["signals"], rules)
            for i, p in enumerate(data["paths"]):
                photos.append({"set": data["name"], "path": str(p), "passed": bool(ok[i]), **data["signals"][i],
                               **{f"{v}_{m}": round(float(o[m][i]), 4) for v, o in data["outcomes"].items()
                                  for m in ("rank", "ap", "p10")}})
        args.out.with_suffix(".photos.json").write_text(json.dumps(photos, indent=0))
        args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
