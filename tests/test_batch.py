"""Batch cleanup: bad files reported one line each, originals untouched, resumable."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from badinputs import make_bad_files, make_odd_files
from PIL import Image

from engines.batch import run_batch
from engines.config import BatchConfig
from engines.job import BatchJob
from engines.plan import read_manifest
from hygiene.config import CleanConfig

pytestmark = pytest.mark.slow

CFG = CleanConfig(size=500, max_upscale=4.0)


def _hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _leftovers(out: Path) -> list[Path]:
    """Temp or partial files: anything hidden other than the manifest."""
    return [p for p in out.rglob(".*") if p.is_file() and p.name != BatchConfig().manifest_name]


@pytest.fixture()
def mixed_folder(tmp_path, sample_paths):
    src = tmp_path / "in"
    (src / "shoes").mkdir(parents=True)
    shutil.copy(sample_paths[0], src / sample_paths[0].name)
    shutil.copy(sample_paths[7], src / "shoes" / sample_paths[7].name)
    bad = make_bad_files(sample_paths[1], src / "bad")
    odd = make_odd_files(sample_paths[2], src / "odd")
    return src, bad, odd


def test_mixed_batch_reports_each_bad_file_and_keeps_originals(tmp_path, mixed_folder, sample_paths):
    src, bad, odd = mixed_folder
    before = _hashes(src)
    out = tmp_path / "out"
    summary = run_batch(BatchJob(in_dir=src, out_dir=out, clean=CFG, batch=BatchConfig(workers=2)),
                        progress=False)
    assert _hashes(src) == before, "originals must stay byte-identical"
    rows = {r["rel"]: r for r in summary.rows}
    assert summary.total == 2 + len(bad) + len(odd)
    assert summary.failed == len(bad)
    for name, path in bad.items():
        row = rows[str(path.relative_to(src))]
        assert row["status"] == "failed", name
        assert row["error"] and "\n" not in row["error"] and len(row["error"]) < 200, (name, row["error"])
    for name, path in list(odd.items()) + [("plain", src / "shoes" / sample_paths[7].name)]:
        row = rows[str(path.relative_to(src))]
        assert row["status"] in ("cleaned", "needs_review"), (name, row)
        result = out / row["output"]
        with Image.open(result) as im:
            assert im.size == (500, 500), name
    assert (out / "shoes" / sample_paths[7].name).is_file()  # tree mirrored
    assert not _leftovers(out)
    data = json.loads((out / "summary.json").read_text())
    assert data["counts"]["failed"] == len(bad)
    assert (out / "summary.csv").read_text().count("\n") == summary.total + 1
    # re-run: everything finished is skipped, the bad files are tried (and fail) again
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*.jpg")}
    again = run_batch(BatchJob(in_dir=src, out_dir=out, clean=CFG, batch=BatchConfig(workers=1)),
                      progress=False)
    assert again.skipped == summary.total - len(bad)
    assert again.failed == len(bad)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.jpg")} == mtimes
    # changed settings: everything is redone
    redo = run_batch(BatchJob(in_dir=src, out_dir=out, clean=CleanConfig(size=400, max_upscale=4.0),
                              batch=BatchConfig(workers=1)), progress=False)
    assert redo.skipped == 0 and redo.cleaned + redo.needs_review == summary.total - len(bad)


def test_sigkill_mid_batch_then_resume(tmp_path, sample_paths):
    src = tmp_path / "in"
    src.mkdir()
    for p in sample_paths:
        shutil.copy(p, src / p.name)
    out = tmp_path / "out"
    manifest = out / BatchConfig().manifest_name
    cmd = [sys.executable, "-m", "cli", "clean", str(src), str(out), "--size", "500",
           "--max-upscale", "4", "--workers", "1", "--quiet"]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if manifest.exists() and len(read_manifest(manifest)) >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "batch finished before it could be killed: " + proc.stderr.read().decode()[-500:]
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_first = set(read_manifest(manifest))
    assert 3 <= len(done_first) < len(sample_paths)

    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-1000:]
    lines = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip().startswith("{")]
    rels = [rec["rel"] for rec in lines]
    assert sorted(set(rels)) == sorted(p.name for p in sample_paths)
    assert len(rels) == len(set(rels)), "a photo was processed twice"
    assert not _leftovers(out)
    for p in sample_paths:
        with Image.open(out / p.name) as im:
            im.load()
            assert im.size == (500, 500)
