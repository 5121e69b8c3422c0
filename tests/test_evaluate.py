"""search.datasets loaders, search.evaluate statistics, search.photo_cache and a real raw-vs-cleaned run."""
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from eval_helpers import assert_too_few_queries_for_a_verdict
from PIL import Image

from hygiene.config import CleanConfig
from search import datasets, metrics
from search.evaluate import (
    BASELINE,
    EvalConfig,
    _statistics,
    _variant_list,
    evaluate,
    rank_catalog,
    wilcoxon_p,
)
from search.photo_cache import clean_photos

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_images"
QUERY_STEMS = ("hat-2", "shoes-2")


def shared_cache(tmp_path_factory) -> Path:
    """One cleaned-image cache per test session, shared by the evaluation tests."""
    return tmp_path_factory.getbasetemp() / "shelfready-eval-cache"


# ---- datasets -------------------------------------------------------------------------


def test_from_stems_labels():
    items = datasets.from_stems(datasets.list_images(SAMPLES))
    by_sku = {it.sku: it.label for it in items}
    assert len(items) == 12
    assert by_sku["hat-2"] == "hat" and by_sku["hat"] == "hat" and by_sku["t-shirt"] == "t-shirt"


def test_from_folders_and_csv(tmp_path):
    for label, stem in (("hat", "hat"), ("hat", "hat-2"), ("shoes", "shoes")):
        (tmp_path / "imgs" / label).mkdir(parents=True, exist_ok=True)
        shutil.copy(SAMPLES / f"{stem}.jpg", tmp_path / "imgs" / label / f"{stem}.jpg")
    items = datasets.from_folders(tmp_path / "imgs")
    assert sorted((it.label, it.path.name) for it in items) == [
        ("hat", "hat-2.jpg"), ("hat", "hat.jpg"), ("shoes", "shoes.jpg")]
    shutil.copy(SAMPLES / "dress.jpg", tmp_path / "imgs" / "dress.jpg")
    with pytest.raises(ValueError, match="no label folder"):
        datasets.from_folders(tmp_path / "imgs")

    csv_path = tmp_path / "labels.csv"
    csv_path.write_text("path,label,sku\nimgs/hat/hat.jpg,cap,SKU-1\nimgs/shoes/shoes.jpg,boot,\n")
    rows = datasets.from_csv(csv_path)
    assert [(r.label, r.sku, r.path.is_file()) for r in rows] == [("cap", "SKU-1", True), ("boot", "shoes", True)]
    (tmp_path / "bad.csv").write_text("file,class\na.jpg,x\n")
    with pytest.raises(ValueError, match="'path' and 'label'"):
        datasets.from_csv(tmp_path / "bad.csv")


def test_subset_is_seeded_and_ordered():
    items = datasets.from_stems(datasets.list_images(SAMPLES))
    a, b = datasets.subset(items, 5, seed=3), datasets.subset(items, 5, seed=3)
    assert a == b and len(a) == 5
    assert [items.index(x) for x in a] == sorted(items.index(x) for x in a)
    assert datasets.subset(items, 50) == items
    with pytest.raises(ValueError):
        datasets.subset(items, 0)


@pytest.mark.devdata("grocery_store", "clothing_small")
def test_real_dataset_loaders(dev_data):
    q, c = datasets.grocery_store("val", root=dev_data)
    assert (len(q), len(c)) == (296, 81)
    assert {x.label for x in q} <= {x.label for x in c}
    assert all(x.path.is_file() for x in c)
    q_train, _ = datasets.grocery_store("train", root=dev_data, limit=400, seed=0)
    assert len(q_train) == 400 and q_train == datasets.grocery_store("train", root=dev_data, limit=400)[0]
    q, c = datasets.clothing_small(root=dev_data)
    assert (len(q), len(c)) == (341, 800)
    assert len({x.label for x in c}) == 10
    with pytest.raises(ValueError):
        datasets.grocery_store("test", root=dev_data)


# ---- ranking and statistics (no models) -------------------------------------------------


def test_rank_catalog_exact_with_stable_ties():
    q = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    c = np.array([[0.0, 1.0], [1.0, 0.0], [1.0, 0.0], [0.6, 0.8]], np.float32)
    order, scores = rank_catalog(q, c, 3)
    assert order.tolist() == [[1, 2, 3], [0, 3, 1]]
    np.testing.assert_allclose(scores[0], [1.0, 1.0, 0.6])


def _stats_for(base_first: np.ndarray, var_first: np.ndarray, depth: int = 20):
    """Per-variant data where each query has one relevant item at the given rank."""
    def rel_of(first):
        rel = np.zeros((first.size, depth), bool)
        rel[np.arange(first.size), first - 1] = True
        return rel

    per_variant = {v: (rel_of(f), metrics.per_query(rel_of(f), n_relevant=1))
                   for v, f in ((BASELINE, base_first), ("clean/raw", var_first))}
    labels = np.array(["a", "b"] * (base_first.size // 2), dtype=object)
    return _statistics(per_variant, [BASELINE, "clean/raw"], labels, EvalConfig(resamples=500))


@pytest.mark.parametrize("shift, verdict", [(-3, "gain"), (+3, "loss"), (0, "no significant change")])
def test_verdict_follows_paired_difference(shift, verdict):
    rng = np.random.default_rng(0)
    base = rng.integers(4, 15, size=60)
    var = np.clip(base + shift + rng.integers(-1, 2, size=60) * (shift != 0), 1, 20)
    if shift == 0:  # a few swaps both ways, no systematic change
        var = base.copy()
        var[:5] += 1
        var[5:10] -= 1
    stats = _stats_for(base, var)
    comp = stats["comparisons"]["clean/raw"]
    assert comp["verdict"] == verdict
    assert comp["improved"] + comp["worse"] + comp["same"] == 60
    m = stats["metrics"][BASELINE]["MRR"]
    assert m["low"] <= m["mean"] <= m["high"]
    assert set(stats["by_class"]["clean/raw"]) == {"a", "b"}
    assert len(stats["curves"][BASELINE]) == 20 and stats["curves"][BASELINE][-1] == 1.0


def test_small_noisy_difference_is_not_called_a_gain():
    base = np.array([1, 2, 3, 4, 5, 6])
    var = np.array([1, 1, 3, 5, 5, 5])  # one better, one worse, one better: n too small
    assert _stats_for(base, var)["comparisons"]["clean/raw"]["verdict"] == "no significant change"


def test_wilcoxon_all_tied_is_one():
    assert wilcoxon_p(np.ones(5), np.ones(5)) == 1.0
    assert wilcoxon_p(np.arange(1, 21) / 20, np.zeros(20)) < 0.001


def test_variant_validation():
    assert _variant_list(None, False) == ["raw/raw", "clean/raw"]
    assert _variant_list(None, True) == ["raw/raw", "clean/raw", "clean/clean"]
    assert _variant_list(["clean/clean"], False) == ["raw/raw", "clean/clean"]
    with pytest.raises(ValueError, match="unknown variant"):
        _variant_list(["clean/dirty"], False)
    with pytest.raises(ValueError):
        _variant_list(["raw/raw"], False)
    with pytest.raises(ValueError):
        EvalConfig(resamples=10)
    assert _variant_list(["fused/fused", "clean/fused"], False) == ["raw/raw", "fused/fused", "clean/fused"]


def test_fused_embedding_is_the_normalised_mean():
    from search.evaluate import fuse

    rng = np.random.default_rng(0)
    raw = rng.normal(size=(5, 8)).astype(np.float32)
    raw /= np.linalg.norm(raw, axis=1, keepdims=True)
    cleaned = rng.normal(size=(5, 8)).astype(np.float32)
    cleaned /= np.linalg.norm(cleaned, axis=1, keepdims=True)
    f = fuse(raw, cleaned)
    assert np.allclose(np.linalg.norm(f, axis=1), 1.0, atol=1e-6)
    # same direction as the sum, and equally similar to both parts
    assert np.allclose(f * np.linalg.norm(raw + cleaned, axis=1, keepdims=True), raw + cleaned, atol=1e-5)
    assert np.allclose((f * raw).sum(1), (f * cleaned).sum(1), atol=1e-5)
    assert np.allclose(fuse(raw, raw), raw, atol=1e-6)


# ---- cleaning cache and a real run (u2netp + EfficientNet-Lite0) ------------------------


@pytest.mark.slow
def test_clean_cache_reused_and_bad_file_reported(tmp_path, tmp_path_factory, monkeypatch):
    cache = shared_cache(tmp_path_factory)
    bad = tmp_path / "empty.jpg"
    bad.write_bytes(b"")
    photos = [SAMPLES / "hat-2.jpg", bad]
    from search.photo_cache import clean_key

    key = clean_key(CleanConfig())  # pinned: the hygiene source may change while tests run
    first = clean_photos(photos, CleanConfig(), cache, progress=False, key=key)
    assert first[0].status in ("cleaned", "needs_review") and first[0].image_path.is_file()
    with Image.open(first[0].image_path) as im:
        assert im.size[0] == im.size[1] and im.mode == "RGB"
        assert im.getpixel((0, 0)) == (255, 255, 255) or first[0].status == "needs_review"
    assert first[1].status == "failed" and first[1].error and first[1].image_path is None

    stamp = first[0].image_path.stat().st_mtime_ns
    again = clean_photos(photos, CleanConfig(), cache, progress=False, key=key)
    assert again[0].image_path == first[0].image_path and again[0].status == first[0].status
    assert again[0].image_path.stat().st_mtime_ns == stamp, "cleaned again despite the cache"
    # a failure is reported but not cached: the next run tries again
    assert again[1].status == "failed" and again[1].error == first[1].error
    manifest = (cache / "clean" / key / ".shelfready-manifest.jsonl").read_text()
    assert first[0].digest in manifest and "empty" not in manifest


@pytest.fixture(scope="module")
def embedder():
    from search import create_embedder

    return create_embedder("cnn:efficientnet_lite0")


@pytest.mark.slow
def test_evaluate_sample_photos(tmp_path, tmp_path_factory, embedder):
    items = datasets.from_stems(datasets.list_images(SAMPLES))
    queries = [it for it in items if it.sku in QUERY_STEMS]
    catalog = [it for it in items if it.sku not in QUERY_STEMS]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    queries += [datasets.LabelledImage(broken, "hat"),
                datasets.LabelledImage(SAMPLES / "dress.jpg", "no-such-label")]
    ev = evaluate(queries, catalog, embedder, config=EvalConfig(cache_dir=shared_cache(tmp_path_factory)),
                  progress=False)
    assert ev.variants == ["raw/raw", "clean/raw"] and ev.headline == "clean/raw"
    assert_too_few_queries_for_a_verdict(ev.to_json())  # two queries: the numbers cannot make a gain
    assert [Path(p["path"]).stem for p in ev.photos] == list(QUERY_STEMS)
    assert {Path(x["path"]).name for x in ev.excluded} == {"broken.jpg", "dress.jpg"}
    for p in ev.photos:
        assert 1 <= p["rank_raw_raw"] <= 10 and 1 <= p["rank_clean_raw"] <= 10
        assert p["rr_raw_raw"] == pytest.approx(1 / p["rank_raw_raw"])
        assert p["status"] in ("cleaned", "needs_review") and Path(p["cleaned_path"]).is_file()
    # MRR is the mean of the per-photo reciprocal ranks
    assert ev.metrics["raw/raw"]["MRR"]["mean"] == pytest.approx(np.mean([p["rr_raw_raw"] for p in ev.photos]))
    assert ev.settings["n_catalog"] == 10 and ev.settings["ranking_depth"] == 10
    # the same photo embedded twice in the catalog is found first, raw and cleaned
    same = evaluate([queries[0]], catalog + [datasets.LabelledImage(queries[0].path, "hat", "dup")], embedder,
                    config=EvalConfig(cache_dir=shared_cache(tmp_path_factory)), progress=False)
    assert same.photos[0]["rank_raw_raw"] == 1
    assert same.photos[0]["top1_score_raw_raw"] == pytest.approx(1.0, abs=1e-4)
    fused = evaluate([queries[0]], catalog + [datasets.LabelledImage(queries[0].path, "hat", "dup")], embedder,
                     variants=["fused/fused", "fused/raw"],
                     config=EvalConfig(cache_dir=shared_cache(tmp_path_factory)), progress=False)
    assert fused.photos[0]["rank_fused_fused"] == 1  # its own fused vector is in the catalog
    assert fused.photos[0]["top1_score_fused_fused"] == pytest.approx(1.0, abs=1e-4)
    assert fused.photos[0]["top1_score_fused_raw"] < 1.0  # raw vs fused differ unless cleaning did nothing
    from search.report import render_html

    page = render_html(fused, "fused")  # every variant has its words in the report
    assert "fused (raw + cleaned) photos vs fused (raw + cleaned) catalog" in page


def test_evaluate_module_is_not_shadowed_by_its_function():
    import search
    import search.evaluate as m

    assert m is sys.modules["search.evaluate"] and search.evaluate is m
    assert m.evaluate is evaluate and callable(m.evaluate)
    assert search.EvalConfig is EvalConfig


class _CountingEmbedder:
    """Mean colour as a 3-d vector: enough to test the embedding cache plumbing."""

    def __init__(self, preprocess: str):
        self.name, self.dim, self.preprocess, self.calls = "test:meancolour", 3, preprocess, 0

    def embed(self, images):
        self.calls += len(images)
        v = np.array([np.asarray(im.convert("RGB"), np.float32).mean(axis=(0, 1)) for im in images])
        return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def test_embedding_cache_keyed_by_preprocessing(tmp_path):
    from search.photo_cache import embed_prepared, raw_photos

    photos = raw_photos([SAMPLES / "hat.jpg", SAMPLES / "dress.jpg"])
    a = _CountingEmbedder("Resize(224)")
    first = embed_prepared(photos, a, tmp_path, "raw", progress=False)
    again = embed_prepared(photos, a, tmp_path, "raw", progress=False)
    assert a.calls == 2 and np.array_equal(first, again)  # second pass read the cache
    b = _CountingEmbedder("CenterCrop(224)")  # same name, other transform: not reused
    embed_prepared(photos, b, tmp_path, "raw", progress=False)
    assert b.calls == 2
