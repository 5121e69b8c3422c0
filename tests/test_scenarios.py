"""search.scenarios: the question picks the variants and the verdict; evaluate, CLI and demo use it."""
import json
import shutil
from pathlib import Path

import pytest

from search import datasets, scenarios
from search.opinions import DEPENDS, NONE, agreement

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_images"
QUERY_STEMS = ("hat-2", "shoes-2")


def test_each_scenario_is_one_variant_against_raw():
    assert scenarios.variants_for("shop-search") == ["raw/raw", "raw/clean"]
    assert scenarios.variants_for("catalog-match") == ["raw/raw", "clean/raw"]
    assert scenarios.variants_for("normalised-index") == ["raw/raw", "clean/clean"]
    assert scenarios.variants_for("shop-search", ["clean/clean", "raw/clean", " "]) == [
        "raw/raw", "raw/clean", "clean/clean"]
    assert scenarios.cleans("shop-search") == (False, True) and scenarios.cleans("catalog-match") == (True, False)
    for s in scenarios.SCENARIOS.values():
        assert s.question.endswith("?")
    with pytest.raises(ValueError, match="unknown scenario 'shop'.*shop-search"):
        scenarios.get("shop")


def _ci(low, high):
    return {"diff": {"mean": (low + high) / 2, "low": low, "high": high}}


def test_agreement_is_robust_only_when_every_ci_excludes_zero_on_one_side():
    assert agreement([_ci(0.01, 0.05), _ci(0.02, 0.08)]) == "robust gain"
    assert agreement([_ci(-0.05, -0.01), _ci(-0.2, -0.1)]) == "robust loss"
    assert agreement([_ci(-0.05, -0.01), _ci(-0.2, 0.01)]) == DEPENDS
    assert agreement([_ci(-0.05, -0.01), _ci(0.01, 0.2)]) == DEPENDS
    assert agreement([_ci(-0.05, 0.01), _ci(-0.01, 0.2)]) == NONE


@pytest.fixture(scope="module")
def small_sets():
    items = datasets.from_stems(datasets.list_images(SAMPLES))
    return [it for it in items if it.sku in QUERY_STEMS], [it for it in items if it.sku not in QUERY_STEMS]


@pytest.mark.slow
def test_evaluate_answers_the_scenario_named(small_sets, tmp_path_factory):
    from search import create_embedder
    from search.evaluate import EvalConfig, evaluate
    from search.report import render_html, verdict_sentence

    queries, catalog = small_sets
    emb = create_embedder("cnn:efficientnet_lite0")
    cfg = EvalConfig(cache_dir=tmp_path_factory.getbasetemp() / "shelfready-eval-cache", resamples=200)
    shop = evaluate(queries, catalog, emb, scenario="shop-search", variants=["clean/clean"], config=cfg,
                    progress=False)
    assert shop.variants == ["raw/raw", "raw/clean", "clean/clean"] and shop.headline == "raw/clean"
    assert shop.verdict == shop.comparisons["raw/clean"]["verdict"]
    assert shop.scenario["name"] == "shop-search"
    line = verdict_sentence(shop, "raw/clean")
    assert line.startswith("Shop search: Do shoppers' own photos find the right product more often")
    assert "MRR" in line and "Wilcoxon" in line
    assert not verdict_sentence(shop, "clean/clean").startswith("Shop search")  # another question
    html = render_html(shop, "t")
    assert html.index("class=question") < html.index("<h2>Verdict</h2>") < html.index("<h2>Why</h2>")
    # the same photos under another question: the shared variants score the same
    match = evaluate(queries, catalog, emb, scenario="catalog-match", config=cfg, progress=False)
    assert match.variants == ["raw/raw", "clean/raw"] and match.headline == "clean/raw"
    assert match.metrics["raw/raw"] == shop.metrics["raw/raw"]
    assert verdict_sentence(match, "clean/raw").startswith("Catalog match: ")


def _folders_and_catalog(small_sets, tmp_path):
    """The query photos in folders by label, and a catalog built from the others by the CLI."""
    from click.testing import CliRunner

    from cli.catalog_cmds import catalog_group

    queries, catalog = small_sets
    shop, qdir = tmp_path / "shop", tmp_path / "queries"
    for folder, items in ((shop, catalog), (qdir, queries)):
        for it in items:
            (folder / it.label).mkdir(parents=True, exist_ok=True)
            shutil.copy(it.path, folder / it.label / it.path.name)
    cat = tmp_path / "cat"
    res = CliRunner().invoke(catalog_group, ["build", str(shop), "--labels-from-folders", "--out", str(cat),
                                             "--quiet", "--embedder", "cnn:efficientnet_lite0"])
    assert res.exit_code == 0, res.output
    return qdir, cat


@pytest.mark.slow
def test_cli_scenario_option(small_sets, tmp_path, tmp_path_factory):
    from click.testing import CliRunner

    from cli.catalog_cmds import evaluate_cmd

    queries, _ = small_sets
    qdir, cat = _folders_and_catalog(small_sets, tmp_path)
    cache = tmp_path_factory.getbasetemp() / "shelfready-eval-cache"
    res = CliRunner().invoke(evaluate_cmd, ["--catalog", str(cat), "--queries", str(qdir), "--out",
                                            str(tmp_path / "r"), "--cache-dir", str(cache), "--quiet",
                                            "--scenario", "shop-search"])
    assert res.exit_code == 0, res.output
    first = res.output.splitlines()[0]
    assert first.startswith("Shop search: Do shoppers' own photos"), res.output
    assert any(ln.startswith("Why: ") for ln in res.output.splitlines())
    data = json.loads((tmp_path / "r" / "report.json").read_text())
    assert data["scenario"]["name"] == "shop-search" and data["headline"] == "raw/clean"
    assert data["reasons"]["sentences"] and "shortcut" in data["reasons"]
    # --no-reasons: no reasons, and a raw catalog (catalog-match) is not cleaned at all
    fresh = tmp_path / "cache-no-reasons"
    res = CliRunner().invoke(evaluate_cmd, ["--catalog", str(cat), "--queries", str(qdir), "--out",
                                            str(tmp_path / "r3"), "--cache-dir", str(fresh), "--quiet",
                                            "--scenario", "catalog-match", "--no-reasons"])
    assert res.exit_code == 0, res.output
    assert not any(ln.startswith("Why: ") for ln in res.output.splitlines())
    data = json.loads((tmp_path / "r3" / "report.json").read_text())
    assert data["headline"] == "clean/raw" and not data.get("reasons")
    cleaned = [json.loads(ln)["rel"] for m in (fresh / "clean").glob("*/.shelfready-manifest.jsonl")
               for ln in m.read_text().splitlines()]
    assert len(cleaned) == len(queries), cleaned  # the queries only
    bad = CliRunner().invoke(evaluate_cmd, ["--catalog", str(cat), "--queries", str(qdir), "--out",
                                            str(tmp_path / "r2"), "--scenario", "shop"])
    assert bad.exit_code == 2 and "shop-search" in bad.output


@pytest.mark.slow
def test_cli_embedders_give_a_second_opinion(small_sets, tmp_path, tmp_path_factory):
    from click.testing import CliRunner

    from cli.catalog_cmds import evaluate_cmd
    from search.opinions import DEPENDS, NONE, ROBUST

    qdir, cat = _folders_and_catalog(small_sets, tmp_path)
    res = CliRunner().invoke(evaluate_cmd, [
        "--catalog", str(cat), "--queries", str(qdir), "--out", str(tmp_path / "r"), "--quiet",
        "--cache-dir", str(tmp_path_factory.getbasetemp() / "shelfready-eval-cache"), "--scenario", "catalog-match",
        "--embedders", "cnn:efficientnet_lite0,cnn:efficientnet_lite2"])
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "r" / "report.json").read_text())
    assert [o["embedder"] for o in data["opinions"]] == ["cnn:efficientnet_lite0", "cnn:efficientnet_lite2"]
    assert all(o["variant"] == "clean/raw" for o in data["opinions"])
    assert data["opinions"][0]["diff"] == data["comparisons"]["clean/raw"]["diff"]["MRR"]
    assert data["opinions"][0]["diff"] != data["opinions"][1]["diff"]  # two embedders, two answers
    across = [ln for ln in res.output.splitlines() if ln.startswith("Across embedders: ")]
    assert len(across) == 1 and any(w in across[0] for w in (*ROBUST.values(), NONE, DEPENDS))
    assert "Second opinion" in (tmp_path / "r" / "index.html").read_text()
