"""search.report: the three files, self-contained HTML, rendered in headless Chromium."""
import csv
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
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
