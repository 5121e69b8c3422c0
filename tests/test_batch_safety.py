"""Data safety of the batch: originals, OUT inside IN, dead workers, signals, odd names, read-only OUT."""
from __future__ import annotations

import csv
import ctypes
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import faulty
import psutil
import pytest
from PIL import Image

from engines.batch import run_batch
from engines.config import BatchConfig
from engines.job import BatchError, BatchJob
from engines.plan import read_manifest
from engines.pool import run_pool
from hygiene.config import CleanConfig

CFG = CleanConfig(size=300, max_upscale=4.0)
MANIFEST = BatchConfig().manifest_name


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "cli", "clean", *args, "--size", "300", "--max-upscale", "4", "--quiet"]


def _hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _manifest_rels(out: Path) -> list[str]:
    lines = (out / MANIFEST).read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["rel"] for line in lines if line.startswith("{")]


@pytest.fixture()
def photos(tmp_path, sample_paths) -> Path:
    src = tmp_path / "in"
    src.mkdir()
    for p in sample_paths:
        shutil.copy(p, src / p.name)
    return src


# ------------------------------------------------------------------ 1, 2: folders
@pytest.mark.parametrize("spelling", ["same", "dotdot", "absolute", "symlink"])
def test_out_that_is_in_is_refused_and_originals_stay(tmp_path, sample_paths, spelling):
    src = tmp_path / "in8"
    src.mkdir()
    shutil.copy(sample_paths[0], src / "dress.jpg")
    out = {"same": "in8", "dotdot": "in8/../in8", "absolute": str(src), "symlink": "link"}[spelling]
    (tmp_path / "link").symlink_to(src)
    before = _hashes(src)
    r = subprocess.run(_cli("in8", out), cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "is the input folder" in lines[0] and "Traceback" not in r.stderr, r.stderr
    assert _hashes(src) == before


def test_output_that_would_land_on_an_input_is_refused(tmp_path, sample_paths):
    """OUT elsewhere, but one output path is (via a symlinked sub-folder) an input file."""
    src = tmp_path / "in"
    (src / "a").mkdir(parents=True)
    shutil.copy(sample_paths[0], src / "a" / "dress.jpg")
    out = tmp_path / "out"
    out.mkdir()
    (out / "a").symlink_to(src / "a")  # out/a/dress.jpg is in/a/dress.jpg
    before = _hashes(src)
    with pytest.raises(BatchError, match="would overwrite the input photo"):
        run_batch(BatchJob(src, out, CFG, batch=BatchConfig(workers=1)), progress=False)
    assert _hashes(src) == before


def test_out_inside_in_is_never_cleaned_again(tmp_path, sample_paths):
    src = tmp_path / "in6"
    src.mkdir()
    for p in sample_paths[:2]:
        shutil.copy(p, src / p.name)
    for spelling in ("out", str(src / "out"), "in6/./out", "out"):  # re-runs, spelled differently
        cwd = src if spelling == "out" else tmp_path
        r = subprocess.run(_cli(str(src), spelling), cwd=cwd, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
    # a second output folder inside IN must not pick up the first one's outputs either
    r = subprocess.run(_cli(str(src), str(src / "out2")), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    for out in (src / "out", src / "out2"):
        assert sorted(p.name for p in out.rglob("*.jpg")) == sorted(p.name for p in sample_paths[:2])
        assert not (out / "out").exists() and not (out / "out2").exists()
        data = json.loads((out / "summary.json").read_text())
        assert data["counts"]["total"] == 2


# ------------------------------------------------------------------ 3: dead workers
def test_pool_retries_a_dead_workers_task_alone_then_reports_it():
    results, deaths = {}, []
    stopped = run_pool(faulty.square_or_crash, [1, 2, -1, 3, 4], workers=2,
                       on_result=lambda t, r: results.__setitem__(t, r),
                       on_death=lambda t, sig, code: deaths.append((t, sig)), catch_signals=False)
    assert stopped == 0
    assert results == {1: 1, 2: 4, 3: 9, 4: 16}
    assert deaths == [(-1, signal.SIGSEGV)]


def test_pool_a_transient_death_is_retried_and_succeeds(tmp_path):
    marker = str(tmp_path / "crashed-once")
    results, deaths = {}, []
    run_pool(faulty.crash_once, [(n, marker) for n in range(6)], workers=2,
             on_result=lambda t, r: results.__setitem__(t[0], r),
             on_death=lambda *a: deaths.append(a), catch_signals=False)
    assert os.path.exists(marker), "the worker never crashed: the test proves nothing"
    assert results == {n: n * n for n in range(6)} and deaths == []


def test_a_photo_that_kills_its_worker_is_recorded_and_skipped_later(photos):
    shutil.copy(photos / "dress.jpg", photos / "poison.jpg")
    out = photos.parent / "out"
    job = BatchJob(photos, out, CFG, batch=BatchConfig(workers=2))
    first = run_batch(job, progress=False, process=faulty.process_or_crash)
    rows = {r["rel"]: r for r in first.rows}
    assert rows["poison.jpg"]["status"] == "failed"
    assert rows["poison.jpg"]["error"] == "worker died: signal 11 (SIGSEGV)"
    assert first.failed == 1 and first.cleaned + first.needs_review == first.total - 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"]["failed"] == 1
    # later runs skip it (and everything done) unless its bytes change
    again = run_batch(job, progress=False, process=faulty.process_or_crash)
    assert again.skipped == again.total and again.failed == 0
    with Image.open(photos / "dress.jpg") as im:
        im.rotate(90, expand=True).save(photos / "poison.jpg")
    third = run_batch(job, progress=False, process=faulty.process_or_crash)
    assert third.skipped == third.total - 1 and third.failed == 1
    assert sorted(_manifest_rels(out)).count("poison.jpg") == 2  # one line per (bytes, settings)


def _workers_of(pid: int) -> list[psutil.Process]:
    try:
        return [c for c in psutil.Process(pid).children(recursive=True) if "python" in c.name().lower()]
    except psutil.NoSuchProcess:
        return []


def test_sigkill_of_a_pool_worker_mid_batch_loses_nothing(photos):
    out = photos.parent / "out"
    proc = subprocess.Popen(_cli(str(photos), str(out), "--workers", "2"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    victim = None
    while time.time() < deadline and victim is None:
        if (out / MANIFEST).is_file() and len(read_manifest(out / MANIFEST)) >= 2:
            kids = _workers_of(proc.pid)
            victim = kids[0] if kids else None
        time.sleep(0.05)
    assert victim is not None, "no worker to kill"
    victim.kill()
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-800:]
    rels = _manifest_rels(out)
    assert sorted(rels) == sorted(p.name for p in photos.glob("*.jpg")) and len(rels) == len(set(rels))
    assert json.loads((out / "summary.json").read_text())["counts"]["failed"] == 0


# ------------------------------------------------------------------ 4: signals
def _start_and_wait_for_progress(photos: Path, out: Path, n: int = 2) -> subprocess.Popen:
    proc = subprocess.Popen(_cli(str(photos), str(out), "--workers", "2"), start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline:
        if (out / MANIFEST).is_file() and len(read_manifest(out / MANIFEST)) >= n:
            return proc
        assert proc.poll() is None, proc.stderr.read()[-500:]
        time.sleep(0.05)
    raise AssertionError("batch made no progress")


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_first_signal_stops_cleanly_and_a_rerun_resumes(photos, sig, code):
    out = photos.parent / "out"
    proc = _start_and_wait_for_progress(photos, out)
    workers = _workers_of(proc.pid)
    t = time.monotonic()
    os.killpg(proc.pid, sig)  # Ctrl-C reaches the whole process group
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == code, stderr[-800:]
    assert time.monotonic() - t < 20  # grace 5 s, then the workers are killed
    assert "Traceback" not in stderr and "stopped by" in stderr
    psutil.wait_procs(workers, timeout=5)
    assert not [w for w in workers if w.is_running() and w.status() != psutil.STATUS_ZOMBIE], "orphan workers"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] == sig
    done = _manifest_rels(out)
    written = sorted(p.name for p in out.glob("*.jpg"))
    assert set(done) <= set(written) and not list(out.rglob(".*.tmp"))
    # the re-run finishes the rest, each photo exactly once in the manifest
    r = subprocess.run(_cli(str(photos), str(out)), capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr
    rels = _manifest_rels(out)
    assert sorted(rels) == sorted(p.name for p in photos.glob("*.jpg")) and len(rels) == len(set(rels))


def test_workers_die_with_a_sigkilled_parent(photos):
    out = photos.parent / "out"
    proc = _start_and_wait_for_progress(photos, out, n=1)
    workers = _workers_of(proc.pid)
    assert workers
    proc.kill()  # the parent only, not its group
    proc.wait()
    gone, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive, f"orphan workers: {[w.pid for w in alive]}"


# ------------------------------------------------------------------ 5: names that are not UTF-8
def test_a_file_name_that_is_not_utf8_is_cleaned_and_reported(photos):
    odd = os.path.join(os.fsencode(photos), b"bad\xff.jpg")
    shutil.copy(photos / "hat.jpg", odd)
    out = photos.parent / "out"
    job = BatchJob(photos, out, CFG, batch=BatchConfig(workers=2))
    summary = run_batch(job, progress=False)
    assert summary.failed == 0, [r for r in summary.rows if r["status"] == "failed"]
    assert os.path.isfile(os.path.join(os.fsencode(out), b"bad\xff.jpg"))
    rows = list(csv.DictReader((out / "summary.csv").open(encoding="utf-8")))
    assert "bad\\xff.jpg" in {r["rel"] for r in rows}
    assert "bad\\xff.jpg" in {r["rel"] for r in json.loads((out / "summary.json").read_text())["photos"]}
    assert run_batch(job, progress=False).skipped == summary.total  # and it resumes


# ------------------------------------------------------------------ 6: OUT not writable
def _without_root_override() -> None:
    """As root, drop the capabilities that ignore file permissions (so read-only means read-only)."""
    if os.geteuid() == 0:
        libc = ctypes.CDLL(None, use_errno=True)
        for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
            libc.prctl(24, cap, 0, 0, 0)  # PR_CAPBSET_DROP: gone after exec


def test_out_under_a_read_only_folder_is_one_line(photos):
    locked = photos.parent / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    r = subprocess.run(_cli(str(photos), str(locked / "out")), capture_output=True, text=True, timeout=120,
                       preexec_fn=_without_root_override)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot write to" in lines[0] and "Permission denied" in lines[0], r.stderr
    assert not list(locked.iterdir())


def test_out_made_read_only_mid_run_is_one_line_per_photo_and_no_partial_files(photos):
    out = photos.parent / "out"
    proc = subprocess.Popen(_cli(str(photos), str(out), "--workers", "1"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=_without_root_override)
    deadline = time.time() + 240
    while time.time() < deadline and not ((out / MANIFEST).is_file() and read_manifest(out / MANIFEST)):
        time.sleep(0.05)
    out.chmod(0o555)
    try:
        _, stderr = proc.communicate(timeout=300)
    finally:
        out.chmod(0o755)
    assert proc.returncode == 1
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert errors and all("Permission denied" in e for e in errors), stderr
    assert "cannot write the summary" in stderr
    assert not list(out.rglob(".*.tmp"))
    done = set(_manifest_rels(out))
    assert done and done <= {p.name for p in out.glob("*.jpg")}


def test_evaluate_stopped_while_cleaning_exits_with_one_line_and_resumes(photos, tmp_path):
    """SIGTERM while `evaluate` cleans its queries: exit 143, one line, no traceback; the re-run
    reuses what was cleaned and finishes."""
    shop = tmp_path / "shop"
    queries = tmp_path / "queries"
    for p in sorted(photos.glob("*.jpg")):
        label = p.stem.split("-")[0]
        (shop / label).mkdir(parents=True, exist_ok=True)
        (queries / label).mkdir(parents=True, exist_ok=True)
        shutil.copy(p, shop / label / p.name)
        shutil.copy(p, queries / label / p.name)
    cat, cache, report = tmp_path / "cat", tmp_path / "cache", tmp_path / "report"
    build = [sys.executable, "-m", "cli", "catalog", "build", str(shop), "--labels-from-folders",
             "--out", str(cat), "--quiet"]
    r = subprocess.run(build, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    evaluate = [sys.executable, "-m", "cli", "evaluate", "--catalog", str(cat), "--queries", str(queries),
                "--out", str(report), "--cache-dir", str(cache), "--workers", "2", "--quiet"]
    proc = subprocess.Popen(evaluate, start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline:
        manifests = list((cache / "clean").glob(f"*/{MANIFEST}")) if (cache / "clean").is_dir() else []
        if manifests and len(read_manifest(manifests[0])) >= 2:
            break
        assert proc.poll() is None, proc.stderr.read()[-500:]
        time.sleep(0.05)
    else:
        raise AssertionError("evaluate made no progress")
    os.killpg(proc.pid, signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, stderr[-800:]
    assert "Traceback" not in stderr and "stopped by SIGTERM" in stderr.strip().splitlines()[-1]
    done = len(read_manifest(manifests[0]))
    assert done >= 2 and not (report / "index.html").exists()
    r = subprocess.run(evaluate, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-800:]
    assert (report / "index.html").is_file()
    assert len(read_manifest(manifests[0])) == len(list(photos.glob("*.jpg")))  # each photo once
