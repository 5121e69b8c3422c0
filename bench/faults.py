"""Fault injection: kill workers, catalog writers and the batch driver at random points, repeatedly.

    python -m bench.faults [--rounds 10] [--photos 12] [--seed 0] [--out /tmp/faults.json]

Every kill is a real SIGKILL (or SIGINT/SIGTERM to the process group) of a real
``shelfready`` process or one of its pool workers, at a random moment. After
each round the bench checks, and at the end prints, the counts that must all
be zero:

* lost: photos missing from the manifest after the re-run that follows a kill;
* duplicated: photos with more than one manifest line for the same bytes and settings;
* partial: half-written outputs (temp files) left in OUT, outputs that do not decode;
* corrupt catalogs: a catalog that fails to open, or items missing / doubled after
  concurrent and killed ``catalog add`` runs;
* originals changed: input photos whose bytes differ from before.

Scenarios per round: (a) SIGKILL one pool worker mid-batch; (b) SIGKILL the driver
(the whole process group) mid-batch; (c) SIGINT, then SIGTERM, to the driver's
group; (d) two ``catalog add`` writers at once, one SIGKILLed at a random moment.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import psutil
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_images"
MANIFEST = ".shelfready-manifest.jsonl"


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "cli", *args]


def _clean_cmd(src: Path, out: Path) -> list[str]:
    return _cli("clean", str(src), str(out), "--size", "300", "--max-upscale", "4", "--quiet", "--workers", "2")


def _hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _manifest(out: Path) -> list[dict]:
    path = out / MANIFEST
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            pass  # a torn last line of a killed writer: ignored by the reader too
    return rows


def _progress(out: Path) -> int:
    return len(_manifest(out))


def _start(cmd: list[str]) -> subprocess.Popen:
    return subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _wait_until(pred, timeout: float) -> bool:
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return True
        time.sleep(0.02)
    return False


def _check_batch(src: Path, out: Path, originals: dict, counts: Counter) -> None:
    """Re-run to completion, then count what a kill broke."""
    r = subprocess.run(_clean_cmd(src, out), capture_output=True, text=True, timeout=900)
    if r.returncode not in (0, 1):
        counts["rerun_errors"] += 1
    rows = _manifest(out)
    names = {p.name for p in src.glob("*.jpg")}
    keys = Counter((r["rel"], r["sha256"], r["settings"]) for r in rows)
    counts["lost"] += len(names - {r["rel"] for r in rows})
    counts["duplicated"] += sum(n - 1 for n in keys.values() if n > 1)
    counts["partial"] += len(list(out.rglob(".*.tmp")))
    for r in rows:
        if r.get("output"):
            try:
                with Image.open(out / r["output"]) as im:
                    im.load()
            except Exception:  # noqa: BLE001 - any decode failure is a broken output
                counts["partial"] += 1
    counts["originals_changed"] += int(_hashes(src) != originals)
    counts["batches_checked"] += 1


def _workers(proc: subprocess.Popen) -> list[psutil.Process]:
    try:
        return psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def kill_worker(src: Path, out: Path, rng: random.Random, counts: Counter) -> None:
    proc = _start(_clean_cmd(src, out))
    at = rng.randint(0, 4)
    _wait_until(lambda: proc.poll() is not None or (_workers(proc) and _progress(out) >= at), 300)
    time.sleep(rng.uniform(0, 1.5))
    kids = _workers(proc) if proc.poll() is None else []
    if kids:
        rng.choice(kids).kill()
        counts["workers_killed"] += 1
    proc.wait(timeout=900)
    if proc.returncode not in (0, 1):
        counts["driver_errors_after_worker_kill"] += 1


def kill_driver(src: Path, out: Path, rng: random.Random, counts: Counter, sig: int) -> None:
    proc = _start(_clean_cmd(src, out))
    _wait_until(lambda: _progress(out) >= rng.randint(0, 4), 300)
    time.sleep(rng.uniform(0, 1.5))
    if proc.poll() is None:
        kids = psutil.Process(proc.pid).children(recursive=True)
        os.killpg(proc.pid, sig) if sig != signal.SIGKILL else proc.kill()
        counts[f"driver_{signal.Signals(sig).name}"] += 1
        proc.wait(timeout=60)
        _, alive = psutil.wait_procs(kids, timeout=10)
        counts["orphans"] += len(alive)


def catalog_writers(src: Path, work: Path, rng: random.Random, counts: Counter) -> None:
    """Two concurrent `catalog add` runs of disjoint photos into one catalog; one is SIGKILLed."""
    cat = work / "catalog"
    halves = [work / "a", work / "b"]
    for i, half in enumerate(halves):
        half.mkdir()
        for p in sorted(src.glob("*.jpg"))[i::2]:
            shutil.copy(p, half / f"{half.name}-{p.name}")
    first = subprocess.run(_cli("catalog", "build", str(halves[0]), "--out", str(cat)), capture_output=True,
                           text=True, timeout=600)
    if first.returncode != 0:
        counts["catalog_build_errors"] += 1
        return
    extra = work / "c"
    extra.mkdir()
    for p in sorted(src.glob("*.jpg"))[:4]:
        with Image.open(p) as im:
            im.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(extra / f"flip-{p.name}")
    procs = [_start(_cli("catalog", "add", str(cat), str(halves[1]))),
             _start(_cli("catalog", "add", str(cat), str(extra)))]
    victim = rng.choice(procs)
    time.sleep(rng.uniform(0.5, 8))
    if victim.poll() is None:
        os.killpg(victim.pid, signal.SIGKILL)
        counts["writers_killed"] += 1
    for p in procs:
        p.wait(timeout=600)
    survivor = [p for p in procs if p is not victim][0]
    code = ("import sys, json; from search.catalog import Catalog; c = Catalog.open(sys.argv[1]); "
            "print(json.dumps([c.get(i).path for i in c.ids()]))")
    r = subprocess.run([sys.executable, "-c", code, str(cat)], capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        counts["corrupt_catalogs"] += 1
        return
    paths = [Path(p).name for p in json.loads(r.stdout)]
    doubled = sum(n - 1 for n in Counter(paths).values() if n > 1)
    expected = {p.name for p in halves[0].iterdir()}
    expected |= {p.name for p in (halves[1] if survivor is procs[0] else extra).iterdir()} if survivor.returncode == 0 else set()
    missing = len(expected - set(paths))
    counts["catalog_items_doubled"] += doubled
    counts["catalog_items_lost"] += missing
    counts["catalogs_checked"] += 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--photos", type=int, default=12, help="sample photos per batch")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    counts: Counter = Counter()
    t0 = time.time()
    for rnd in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="shelfready-faults-") as tmp:
            work = Path(tmp)
            src = work / "in"
            src.mkdir()
            for p in sorted(SAMPLES.glob("*.jpg"))[: args.photos]:
                shutil.copy(p, src / p.name)
            originals = _hashes(src)
            for name, fn in (("worker", lambda o: kill_worker(src, o, rng, counts)),
                             ("driver-kill", lambda o: kill_driver(src, o, rng, counts, signal.SIGKILL)),
                             ("driver-int", lambda o: kill_driver(src, o, rng, counts, signal.SIGINT)),
                             ("driver-term", lambda o: kill_driver(src, o, rng, counts, signal.SIGTERM))):
                out = work / f"out-{name}"
                fn(out)
                _check_batch(src, out, originals, counts)
            catalog_writers(src, work, rng, counts)
        print(f"round {rnd + 1}/{args.rounds}: {dict(sorted(counts.items()))}", flush=True)
    must_be_zero = ["lost", "duplicated", "partial", "originals_changed", "orphans", "corrupt_catalogs",
                    "catalog_items_doubled", "catalog_items_lost", "rerun_errors"]
    result = {"rounds": args.rounds, "seed": args.seed, "seconds": round(time.time() - t0, 1),
              "counts": dict(sorted(counts.items())), "failures": {k: counts[k] for k in must_be_zero}}
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    return 1 if any(counts[k] for k in must_be_zero) else 0


if __name__ == "__main__":
    sys.exit(main())
