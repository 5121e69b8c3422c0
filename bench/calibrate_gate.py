"""Calibrate the cleanup gate on retrieval outcomes, photo by photo.

    python -m bench.calibrate_gate [--sets grocery_val,clothing_val] [--limit N]
                                   [--fit] [--out /tmp/gate.json]

For every query photo it embeds (with search's default embedder) the raw
photo, the whitened cut-out (``white``: model alpha on pure white, square,
product filling 85 %), and the safe treatments (``crop``: square crop around
the mask box with a margin, original background kept), ranks the catalog and
records each variant's per-photo outcome next to the mask signals of
``hygiene.confidence``. ``--fit`` then searches the gate thresholds that
maximise the gated result (white when the gate passes, safe treatment when it
does not) summed over the fitted sets, and reports the result on every set
with paired-bootstrap 95 % CIs against raw.

Sets: grocery_val / grocery_train (store photos vs the 81 iconic images;
grocery_train is a seeded 400-photo subset kept for checking), clothing_val
(validation photos vs the train photos). Masks and embeddings are cached under
/tmp/shelfready-masks. The whitening here is a stand-in for hygiene.clean
(same compose/frame functions, foreground colour estimation off, 448 px canvas:
the embedder sees 224 px).
"""
from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from bench.segmentation import CACHE, cached_alpha, load_rgb
from hygiene import compose, frame
from hygiene.confidence import GateConfig, mask_signals, safe_crop_box
from hygiene.refine import RefineConfig, refine_alpha

EMBEDDER = "cnn:efficientnet_lite0"
CANVAS = 448


# -------------------------------------------------------------------- renderings

def render_white(rgb: np.ndarray, alpha: np.ndarray, fill: float = 0.85) -> Image.Image:
    box = frame.product_box(alpha, 128)
    if box is None:
        return Image.fromarray(rgb)
    white = compose.on_white(rgb, compose.tidy_alpha(alpha, 128, 0.05))
    layout = frame.plan(box, CANVAS, fill, max_upscale=10.0)
    x0, y0, x1, y1 = layout.placed
    region = frame.resize_region(white, box, x1 - x0, y1 - y0)
    return Image.fromarray(frame.place(region, layout, 255))


def render_crop(rgb: np.ndarray, alpha: np.ndarray, margin: float) -> Image.Image:
    box = safe_crop_box(alpha, margin)
    if box is None:
        return Image.fromarray(rgb)
    x0, y0, x1, y1 = box
    return Image.fromarray(rgb[y0:y1, x0:x1])


VARIANTS = {
    "raw": lambda rgb, a, r: Image.fromarray(rgb),
    "white": lambda rgb, a, r: render_white(rgb, a),
    "white_refined": lambda rgb, a, r: render_white(rgb, r),
    "crop0": lambda rgb, a, r: render_crop(rgb, a, 0.0),
    "crop10": lambda rgb, a, r: render_crop(rgb, a, 0.10),
    "crop25": lambda rgb, a, r: render_crop(rgb, a, 0.25),
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


class Embeddings:
    """Embedding cache on disk: one .npy per (variant, file hash)."""

    def __init__(self, variants_of_refine: str) -> None:
        self.embedder = None
        self.tag = variants_of_refine

    def _emb(self):
        if self.embedder is None:
            from search import create_embedder

            self.embedder = create_embedder(EMBEDDER, threads=1)
        return self.embedder

    def get(self, paths: list[Path], variant: str) -> np.ndarray:
        out: list[np.ndarray | None] = []
        todo = []
        tag = self.tag if variant == "white_refined" else ""
        for i, p in enumerate(paths):
            key = hashlib.sha1(p.read_bytes()).hexdigest()
            f = CACHE / "emb" / f"{variant}{tag}" / f"{key}.npy"
            if f.is_file():
                out.append(np.load(f))
            else:
                out.append(None)
                todo.append((i, p, f))
        for start in range(0, len(todo), 32):
            chunk = todo[start:start + 32]
            images = []
            for _, p, _ in chunk:
                rgb = load_rgb(p)
                a = cached_alpha(p)
                r = refine_alpha(rgb, a, RefineConfig(enabled=True)) if variant == "white_refined" else a
                images.append(VARIANTS[variant](rgb, a, r))
            vecs = self._emb().embed(images)
            for (i, _, f), v in zip(chunk, vecs):
                f.parent.mkdir(parents=True, exist_ok=True)
                np.save(f, v.astype(np.float32))
                out[i] = v
        return np.stack(out).astype(np.float32)


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


def collect(name: str, limit: int | None, emb: Embeddings, variants: list[str],
            clean_catalog: bool, cached_only: bool = False, catalog_limit: int | None = None) -> dict:
    q, c = load_set(name, limit, catalog_limit)
    if cached_only:
        q = [x for x in q if (CACHE / "u2netp" / f"{hashlib.sha1(x.path.read_bytes()).hexdigest()}.png").is_file()]
    qp, cp = [x.path for x in q], [x.path for x in c]
    ql, cl = [x.label for x in q], [x.label for x in c]
    cat = {"raw": emb.get(cp, "raw")}
    if clean_catalog:
        cat["white"] = emb.get(cp, "white")
    outcomes = {}
    for v in variants:
        vecs = emb.get(qp, v)
        for cv, cvecs in cat.items():
            outcomes[v if cv == "raw" else f"{v}|cat_{cv}"] = per_photo(vecs, cvecs, ql, cl)
    cfg = GateConfig()
    sigs = []
    for p in qp:
        a = cached_alpha(p)
        sigs.append(mask_signals(a, cfg))
    return {"name": name, "paths": qp, "outcomes": outcomes, "signals": sigs}


def gate_pass(sigs: list[dict], rules: dict) -> np.ndarray:
    ok = np.ones(len(sigs), bool)
    for key, limit in rules.items():
        sig, kind = key.rsplit("_", 1)
        vals = np.array([s[sig] for s in sigs], dtype=float)
        ok &= (vals <= limit) if kind == "max" else (vals >= limit)
    return ok


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


GRID = {
    "undecided_max": [0.05, 0.1, 0.15, 0.2, 0.3, 1.0],
    "border_touch_max": [0.02, 0.05, 0.1, 0.2, 0.3, 1.0],
    "fg_share_min": [0.0, 0.02, 0.05, 0.1],
    "fg_share_max": [0.4, 0.6, 0.8, 1.0],
    "objects_max": [1, 2, 3, 99],
}


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
    args = ap.parse_args(argv)
    emb = Embeddings(hashlib.md5(repr(RefineConfig(enabled=True)).encode()).hexdigest()[:8])
    variants = args.variants.split(",")
    limits: dict[str, int | None] = {}
    if args.limit and "=" in args.limit:
        limits = {k: int(v) for k, v in (part.split("=") for part in args.limit.split(","))}
    elif args.limit:
        limits = {s: int(args.limit) for s in (args.sets + "," + args.check_sets).split(",") if s}
    fitted = [collect(s, limits.get(s), emb, variants, args.clean_catalog, args.cached_only,
                      args.catalog_limit) for s in args.sets.split(",") if s]
    checked = [collect(s, limits.get(s), emb, variants, args.clean_catalog, args.cached_only,
                      args.catalog_limit)
               for s in args.check_sets.split(",") if s]
    report: dict = {"embedder": EMBEDDER, "safe": args.safe, "sets": {}}
    for data in fitted + checked:
        report["sets"][data["name"]] = {
            "variants": {v: {m: round(float(o[m].mean()), 4) for m in ("r1", "r5", "p10", "ap")}
                         for v, o in data["outcomes"].items()},
            "signals_auc": signal_table(data),
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
