"""How well does `shelfready dedup` find copies, side by side with imagededup's hashes?

    nice -n 19 python -m bench.dedup [--data ../shared/data] [--per-class 4] [--seed 0] [--out out/bench/dedup]

Two sets:

1. imagededup's own test photos (``imagededup_testdata/mixed_images`` and the groups its tests
   expect, ``expected_duplicates_mixed_images.json``; its corrupt file must be skipped).
2. A seeded generated set: ``--per-class`` originals of each clothing_small class (train split),
   each with six copies: resize 0.3-0.8, JPEG quality 40-80, crop 5-15 % of each side's length,
   mirror, rotation 1-5 degrees (white corners), brightness and contrast 10-20 % up or down. The
   other originals of the same class are the hard negatives.

Methods: shelfready's near-exact rule (search/dedup.py, DedupConfig's distances; exact copies
count too) and its full run (all kinds, groups closed transitively, what the CLI reports), against
imagededup's PHash, DHash, WHash and AHash at its default max_distance_threshold 10. Figures per
pair: precision, recall, F1 (over all pairs of photos), and imagededup's MAP; on the generated set,
recall per transform on the (original, copy) pairs. Then the sweeps that set DedupConfig's
thresholds: pHash x dHash distances (near-exact) and the embedding cosine (same-product).
"""
from __future__ import annotations

import argparse
import json
import logging
import random
import shutil
import sys
import tempfile
import time
from itertools import combinations
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from bench._common import cpu_name, git_commit
from search.config import DEFAULT_DEDUP
from search.dedup import find_duplicates, hamming, hash_bits

TRANSFORMS = ("resize", "jpeg", "crop", "mirror", "rotate", "brightness")
ANCHORS = ("PHash", "DHash", "WHash", "AHash")


# --------------------------------------------------------------------------- the generated set


def transform(im: Image.Image, kind: str, rng: random.Random) -> tuple[Image.Image, int, str]:
    """(copy, JPEG quality to save it with, what was done)."""
    w, h = im.size
    if kind == "resize":
        f = rng.uniform(0.3, 0.8)
        return im.resize((max(8, round(w * f)), max(8, round(h * f))), Image.Resampling.LANCZOS), 90, f"x{f:.2f}"
    if kind == "jpeg":
        q = rng.randint(40, 80)
        return im, q, f"q{q}"
    if kind == "crop":
        cx, cy = rng.uniform(0.05, 0.15), rng.uniform(0.05, 0.15)
        lx, ty = rng.uniform(0, cx), rng.uniform(0, cy)
        box = (round(lx * w), round(ty * h), round(w - (cx - lx) * w), round(h - (cy - ty) * h))
        return im.crop(box), 90, f"{cx:.2f}x{cy:.2f}"
    if kind == "mirror":
        return ImageOps.mirror(im), 90, "mirror"
    if kind == "rotate":
        a = rng.choice((-1, 1)) * rng.uniform(1, 5)
        return im.rotate(a, resample=Image.Resampling.BICUBIC, fillcolor=(255, 255, 255)), 90, f"{a:+.1f} deg"
    if kind == "brightness":
        b = 1 + rng.choice((-1, 1)) * rng.uniform(0.1, 0.2)
        c = 1 + rng.choice((-1, 1)) * rng.uniform(0.1, 0.2)
        return ImageEnhance.Contrast(ImageEnhance.Brightness(im).enhance(b)).enhance(c), 90, f"b{b:.2f} c{c:.2f}"
    raise ValueError(kind)


def generated_set(data: Path, per_class: int, seed: int, folder: Path) -> list[dict]:
    """Write the originals and their copies into folder; one row per photo (name, family, class, transform)."""
    rng = random.Random(seed)
    rows = []
    for cls_dir in sorted(p for p in (data / "clothing_small" / "train").iterdir() if p.is_dir()):
        photos = sorted(cls_dir.glob("*.jpg"))
        for src in rng.sample(photos, min(per_class, len(photos))):
            family = f"{cls_dir.name}-{src.stem[:8]}"
            shutil.copy(src, folder / f"{family}.jpg")
            rows.append({"name": f"{family}.jpg", "family": family, "cls": cls_dir.name, "transform": "original"})
            im = Image.open(src).convert("RGB")
            for kind in TRANSFORMS:
                copy, quality, what = transform(im, kind, rng)
                name = f"{family}_{kind}.jpg"
                copy.save(folder / name, quality=quality)
                rows.append({"name": name, "family": family, "cls": cls_dir.name, "transform": kind, "what": what})
    return rows


# --------------------------------------------------------------------------- metrics


def pairs_of_groups(groups: list[list[str]]) -> set[frozenset]:
    return {frozenset(p) for g in groups for p in combinations(sorted(set(g)), 2)}


def pairs_of_map(dup_map: dict[str, list]) -> set[frozenset]:
    return {frozenset((a, b if isinstance(b, str) else b[0])) for a, bs in dup_map.items() for b in bs}


def prf(found: set, truth: set) -> dict:
    tp = len(found & truth)
    p = tp / len(found) if found else 1.0
    r = tp / len(truth) if truth else 1.0
    return {"precision": round(p, 4), "recall": round(r, 4), "f1": round(2 * p * r / (p + r) if p + r else 0.0, 4),
            "pairs_found": len(found), "false_pairs": len(found - truth)}


def as_map(names: list[str], pairs: set[frozenset]) -> dict[str, list[str]]:
    out = {n: [] for n in names}
    for p in pairs:
        a, b = sorted(p)
        out[a].append(b)
        out[b].append(a)
    return out


def imagededup_map(method: str, folder: Path, truth_map: dict) -> tuple[set, float]:
    """imagededup's pairs at its default threshold, and its MAP against truth_map."""
    import imagededup.methods as m
    from imagededup.evaluation import evaluate

    hasher = getattr(m, method)(verbose=False)
    dups = hasher.find_duplicates(image_dir=folder, max_distance_threshold=10, num_enc_workers=1,
                                  num_dist_workers=1)
    dups = {k: v for k, v in dups.items() if k in truth_map}
    return pairs_of_map(dups), round(evaluate(truth_map, {k: dups.get(k, []) for k in truth_map}, "map")["map"], 4)


def shelfready_run(folder: Path, names: list[str], kinds: tuple[str, ...], embedder=None):
    import dataclasses

    cfg = dataclasses.replace(DEFAULT_DEDUP, kinds=kinds)
    res = find_duplicates([folder / n for n in names], cfg, names=names, embedder=embedder)
    groups = [[res.photos[i].path for i in g.members] for g in res.groups]
    direct = {frozenset((res.photos[p.a].path, res.photos[p.b].path)) for g in res.groups for p in g.pairs}
    return res, pairs_of_groups(groups), direct


def map_score(truth_map: dict, pairs: set) -> float:
    from imagededup.evaluation import evaluate

    found = as_map(list(truth_map), {p for p in pairs if p <= set(truth_map)})
    return round(evaluate(truth_map, found, "map")["map"], 4)


# --------------------------------------------------------------------------- the two sets


def imagededup_testdata(data: Path) -> dict:
    base = data / "imagededup_testdata"
    expected = json.loads((base / "expected_duplicates_mixed_images.json").read_text())
    truth_map = {k: v for k, v in expected.items() if not k.startswith("_")}
    truth = pairs_of_map(truth_map)
    folder = base / "mixed_images"
    names = sorted(p.name for p in folder.iterdir())
    rows = {}
    res, closed, _ = shelfready_run(folder, names, ("exact", "near-exact"))
    rows["shelfready near-exact"] = prf(closed, truth) | {"map": map_score(truth_map, closed),
                                                          "unreadable": [p for p, _ in res.errors]}
    _, closed, _ = shelfready_run(folder, names, ("exact", "near-exact", "same-product"))
    rows["shelfready all kinds"] = prf(closed, truth) | {"map": map_score(truth_map, closed)}
    for method in ANCHORS:
        found, mean_ap = imagededup_map(method, folder, truth_map)
        rows[f"imagededup {method}"] = prf(found, truth) | {"map": mean_ap}
    return rows


class Recording:
    """An embedder that keeps what it returned (the sweeps reuse the vectors of the full run)."""

    def __init__(self, inner) -> None:
        self.inner, self.batch_size, self.vectors = inner, getattr(inner, "batch_size", 16), []

    def embed(self, images):
        v = self.inner.embed(images)
        self.vectors.append(v)
        return v


def sweep_near_exact(hashes: np.ndarray, same: np.ndarray, offdiag: np.ndarray) -> list[dict]:
    """Precision and recall of every (pHash, dHash) distance pair on all pairs of photos."""
    dp = [hamming(hashes[:, c], hashes[:, 0]) for c in (0, 1)]
    dd = [hamming(hashes[:, c], hashes[:, 2]) for c in (2, 3)]
    out = []
    truth = same & offdiag
    for tp in range(0, 25, 2):
        for td in range(0, 25, 2):
            hit = (((dp[0] <= tp) & (dd[0] <= td)) | ((dp[1] <= tp) & (dd[1] <= td))) & offdiag
            hit = hit | hit.T
            t = int((hit & truth).sum()) // 2
            f = int((hit & ~truth).sum()) // 2
            n_true = int(truth.sum()) // 2
            out.append({"phash_max": tp, "dhash_max": td, "precision": round(t / (t + f), 4) if t + f else 1.0,
                        "recall": round(t / n_true, 4), "false_pairs": f})
    return out


def generated(data: Path, per_class: int, seed: int) -> dict:
    from search.embedders import create_embedder

    with tempfile.TemporaryDirectory(prefix="dedup-bench-") as tmp:
        folder = Path(tmp)
        rows = generated_set(data, per_class, seed, folder)
        names = [r["name"] for r in rows]
        fam = {r["name"]: r["family"] for r in rows}
        truth = {frozenset(p) for p in combinations(names, 2) if fam[p[0]] == fam[p[1]]}
        truth_map = as_map(names, truth)
        copies = {r["transform"]: [] for r in rows if r["transform"] != "original"}
        for r in rows:
            if r["transform"] != "original":
                copies[r["transform"]].append(frozenset((f"{r['family']}.jpg", r["name"])))

        def per_transform(found: set) -> dict:
            return {t: round(sum(p in found for p in ps) / len(ps), 4) for t, ps in copies.items()}

        out = {"photos": len(names), "originals": len(names) // (len(TRANSFORMS) + 1), "methods": {}}
        t0 = time.perf_counter()
        _, closed, direct = shelfready_run(folder, names, ("exact", "near-exact"))
        out["methods"]["shelfready near-exact"] = (prf(closed, truth) | {"map": map_score(truth_map, closed)}
                                                   | {"per_transform": per_transform(direct),
                                                      "seconds": round(time.perf_counter() - t0, 1)})
        rec = Recording(create_embedder(DEFAULT_DEDUP.embedder))
        t0 = time.perf_counter()
        res, closed, direct = shelfready_run(folder, names, ("exact", "near-exact", "same-product"), rec)
        out["methods"]["shelfready all kinds"] = (prf(closed, truth) | {"map": map_score(truth_map, closed)}
                                                  | {"per_transform": per_transform(direct),
                                                     "seconds": round(time.perf_counter() - t0, 1)})
        for method in ANCHORS:
            found, mean_ap = imagededup_map(method, folder, truth_map)
            out["methods"][f"imagededup {method}"] = prf(found, truth) | {"map": mean_ap,
                                                                          "per_transform": per_transform(found)}
        # the sweeps, over the photos in the order the run read them
        order = [p.path for p in res.photos]
        fam_ids = np.array([fam[n] for n in order])
        same = fam_ids[:, None] == fam_ids[None, :]
        offdiag = ~np.eye(len(order), dtype=bool)
        hashes = np.stack([hash_bits(Image.open(folder / n).convert("RGB"), DEFAULT_DEDUP.hash_size) for n in order])
        out["near_exact_sweep"] = sweep_near_exact(hashes, same, offdiag)
        vec = np.concatenate(rec.vectors)
        cos = vec @ vec.T
        cls = np.array([n.split("-")[0] for n in order])
        same_cls = (cls[:, None] == cls[None, :]) & ~same
        idx = {n: i for i, n in enumerate(order)}
        sweep = []
        for thr in np.arange(0.80, 0.991, 0.01):
            hit = (cos >= thr) & offdiag
            t, f = int((hit & same).sum()) // 2, int((hit & ~same).sum()) // 2
            sweep.append({"cosine_min": round(float(thr), 2), "precision": round(t / (t + f), 4) if t + f else 1.0,
                          "recall": round(t / (int((same & offdiag).sum()) // 2), 4), "false_pairs": f,
                          "false_same_class": int((hit & same_cls).sum()) // 2,
                          "per_transform": {k: round(sum(bool(cos[idx[min(p)], idx[max(p)]] >= thr) for p in ps) / len(ps), 4)
                                            for k, ps in copies.items()}})
        out["same_product_sweep"] = sweep
        neg = cos[~same]
        out["same_product_negatives"] = {"max_cosine": round(float(neg.max()), 4),
                                         "max_cosine_same_class": round(float(cos[same_cls].max()), 4),
                                         "p99_cosine": round(float(np.quantile(neg, 0.99)), 4)}
        return out


def quiet_imagededup() -> None:
    """imagededup logs every step at INFO through handlers of its own: errors only."""
    import imagededup.evaluation  # noqa: F401 - these create their loggers
    import imagededup.methods  # noqa: F401

    for name in list(logging.root.manager.loggerDict):
        if name.startswith("imagededup") or name == "imagededup.utils.logger":
            logging.getLogger(name).setLevel(logging.ERROR)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "data")
    p.add_argument("--per-class", type=int, default=4, help="originals per clothing class (10 classes)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "out" / "bench" / "dedup")
    args = p.parse_args(argv)
    quiet_imagededup()
    report = {"cpu": cpu_name(), "commit": git_commit(), "command": " ".join(["python -m bench.dedup", *sys.argv[1:]]),
              "config": {k: v for k, v in vars(DEFAULT_DEDUP).items()},
              "imagededup_testdata": imagededup_testdata(args.data),
              "generated": generated(args.data, args.per_class, args.seed)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "dedup.json").write_text(json.dumps(report, indent=2, default=str))
    print(f"CPU: {report['cpu']}; commit {report['commit']}")
    for set_name, methods in (("imagededup test photos", report["imagededup_testdata"]),
                              ("generated", report["generated"]["methods"])):
        print(f"\n{set_name}:")
        for name, m in methods.items():
            extra = " ".join(f"{k} {v:.2f}" for k, v in m.get("per_transform", {}).items())
            print(f"  {name:24s} P {m['precision']:.3f} R {m['recall']:.3f} F1 {m['f1']:.3f} MAP {m['map']:.3f} "
                  f"false pairs {m['false_pairs']}  {extra}")
    g = report["generated"]
    ok = [r for r in g["near_exact_sweep"] if r["precision"] >= 0.99]
    best = max(ok, key=lambda r: (r["recall"], -r["phash_max"] - r["dhash_max"])) if ok else None
    print(f"\nnear-exact sweep, best recall at precision >= 0.99: {best}")
    print("same-product sweep (cosine: precision recall false-same-class per-transform):")
    for r in g["same_product_sweep"]:
        print(f"  {r['cosine_min']:.2f}: P {r['precision']:.3f} R {r['recall']:.3f} same-class FP "
              f"{r['false_same_class']}  {r['per_transform']}")
    print(f"negatives: {g['same_product_negatives']}\n{args.out / 'dedup.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
