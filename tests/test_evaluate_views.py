"""Embedding views in the evaluation: masks cached with the cleaned photos, views as variants in one run."""
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hygiene.config import CleanConfig
from search import datasets
from search.config import ViewConfig
from search.evaluate import EvalConfig, _variant_list, evaluate, split_mode
from search.photo_cache import clean_key, clean_photos, embed_prepared
from search.views import load_view, parse_view

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_images"


class MeanColour:
    """Mean colour as a 3-d vector: cheap, and it sees the background a view puts around the product."""

    name, dim, preprocess = "test:meancolour", 3, "mean"

    def __init__(self):
        self.calls = 0

    def embed(self, images):
        self.calls += len(images)
        v = np.array([np.asarray(im.convert("RGB"), np.float32).mean(axis=(0, 1)) + 1 for im in images])
        return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def test_view_modes_parse():
    assert split_mode("clean") == ("clean", None)
    assert split_mode("fused:blur@0.95") == ("fused", "blur@0.95")
    for bad in ("raw:grey", "clean:", "dirty", "dirty:grey"):
        with pytest.raises(ValueError, match="unknown mode"):
            split_mode(bad)
    assert _variant_list(["clean:grey/clean:grey", "fused:blur/raw"], False) == [
        "raw/raw", "clean:grey/clean:grey", "fused:blur/raw"]
    with pytest.raises(ValueError, match="unknown variant"):
        _variant_list(["clean"], False)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("views-cache")


@pytest.mark.slow
def test_masks_cached_and_redone_when_missing(cache):
    photos = [SAMPLES / "dress.jpg", SAMPLES / "hat-2.jpg"]
    key = clean_key(CleanConfig())
    first = clean_photos(photos, CleanConfig(), cache, progress=False, key=key)
    for p, src in zip(first, photos):
        assert p.ok and p.mask_path.is_file()
        with Image.open(p.mask_path) as m, Image.open(src) as im:
            assert m.mode == "L" and m.size == im.size  # the mask of the original photo
    stamp = first[0].image_path.stat().st_mtime_ns
    first[1].mask_path.unlink()  # a cache entry without its mask is not finished: cleaned again
    again = clean_photos(photos, CleanConfig(), cache, progress=False, key=key)
    assert again[1].mask_path.is_file()
    assert again[0].image_path.stat().st_mtime_ns == stamp  # the complete one was reused


@pytest.mark.slow
def test_views_compare_in_one_run(cache):
    items = datasets.from_stems(datasets.list_images(SAMPLES))
    queries = [it for it in items if it.sku in ("hat-2", "shoes-2", "dress")]
    catalog = [it for it in items if it.sku not in ("hat-2", "shoes-2", "dress")] + [
        datasets.LabelledImage(SAMPLES / "dress.jpg", "dress", "dress-copy")]
    emb = MeanColour()
    cfg = EvalConfig(cache_dir=cache, resamples=100)
    variants = ["clean/clean", "clean:grey/clean:grey", "clean:blur@0.95/clean:blur@0.95", "fused:grey/fused:grey"]
    ev = evaluate(queries, catalog, emb, variants=variants, config=cfg, progress=False)
    assert ev.variants == ["raw/raw", *variants] and ev.headline == "clean/clean"
    assert set(ev.settings["views"]) == {"clean", "clean:grey", "clean:blur@0.95"}
    assert ev.settings["views"]["clean:blur@0.95"]["fill"] == 0.95
    dress = next(p for p in ev.photos if Path(p["path"]).stem == "dress")
    assert dress["status"] == "cleaned"
    # its own copy is in the catalog, seen the same way: found first with score 1 in every view
    for v in variants:
        slug = v.replace("/", "_")
        assert dress[f"rank_{slug}"] == 1 and dress[f"top1_score_{slug}"] == pytest.approx(1.0, abs=1e-5)
    for v in variants:
        assert v in ev.comparisons and "MRR" in ev.comparisons[v]["diff"]
    from search.report import render_html

    assert "cleaned (grey view) photos vs cleaned (grey view) catalog" in render_html(ev, "views")
    # a second run embeds nothing: every view's vectors are cached under their own tag
    calls = emb.calls
    evaluate(queries, catalog, emb, variants=variants, config=cfg, progress=False)
    assert emb.calls == calls

    # the --view default turns plain "clean" into that view: the same numbers as clean:grey
    grey = evaluate(queries, catalog, emb, variants=["clean/clean"], progress=False,
                    config=EvalConfig(cache_dir=cache, resamples=100, view=ViewConfig(background="grey")))
    assert grey.metrics["clean/clean"]["MRR"]["mean"] == ev.metrics["clean:grey/clean:grey"]["MRR"]["mean"]
    assert [p["rank_clean_clean"] for p in grey.photos] == [p["rank_clean:grey_clean:grey"] for p in ev.photos]


@pytest.mark.slow
def test_view_vectors_differ_only_for_trusted_cutouts(cache):
    photos = clean_photos([SAMPLES / "dress.jpg", SAMPLES / "hat-2.jpg"], CleanConfig(), cache, progress=False)
    emb = MeanColour()
    vecs = {}
    for spec in ("white", "grey", "blur"):
        view = parse_view(spec)
        vecs[spec] = embed_prepared(photos, emb, None, spec, progress=False, loader=lambda p, v=view: load_view(
            p.source, p.image_path, p.mask_path, p.status, p.model, CleanConfig(), v))
    for i, p in enumerate(photos):
        differs = not np.allclose(vecs["white"][i], vecs["grey"][i]) and not np.allclose(vecs["white"][i],
                                                                                         vecs["blur"][i])
        same = np.allclose(vecs["white"][i], vecs["grey"][i]) and np.allclose(vecs["white"][i], vecs["blur"][i])
        assert differs if p.status == "cleaned" else same, p.status


def test_evaluate_cli_view_flags(tmp_path):
    from click.testing import CliRunner

    from cli.catalog_cmds import evaluate_cmd

    res = CliRunner().invoke(evaluate_cmd, ["--help"])
    assert res.exit_code == 0 and "--view [white|grey|blur]" in res.output and "--view-fill" in res.output
    for bad in (["--view", "pink"], ["--view-fill", "1.5"]):
        res = CliRunner().invoke(evaluate_cmd, ["--catalog", str(tmp_path), "--queries", str(tmp_path),
                                                "--out", str(tmp_path / "r"), *bad])
        assert res.exit_code == 2, res.output
