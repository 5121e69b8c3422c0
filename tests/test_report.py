"""search.report: the three files, self-contained HTML, rendered in headless Chromium."""
import csv
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from eval_helpers import (
    assert_too_few_queries_for_a_verdict,
    assert_verdict_follows_the_numbers,
)
from PIL import Image

from search import datasets
from search.evaluate import EvalConfig, evaluate
from search.report import rank_changes, verdict_sentence, write_report

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_images"
QUERY_STEMS = ("hat-2", "shoes-2")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.fail("Chromium is needed to check the HTML report renders: "
                    "sudo apt-get update && sudo apt-get install -y chromium")
    return exe


def run_chromium(*args: str) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run([chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                              capture_output=True, text=True, timeout=180)


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    from search import create_embedder

    items = datasets.from_stems(datasets.list_images(SAMPLES))
    queries = [it for it in items if it.sku in QUERY_STEMS]
    catalog = [it for it in items if it.sku not in QUERY_STEMS]
    cache = tmp_path_factory.getbasetemp() / "shelfready-eval-cache"  # shared with test_evaluate
    ev = evaluate(queries, catalog, create_embedder("cnn:efficientnet_lite0"),
                  config=EvalConfig(cache_dir=cache), progress=False)
    out = tmp_path_factory.mktemp("report")
    index = write_report(ev, out)
    assert index == out / "index.html"
    return out, ev


@pytest.mark.slow
def test_report_files(report_dir):
    out, ev = report_dir
    data = json.loads((out / "report.json").read_text())
    assert data["verdict"] == ev.verdict and data["variants"] == ["raw/raw", "clean/raw"]
    assert_too_few_queries_for_a_verdict(data)  # two queries
    assert set(data["metrics"]["raw/raw"]) >= {"R@1", "R@5", "R@10", "P@1", "P@10", "mAP", "MRR"}
    rows = list(csv.DictReader((out / "per_photo.csv").open()))
    assert [Path(r["path"]).stem for r in rows] == list(QUERY_STEMS)
    assert all(int(r["rank_raw_raw"]) >= 1 and int(r["rank_clean_raw"]) >= 1 for r in rows)
    html = (out / "index.html").read_text()
    # self-contained: every src/href is a data URI, no external stylesheet or script
    refs = re.findall(r"""(?:src|href)\s*=\s*['"]([^'"]*)['"]""", html)
    assert refs and all(r.startswith("data:") for r in refs), [r[:40] for r in refs if not r.startswith("data:")]
    assert "<link" not in html
    # the verdict is stated in words with its numbers
    sentence = verdict_sentence(ev, "clean/raw")
    assert sentence.split(" (")[0] in html and "MRR" in sentence and "Wilcoxon" in sentence
    # rank changes agree with the CSV
    change = rank_changes(ev, "clean/raw")
    expected = [np.log2(int(r["rank_raw_raw"]) / int(r["rank_clean_raw"])) for r in rows]
    np.testing.assert_allclose(change, expected)


@pytest.mark.slow
def test_report_renders_in_chromium(report_dir, tmp_path):
    out, _ = report_dir
    url = (out / "index.html").resolve().as_uri()
    shot = tmp_path / "report.png"
    res = run_chromium(f"--screenshot={shot}", "--window-size=1200,2000", url)
    assert shot.is_file(), f"no screenshot; chromium said: {res.stderr[-2000:]}"
    with Image.open(shot) as im:
        px = np.asarray(im.convert("L"), dtype=np.float32)
    assert px.shape == (2000, 1200)
    assert px.std() > 20, "screenshot is (nearly) blank"
    assert (px < 128).mean() > 0.01  # text, plots and photos, not an empty page
    dom = run_chromium("--dump-dom", url).stdout
    m = re.search(r'id="render-check"[^>]*data-images="(\d+)"[^>]*data-loaded="(\d+)"', dom)
    assert m, "render check did not run: " + dom[:300]
    images, loaded = int(m.group(1)), int(m.group(2))
    # 2 plots (recall curve, rank changes) + 4 thumbnails per example shown
    assert images >= 6 and loaded == images


@pytest.mark.slow
def test_gallery_shows_every_cleaned_photo_even_without_rank_changes(report_dir):
    out, ev = report_dir
    html = (out / "index.html").read_text()
    assert "<h2>Before and after</h2>" in html
    gallery = html.split("<h2>Before and after</h2>")[1].split("<h2>")[0]
    figures = re.findall(r"<figure><div class=two><img src='data:image/jpeg;base64,[^']+' alt='raw'>"
                         r"<img src='data:image/jpeg;base64,[^']+' alt='cleaned'>", gallery)
    assert len(figures) == len(ev.photos) == len(QUERY_STEMS)  # raw | cleaned for each query
    for p in ev.photos:
        assert Path(p["path"]).name in gallery
        assert {"cleaned": "cleaned: white background",
                "needs_review": "needs review"}[p["status"]] in gallery
    # raw seller photos fail the white-background rule; the checks are named
    assert gallery.count("raw photo: fails") == len(ev.photos) and "white_background" in gallery


@pytest.mark.slow
def test_ci_level_comes_from_the_evaluation_config(report_dir, tmp_path_factory):
    from search import create_embedder
    from search.report import render_html

    _, ev95 = report_dir
    items = datasets.from_stems(datasets.list_images(SAMPLES))
    cache = tmp_path_factory.getbasetemp() / "shelfready-eval-cache"  # cleaned photos and vectors cached
    ev90 = evaluate([it for it in items if it.sku in QUERY_STEMS], [it for it in items if it.sku not in QUERY_STEMS],
                    create_embedder("cnn:efficientnet_lite0"), config=EvalConfig(cache_dir=cache, confidence=0.9),
                    progress=False)
    html = render_html(ev90, "t")
    assert "90% CI" in verdict_sentence(ev90, "clean/raw") and "90% bootstrap CIs" in html
    assert "95%" not in html
    d90, d95 = ev90.comparisons["clean/raw"]["diff"]["MRR"], ev95.comparisons["clean/raw"]["diff"]["MRR"]
    assert d95["low"] <= d90["low"] <= d90["high"] <= d95["high"]


PLOT_PROBE = """
import json, sys
import matplotlib
matplotlib.use("svg")
import matplotlib.pyplot as plt
fig = plt.figure()
from search.evaluate import Evaluation
from search.report import render_html
ev = Evaluation(**json.load(open(sys.argv[1])))
html = render_html(ev, "probe")
assert html.count("data:image/png;base64,") == 2, "two plots expected"
print(matplotlib.get_backend(), plt.get_fignums())
"""


@pytest.mark.slow
def test_plots_leave_the_host_programs_matplotlib_alone(report_dir):
    out, _ = report_dir
    res = subprocess.run([sys.executable, "-c", PLOT_PROBE, str(out / "report.json")],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split() == ["svg", "[1]"]  # backend not switched, no figure left open


# ---- the demo: `shelfready demo` on the shipped demo photos, its report in Chromium ----------


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    res = subprocess.run([sys.executable, "-m", "cli", "demo", str(ROOT / "demo_data"), str(out)],
                         capture_output=True, text=True, timeout=1800, cwd=ROOT)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    return out, res.stdout


@pytest.mark.slow
def test_demo_evaluates_the_shipped_photos(demo_run):
    from search import Catalog

    out, stdout = demo_run
    n_listings = len(list((ROOT / "demo_data" / "listings").glob("*/*.jpg")))
    n_queries = len(list((ROOT / "demo_data" / "queries").glob("*/*.jpg")))
    assert (n_listings, n_queries) == (40, 40)
    data = json.loads((out / "report" / "report.json").read_text())
    # the demo asks the shop's own question: shoppers' raw photos vs the listings, raw vs cleaned
    assert data["variants"] == ["raw/raw", "raw/clean"] and data["headline"] == "raw/clean"
    assert data["scenario"]["name"] == "shop-search"
    verdict = [ln for ln in stdout.splitlines() if ln.startswith("Shop search: ")]
    assert len(verdict) == 1 and "Do shoppers' own photos" in verdict[0] and "MRR" in verdict[0]
    # and why: the reasons measured on the same photos, the first in plain words
    why = data["reasons"]
    assert why["n_queries"] == n_queries and why["n_catalog"] == n_listings
    assert set(why["conditions"]) == {"raw", "product-grey", "background", "product-white", "clean"}
    assert why["chance"]["R@1"] == pytest.approx(0.1)
    assert f"Why: {why['sentences'][0]}" in stdout and "Background shortcut" in stdout
    assert data["settings"]["n_queries"] == n_queries and data["settings"]["n_catalog"] == n_listings
    assert_verdict_follows_the_numbers(data)
    assert f"{n_listings} listings and {n_queries} shopper photos (10 classes)" in stdout
    assert "MRR" in stdout and "Wilcoxon" in stdout and str(out / "report" / "index.html") in stdout
    statuses = [p["status"] for p in data["photos"] + data["catalog"]]
    assert set(statuses) <= {"cleaned", "needs_review"} and statuses.count("cleaned") > len(statuses) // 2
    assert len(Catalog.open(out / "catalog")) == n_listings


@pytest.mark.slow
def test_demo_report_in_chromium_shows_the_gallery(demo_run, request, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    out, _ = demo_run
    driver_exe = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    if not Path(driver_exe).exists():
        pytest.fail("chromedriver missing: `apt-get install chromium chromium-driver` (make browser)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium()
    for arg in (*CHROMIUM_FLAGS, "--disable-dev-shm-usage", "--window-size=1200,1700",
                f"--user-data-dir={tmp_path / 'profile'}"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(driver_exe), options=opts)
    try:
        driver.set_page_load_timeout(120)
        driver.get((out / "report" / "index.html").resolve().as_uri())
        WebDriverWait(driver, 60).until(lambda d: d.execute_script("return document.readyState") == "complete")
        images, loaded = driver.execute_script(
            "var i=[...document.images];return [i.length, i.filter(x=>x.complete&&x.naturalWidth>0).length];")
        pairs = driver.execute_script("return document.querySelectorAll('.ba figure').length")
        visible = driver.execute_script(
            "var f=document.querySelector('.ba figure img');var r=f.getBoundingClientRect();"
            "return r.width>100&&r.height>100;")
        shot = tmp_path / "demo-report.png"
        assert driver.save_screenshot(str(shot))
    finally:
        driver.quit()
    assert pairs == 40  # every listing: raw | cleaned (shoppers' photos stay raw in shop search)
    assert images == loaded and images >= 2 * pairs + 2  # thumbnails + the two plots, all decoded
    assert visible
    with Image.open(shot) as im:
        px = np.asarray(im.convert("L"), dtype=np.float32)
    assert px.std() > 20 and (px < 128).mean() > 0.01  # text and photos, not a blank page
    target = request.config.getoption("--screenshot-dir")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(target) / shot.name)
