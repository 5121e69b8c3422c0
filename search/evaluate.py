"""Does the cleanup help visual search? The same runner over raw and cleaned photos.

``evaluate(queries, catalog, embedder)`` embeds the query photos raw and cleaned
(``hygiene.clean``), optionally the catalog cleaned too, ranks the whole
catalog for every query by exact inner product (cosine; no approximate index,
so index errors cannot blur the effect), and scores each variant with
``search.metrics``. The same embedder and preprocessing serve every variant, so
the only difference is the cleanup.

Variants are named ``query/catalog``: ``raw/raw`` is the baseline, ``clean/raw``
cleaned queries against the catalog as given, ``clean/clean`` both cleaned,
``raw/clean`` raw queries against a cleaned catalog.

Statistics (all seeded): 95 % percentile bootstrap CIs of each metric's mean;
for each variant against ``raw/raw`` a paired bootstrap of the difference
(the same resampled photos for both) and a Wilcoxon signed-rank test on the
per-photo reciprocal ranks. Verdict: "gain" / "loss" when the MRR difference's
CI excludes 0 AND Wilcoxon p < alpha, in the same direction; otherwise
"no significant change".

Cleaned images are cached on disk (lossless WebP + a JSON sidecar) keyed by
the photo's SHA-256, the CleanConfig fingerprint and a hash of the hygiene
source code, so a re-run or a second bench reuses them; embeddings are cached
beside them keyed by the image key and the embedder name. Photos that cannot be
read or cleaned are left out of every variant and listed.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from hygiene.config import CleanConfig

from . import metrics
from .datasets import LabelledImage

BASELINE = "raw/raw"
VARIANTS = ("raw/raw", "clean/raw", "raw/clean", "clean/clean")


def default_cache_dir() -> Path:
    base = os.environ.get("SHELFREADY_CACHE") or os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / ("" if os.environ.get("SHELFREADY_CACHE") else "shelfready")


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
    workers: int = 1  # cleaning processes
    batch_size: int = 32  # images per embedder call
    cache_dir: Path | None = None  # None = default_cache_dir()
    cache_key: str | None = None  # pin cleaned images to this cache key (default: clean_key(config))

    def __post_init__(self) -> None:
        if self.resamples < 100:
            raise ValueError(f"resamples must be >= 100, got {self.resamples}")
        if not 0.5 < self.confidence < 1:
            raise ValueError(f"confidence must be in (0.5, 1), got {self.confidence}")
        if self.max_rank < 1 or self.workers < 1 or self.batch_size < 1:
            raise ValueError("max_rank, workers and batch_size must be >= 1")


# --------------------------------------------------------------------------- cleaning cache


def hygiene_code_hash() -> str:
    """Hash of the hygiene package's source (but the batch runner, which clean() does not
    use): a code change invalidates cached cleanups."""
    import hygiene

    h = hashlib.sha256()
    for path in sorted(Path(hygiene.__file__).parent.glob("*.py")):
        if path.name == "batch.py":
            continue
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:12]


def clean_key(config: CleanConfig) -> str:
    text = config.fingerprint() + hygiene_code_hash()
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class Prepared:
    """One photo after loading (and cleaning): where its pixels are and what happened."""

    source: Path
    digest: str = ""
    image_path: Path | None = None  # file to embed: the original, or the cached cleaned image
    status: str = "raw"  # raw | cleaned | needs_review | failed
    reasons: list[str] = field(default_factory=list)
    model: str = ""
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status != "failed"


def _cache_paths(cache_dir: Path, key: str, digest: str) -> tuple[Path, Path]:
    folder = cache_dir / "clean" / key / digest[:2]
    return folder / f"{digest}.webp", folder / f"{digest}.json"


def _clean_one(path: Path, digest: str, config: CleanConfig, cache_dir: Path, key: str) -> dict:
    """Clean one photo into the cache; never raises (the error becomes the record)."""
    from hygiene import clean
    from hygiene.io import load_image, write_bytes_atomic, write_text_atomic

    img_path, meta_path = _cache_paths(cache_dir, key, digest)
    try:
        result = clean(load_image(path), config)
        import io

        buf = io.BytesIO()
        result.image.save(buf, "WEBP", lossless=True, quality=0, method=0)
        write_bytes_atomic(img_path, buf.getvalue())
        record = {"status": result.status, "reasons": result.reasons, "model": result.model,
                  "timings": result.timings, "error": ""}
    except Exception as exc:  # noqa: BLE001 - one bad photo must not stop the evaluation
        msg = str(exc).splitlines()[0] if str(exc) else ""
        # not cached: a failure may be transient (out of memory, model file missing), so retry next run
        return {"status": "failed", "reasons": [], "model": "", "error": f"{type(exc).__name__}: {msg}"}
    write_text_atomic(meta_path, json.dumps(record))
    return record


def _write_cache_info(cache_dir: Path, key: str, config: CleanConfig) -> None:
    info = cache_dir / "clean" / key / "info.json"
    if info.is_file():
        return
    import subprocess
    import time

    import hygiene

    try:
        commit = subprocess.run(["git", "-C", str(Path(hygiene.__file__).parent), "rev-parse", "HEAD"],
                                capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    info.parent.mkdir(parents=True, exist_ok=True)
    info.write_text(json.dumps({"clean_config": json.loads(config.fingerprint()), "git_commit": commit,
                                "hygiene_code": hygiene_code_hash(),
                                "created": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}, indent=2))


def cache_info(cache_dir: Path, key: str) -> dict:
    info = Path(cache_dir) / "clean" / key / "info.json"
    return json.loads(info.read_text()) if info.is_file() else {}


def _init_worker() -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def clean_photos(paths: Sequence[Path], config: CleanConfig, cache_dir: Path, workers: int = 1,
                 progress: bool = True, key: str | None = None) -> list[Prepared]:
    """Clean every photo once (cached); returns where each cleaned image is.

    ``key`` pins an existing cache folder (default: ``clean_key(config)``).
    """
    from tqdm import tqdm

    key = key or clean_key(config)
    _write_cache_info(cache_dir, key, config)
    out: list[Prepared] = []
    todo = []
    for path in paths:
        try:
            digest = file_sha256(path)
        except OSError as exc:
            out.append(Prepared(Path(path), status="failed", error=f"cannot read: {exc.strerror}"))
            continue
        out.append(Prepared(Path(path), digest))
        if not _cache_paths(cache_dir, key, digest)[1].is_file():
            todo.append(len(out) - 1)
    bar = tqdm(total=len(todo), unit="photo", desc="cleaning", disable=not progress or not todo)
    args = [(out[i].source, out[i].digest, config, cache_dir, key) for i in todo]
    fresh: dict[int, dict] = {}
    if workers <= 1 or len(todo) <= 1:
        for i, a in zip(todo, args):
            fresh[i] = _clean_one(*a)
            bar.update(1)
    else:
        import multiprocessing as mp

        with ProcessPoolExecutor(min(workers, len(todo)), mp_context=mp.get_context("spawn"),
                                 initializer=_init_worker) as pool:
            for i, rec in zip(todo, pool.map(_clean_one, *zip(*args))):
                fresh[i] = rec
                bar.update(1)
    bar.close()
    for i, p in enumerate(out):
        if not p.digest:
            continue
        img_path, meta_path = _cache_paths(cache_dir, key, p.digest)
        rec = fresh[i] if i in fresh else json.loads(meta_path.read_text())
        p.status, p.reasons, p.model, p.error = rec["status"], rec["reasons"], rec["model"], rec["error"]
        p.image_path = img_path if p.ok else None
    return out


def raw_photos(paths: Sequence[Path]) -> list[Prepared]:
    out = []
    for path in paths:
        try:
            out.append(Prepared(Path(path), file_sha256(path), Path(path)))
        except OSError as exc:
            out.append(Prepared(Path(path), status="failed", error=f"cannot read: {exc.strerror}"))
    return out


# --------------------------------------------------------------------------- embedding


def embed_prepared(photos: Sequence[Prepared], embedder, cache_dir: Path | None, tag: str,
                   batch_size: int = 32, progress: bool = True) -> np.ndarray:
    """(n, d) float32 vectors of the usable photos (failed ones get a zero row and are marked)."""
    from tqdm import tqdm

    from hygiene.io import load_image

    # the preprocessing's repr (sizes, crop, normalisation) is part of the key: same name, new transform
    preprocess = repr(getattr(embedder, "preprocess", ""))
    name_key = hashlib.sha256(f"{embedder.name}|{preprocess}|{tag}".encode()).hexdigest()[:16]
    vecs = np.zeros((len(photos), embedder.dim), dtype=np.float32)

    def cache_file(p: Prepared) -> Path | None:
        return cache_dir / "emb" / name_key / f"{p.digest}.npy" if cache_dir and p.digest else None

    todo = []
    for i, p in enumerate(photos):
        f = cache_file(p)
        if p.ok and f is not None and f.is_file():
            vecs[i] = np.load(f)
        elif p.ok:
            todo.append(i)
    bar = tqdm(total=len(todo), unit="photo", desc=f"embedding {tag}", disable=not progress or not todo)
    for start in range(0, len(todo), batch_size):
        chunk, images = [], []
        for i in todo[start:start + batch_size]:
            try:
                images.append(load_image(photos[i].image_path))
                chunk.append(i)
            except ValueError as exc:
                photos[i].status, photos[i].error = "failed", str(exc)
        if images:
            out = np.asarray(embedder.embed(images), dtype=np.float32)
            for i, v in zip(chunk, out):
                vecs[i] = v
                f = cache_file(photos[i])
                if f is not None:
                    f.parent.mkdir(parents=True, exist_ok=True)
                    np.save(f, v)
        bar.update(len(todo[start:start + batch_size]))
    bar.close()
    return vecs


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

    def to_json(self) -> dict:
        return asdict(self)


def _variant_list(variants, clean_catalog: bool) -> list[str]:
    if variants is None:
        variants = [BASELINE, "clean/raw"] + (["clean/clean"] if clean_catalog else [])
    variants = list(dict.fromkeys(variants))
    bad = [v for v in variants if v not in VARIANTS]
    if bad:
        raise ValueError(f"unknown variant(s) {bad}; choose from {', '.join(VARIANTS)}")
    if BASELINE not in variants:
        variants.insert(0, BASELINE)
    if len(variants) < 2:
        raise ValueError("need at least one variant besides the raw/raw baseline")
    return variants


def evaluate(queries: Sequence[LabelledImage], catalog: Sequence[LabelledImage], embedder,
             clean_config: CleanConfig = CleanConfig(), variants: Sequence[str] | None = None,
             clean_catalog: bool = False, config: EvalConfig = EvalConfig(),
             progress: bool = True) -> Evaluation:
    """Score raw vs cleaned query photos (and catalog) against the same catalog; see module doc."""
    if not queries or not catalog:
        raise ValueError("need at least one query photo and one catalog item")
    if isinstance(embedder, str):
        from .embedders import create_embedder

        embedder = create_embedder(embedder, batch_size=config.batch_size)
    variants = _variant_list(variants, clean_catalog)
    cache = Path(config.cache_dir) if config.cache_dir else default_cache_dir()
    q_modes = {v.split("/")[0] for v in variants}
    c_modes = {v.split("/")[1] for v in variants}

    prep = {("q", "raw"): raw_photos([q.path for q in queries]),
            ("c", "raw"): raw_photos([c.path for c in catalog])}
    ckey = config.cache_key or clean_key(clean_config)
    if "clean" in q_modes:
        prep[("q", "clean")] = clean_photos([q.path for q in queries], clean_config, cache,
                                            config.workers, progress, ckey)
    if "clean" in c_modes:
        prep[("c", "clean")] = clean_photos([c.path for c in catalog], clean_config, cache,
                                            config.workers, progress, ckey)
    vecs = {}
    for (side, mode), photos in prep.items():
        if (side == "q" and mode not in q_modes) or (side == "c" and mode not in c_modes):
            continue
        tag = "raw" if mode == "raw" else f"clean-{ckey}"
        vecs[(side, mode)] = embed_prepared(photos, embedder, cache, tag, config.batch_size, progress)

    # a photo is used only if every variant can use it
    q_ok = np.array([all(prep[("q", m)][i].ok for m in q_modes) for i in range(len(queries))])
    c_ok = np.array([all(prep[("c", m)][i].ok for m in c_modes) for i in range(len(catalog))])
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
        order, scores = rank_catalog(vecs[("q", qm)][q_idx], vecs[("c", cm)][c_idx], depth)
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
                 "status": cat_clean[j].status if cat_clean else "raw", "used": bool(c_ok[j])}
                for j, c in enumerate(catalog)]
    headline = "clean/clean" if "clean/clean" in variants else variants[1]
    settings = {"embedder": embedder.name, "clean_config": json.loads(clean_config.fingerprint()),
                "clean_key": ckey, "hygiene_code": hygiene_code_hash(),
                "cleaned_with": cache_info(cache, ckey), "eval_config": {
                    k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()},
                "n_queries": int(q_idx.size), "n_catalog": int(c_idx.size), "ranking_depth": depth,
                "ranking": "exact inner product over the whole catalog" if depth == len(c_idx)
                else f"exact inner product, top {depth} (AP truncated)"}
    return Evaluation(variants=variants, baseline=BASELINE, headline=headline,
                      verdict=stats["comparisons"][headline]["verdict"], metrics=stats["metrics"],
                      comparisons=stats["comparisons"], by_class=stats["by_class"],
                      curves=stats["curves"], photos=photos, catalog=cat_rows, excluded=excluded,
                      settings=settings)


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
