"""A catalog shared by processes: writers in real processes, SIGKILLs at random and at chosen
points, readers following new generations, the write lock's timeout, duplicates, item text,
and catalogs written by the previous code. Seeded synthetic vectors (the embedder is not the point).

This module doubles as the writer process: ``python -c "...; writer_main(argv)"``.
"""
from __future__ import annotations

import functools
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import faiss
import numpy as np
import pytest

from search import Catalog, IndexConfig
from search.catalog import CatalogBusy
from search.config import StoreConfig
from search.items import check_text, printable
from search.locks import pinned

D = 128
OWN = 8  # items of one writer in one batch (all or none of them may be in the catalog)
CFG = IndexConfig()
HERE = Path(__file__).resolve().parent
FIXTURE = HERE / "data" / "catalog_format1"


# ---------------------------------------------------------------- the writer process

@functools.lru_cache(maxsize=None)
def batch(w: int, b: int) -> tuple[np.ndarray, list[dict]]:
    """Batch ``b`` of writer ``w``: OWN vectors of its own and one every writer shares."""
    own = np.random.default_rng([w, b]).standard_normal((OWN, D))
    shared = np.random.default_rng([1000, b]).standard_normal((1, D))
    x = np.concatenate([own, shared]).astype(np.float32)
    items = [{"sku": f"{w}-{b}-{i}", "content_hash": f"h{w}-{b}-{i}"} for i in range(OWN)]
    items.append({"sku": f"s-{b}", "content_hash": f"shared-{b}"})
    return x / np.linalg.norm(x, axis=1, keepdims=True), items


def expected_vector(sku: str) -> np.ndarray:
    if sku.startswith("base-"):
        v = base_vectors(4000)[int(sku[5:])]
    elif sku.startswith("s-"):
        v = batch(0, int(sku[2:]))[0][OWN]
    else:
        w, b, i = map(int, sku.split("-"))
        v = batch(w, b)[0][i]
    return v


@functools.lru_cache(maxsize=None)
def base_vectors(n: int) -> np.ndarray:
    """The first ``n`` of one seeded sequence (rows do not depend on ``n``)."""
    x = np.random.default_rng(2000).standard_normal((n, D)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def writer_main(argv: list[str]) -> None:
    """folder w batches mode [die_at]: add batches, one line of JSON per batch once it is saved."""
    folder, w, n_batches, mode = Path(argv[0]), int(argv[1]), int(argv[2]), argv[3]
    die_at = argv[4] if len(argv) > 4 else ""
    pause = 0.05 if n_batches < 0 else 0.0  # the endless writer leaves the lock free at times
    faiss.omp_set_num_threads(1)
    if die_at:
        _arm(folder, die_at)
    cat = Catalog.open(folder, config=CFG)
    print("ready", flush=True)
    b = 0
    while b < n_batches or (n_batches < 0 and not (folder.parent / "stop").exists()):
        if mode == "reopen":  # the reproduction: Catalog.open + add in a loop
            cat = Catalog.open(folder, config=CFG)
        x, items = batch(w, b)
        print(json.dumps([b, cat.add(x, items)]), flush=True)
        b += 1
        time.sleep(pause)


def _arm(folder: Path, die_at: str) -> None:
    """SIGKILL this process at one chosen point of the next save."""
    import search.generations as g

    def die(*_a, **_k):
        os.kill(os.getpid(), signal.SIGKILL)

    if die_at == "before_switch":  # generation written, header not replaced yet
        g.os = types.SimpleNamespace(**{**vars(os), "replace": die})
    elif die_at == "after_switch":  # header replaced and fsynced, old generations not deleted
        real = g._fsync_dir
        g._fsync_dir = lambda p: (real(p), die() if Path(p) == folder else None)
    elif die_at == "mid_cleanup":  # an old generation half deleted
        def half(path, *a, **k):
            files = sorted(Path(path).iterdir())
            files[0].unlink()
            die()
        g.shutil = types.SimpleNamespace(rmtree=half)


def spawn(folder: Path, w: int, n_batches: int, mode: str, die_at: str = "") -> subprocess.Popen:
    code = (f"import sys; sys.path.insert(0, {str(HERE)!r}); "
            "from test_catalog_sharing import writer_main; writer_main(sys.argv[1:])")
    return subprocess.Popen([sys.executable, "-c", code, str(folder), str(w), str(n_batches), mode, die_at],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def committed(lines: str) -> dict[int, list[int]]:
    """batch -> ids, for every batch the writer saw saved."""
    out = {}
    for ln in lines.splitlines():
        if ln.startswith("["):
            b, ids = json.loads(ln)
            out[b] = ids
    return out


# ---------------------------------------------------------------- checking a catalog

def check_consistent(folder: Path) -> dict[str, int]:
    """Open the catalog (it must open) and check it is one consistent set: sku -> id.

    Writers may save while this runs, and each Catalog call reads the latest generation, so
    the checks look at the one generation ``open`` loaded (``Catalog._state``).
    """
    snap = Catalog.open(folder, config=CFG)._state
    ids = snap.ids()
    assert len(ids) == len(set(ids)) == snap.count
    items = [snap.get(i) for i in ids]
    hashes = [it.content_hash for it in items]
    assert len(set(hashes)) == len(hashes), "a photo is in the catalog twice"
    assert snap.header["next_id"] > max(ids, default=-1)
    groups: dict[tuple, int] = {}
    for it in items:
        if it.sku[0].isdigit():
            w, b, _ = it.sku.split("-")
            groups[(w, b)] = groups.get((w, b), 0) + 1
    assert set(groups.values()) <= {OWN}, f"a batch was saved in part: {groups}"
    if items:  # every vector is stored under its own id and metadata
        want = np.stack([expected_vector(it.sku) for it in items])
        hits = snap.search(want, 1)
        assert [row[0].id for row in hits] == ids
        assert min(row[0].score for row in hits) > 0.999
    return {it.sku: it.id for it in items}


def new_catalog(folder: Path, n_base: int = 0) -> Catalog:
    cat = Catalog.create(folder, "test:emb", D, "flat", config=CFG)
    if n_base:
        cat.add(base_vectors(n_base), [{"sku": f"base-{i}", "content_hash": f"base-{i}"} for i in range(n_base)])
    return cat


# ---------------------------------------------------------------- writers in processes

def test_writers_in_processes_lose_nothing_and_share_ids(tmp_path):
    """3 processes (2 reopening the catalog before each add, 1 keeping it open) and this one."""
    folder = tmp_path / "c"
    mine = new_catalog(folder)
    n = 12
    procs = [spawn(folder, w, n, mode) for w, mode in enumerate(["reopen", "keep", "reopen"])]
    for b in range(n):  # this process writes too, through an object opened before the others ran
        x, items = batch(9, b)
        mine.add(x, items)
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
    reported = [committed(out) for out, _ in outs]
    assert all(len(r) == n for r in reported)
    skus = check_consistent(folder)
    assert len(skus) == (len(procs) + 1) * n * OWN + n  # each shared photo exactly once
    for w, r in enumerate(reported):
        for b, ids in r.items():
            assert ids[:OWN] == [skus[f"{w}-{b}-{i}"] for i in range(OWN)]
            assert ids[OWN] == skus[f"s-{b}"]  # every writer was given the one id of the shared photo
    assert sorted(skus.values()) == list(range(len(skus)))  # ids never given twice, none skipped
    assert len(mine) == len(skus) and mine.search(batch(0, 3)[0][:1], 1)[0][0].id == skus["0-3-0"]


def test_sigkill_of_writers_at_random_points_never_breaks_the_catalog(tmp_path):
    """20 writers killed at random moments while another writes on; after each kill the catalog
    opens, is one consistent set and holds every batch a writer saw saved."""
    folder = tmp_path / "c"
    new_catalog(folder, n_base=4000).save()
    survivor = spawn(folder, 0, -1, "reopen")
    rng = random.Random(7)
    saved: dict[tuple[int, int], list[int]] = {}
    try:
        assert survivor.stdout.readline().strip() == "ready"
        for k in range(1, 21):
            victim = spawn(folder, k, 10_000, "keep" if k % 2 else "reopen")
            assert victim.stdout.readline().strip() == "ready", victim.stderr.read()
            time.sleep(rng.uniform(0.0, 0.6))
            victim.send_signal(signal.SIGKILL)
            out, _ = victim.communicate(timeout=60)
            assert victim.returncode == -signal.SIGKILL
            saved.update({(k, b): ids for b, ids in committed(out).items()})
            print(f"kill {k}: victim saved {len(committed(out))} batches")
            skus = check_consistent(folder)
            for (w, b), ids in saved.items():
                assert ids[:OWN] == [skus[f"{w}-{b}-{i}"] for i in range(OWN)], "a saved batch was lost"
    finally:
        (tmp_path / "stop").touch()
        out, err = survivor.communicate(timeout=600)
    assert survivor.returncode == 0, err
    skus = check_consistent(folder)
    print(f"{len(skus)} items, survivor saved {len(committed(out))} batches")
    for b, ids in committed(out).items():
        assert ids[:OWN] == [skus[f"0-{b}-{i}"] for i in range(OWN)]
    assert sum(1 for s in skus if s.startswith("base-")) == 4000
    assert any(w > 0 for w, _ in saved), "no victim ever saved a batch: kills came too early"
    Catalog.open(folder, config=CFG).add(*batch(99, 0))  # a later writer clears what the dead left
    assert len(list(folder.glob("gen-*"))) == 1 and not list(folder.glob(".catalog.json.*.tmp"))


@pytest.mark.parametrize("die_at, saved", [("before_switch", False), ("after_switch", True),
                                           ("mid_cleanup", True)])
def test_sigkill_at_each_step_of_a_save(tmp_path, die_at, saved):
    folder = tmp_path / "c"
    new_catalog(folder, n_base=50)
    proc = spawn(folder, 1, 1, "keep", die_at)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL, err
    assert committed(out) == {}  # it died before add returned
    skus = check_consistent(folder)
    assert ("1-0-0" in skus) is saved and len(skus) == 50 + saved * (OWN + 1)
    assert len(list(folder.glob("gen-*"))) == 2  # the dead writer's leftover (new or old generation)
    cat = Catalog.open(folder, config=CFG, store=StoreConfig(lock_timeout=5))  # its lock died with it
    cat.add(*batch(2, 0))
    assert len(list(folder.glob("gen-*"))) == 1 and not list(folder.glob(".catalog.json.*.tmp"))
    assert len(check_consistent(folder)) == len(skus) + OWN + (not saved)


# ---------------------------------------------------------------- readers, lock, generations

def test_readers_follow_new_generations_and_pinned_ones_are_kept(tmp_path):
    folder = tmp_path / "c"
    new_catalog(folder, n_base=10)
    reader = Catalog.open(folder, config=CFG)
    proc = spawn(folder, 3, 2, "keep")
    assert proc.communicate(timeout=120)[0].count("\n") == 3 and proc.returncode == 0
    assert len(reader) == 10 + 2 * (OWN + 1)  # no reopen: the next call reads the new generation
    assert reader.search(batch(3, 1)[0][:1], 1)[0][0].sku == "3-1-0"
    current = folder / reader.header()["generation"]
    with pinned(current) as ok:  # a reader loading this generation right now
        assert ok
        Catalog.open(folder, config=CFG).add(*batch(4, 0))
        assert current.is_dir()  # not deleted under the reader
    Catalog.open(folder, config=CFG).add(*batch(4, 1))
    assert not current.exists() and len(list(folder.glob("gen-*"))) == 1


def test_a_busy_catalog_times_out_with_one_line_and_searches_go_on(tmp_path):
    folder = tmp_path / "c"
    new_catalog(folder, n_base=10)
    holder = Catalog.open(folder, config=CFG, autosave=False)
    holder.add(*batch(1, 0))  # takes the write lock until save()
    other = Catalog.open(folder, config=CFG, store=StoreConfig(lock_timeout=0.3, lock_poll=0.02))
    t0 = time.monotonic()
    with pytest.raises(CatalogBusy) as info:
        other.add(*batch(2, 0))
    assert 0.3 <= time.monotonic() - t0 < 30
    msg = str(info.value)
    assert "\n" not in msg and "is busy" in msg and "0.3 s" in msg
    assert len(other) == 10 and other.search(base_vectors(1), 1)[0][0].sku == "base-0"
    holder.save()
    assert other.add(*batch(2, 0))[0] == 10 + OWN + 1  # after the holder's items, at the latest save
    assert len(check_consistent(folder)) == 10 + 2 * (OWN + 1) - 1  # shared-0 once
    holder.add(*batch(3, 0))
    holder.close()  # unsaved changes dropped, lock released
    assert len(Catalog.open(folder)) == 10 + 2 * (OWN + 1) - 1
    other.add(*batch(3, 0))


# ---------------------------------------------------------------- duplicates

def test_known_content_hash_gives_the_existing_id(tmp_path):
    cat = new_catalog(tmp_path / "c")
    x = base_vectors(4)
    first = cat.insert(x[:2], [{"sku": "a", "content_hash": "A"}, {"sku": "b", "content_hash": "B"}])
    assert first.ids == [0, 1] and first.new == [True, True]
    again = cat.insert(x[1:4], [{"sku": "b2", "content_hash": "B"}, {"sku": "c", "content_hash": "C"},
                                {"sku": "c2", "content_hash": "C"}])
    assert again.ids == [1, 2, 2] and again.new == [False, True, False] and again.n_new == 1
    assert cat.get(1).sku == "b" and len(cat) == 3  # the first item stays as it was
    assert cat.add(x[:2]) == [3, 4]  # items without a hash are always new
    gen = cat.header()["generation"]
    assert cat.add(x[:1], [{"content_hash": "A"}]) == [0] and cat.header()["generation"] == gen  # no save
    cat.remove([0])
    assert cat.add(x[:1], [{"sku": "a", "content_hash": "A"}]) == [5]  # removed: added anew, new id


# ---------------------------------------------------------------- item text

BAD = ["\x00", "a\x1b[31mred", "two\r\nlines", "tab\there", "del\x7f", "csi\x9b2J", "nel\x85", "bad\udcff"]
GOOD = ["Écharpe d'été 🧣", "靴-42", "עברית", "e\u0301", "👩\u200d👩\u200d👧", "a b"]


@pytest.mark.parametrize("text", BAD)
def test_control_characters_are_refused_in_one_line(tmp_path, text):
    cat = new_catalog(tmp_path / "c")
    for field in ("sku", "label"):
        with pytest.raises(ValueError) as info:
            cat.add(base_vectors(1), [{field: text}])
        msg = str(info.value)
        assert msg.startswith(f"{field} contains") and printable(text) in msg
        assert msg.isprintable() and "\n" not in msg
    assert len(Catalog.open(tmp_path / "c")) == 0


def test_valid_unicode_is_kept_as_is(tmp_path):
    cat = new_catalog(tmp_path / "c")
    ids = cat.add(base_vectors(len(GOOD)), [{"sku": t, "label": t[::-1]} for t in GOOD])
    again = Catalog.open(tmp_path / "c")
    assert [again.get(i).sku for i in ids] == GOOD and [again.get(i).label for i in ids] == [t[::-1] for t in GOOD]
    assert [check_text("sku", t) for t in GOOD] == GOOD and [printable(t) for t in GOOD] == GOOD
    assert printable("a\x1b[0m\r\n\x00\x9b\udcff") == "a\\x1b[0m\\r\\n\\x00\\x9b\\udcff"


# ---------------------------------------------------------------- catalogs written by the previous code

def test_a_format1_catalog_from_the_previous_code_opens_and_grows(tmp_path):
    folder = tmp_path / "old"
    shutil.copytree(FIXTURE, folder)
    cat = Catalog.open(folder)
    assert [it.id for it in cat.items()] == cat.ids() == [0, 1, 3] and len(cat) == 3
    assert cat.embedder_name == "cnn:efficientnet_lite0"
    assert cat.get(0).sku == "\x1b[31mRED\x1b[0m" and cat.get(1).label == "chapeau été 👒"  # read as stored
    vecs = cat._index.index.reconstruct_n(0, 3)
    assert [row[0].id for row in cat.search(vecs, 1)] == [0, 1, 3]
    assert cat.add(vecs[:1], [{"content_hash": cat.get(0).content_hash}]) == [0]  # known photo
    new = np.roll(vecs[:1], 1, axis=1)
    assert cat.add(new / np.linalg.norm(new), [{"sku": "next"}]) == [4]  # next_id carried on
    assert Catalog.open(folder).ids() == [0, 1, 3, 4] and (folder / ".lock").exists()
