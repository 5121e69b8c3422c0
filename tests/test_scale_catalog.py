"""Catalogs from Parquet shards: `catalog build --engine ray` and `catalog build --from-parquet`."""
from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pytest
from scale_helpers import run

pa = pytest.importorskip("pyarrow", reason="Parquet shards need pyarrow (pip install shelfready[ray])")
pq = pytest.importorskip("pyarrow.parquet", reason="Parquet shards need pyarrow (pip install shelfready[ray])")

from search import Catalog, IndexConfig  # noqa: E402
from search.shard_index import SIDECAR, build_from_parquet  # noqa: E402

DIM = 64


def _write_shards(folder, vectors, hashes=None, per_file=1000, errors=None):
    folder.mkdir(parents=True)
    n = len(vectors)
    for start in range(0, n, per_file):
        stop = min(n, start + per_file)
        vec = [None if errors and errors.get(i) else vectors[i].tolist() for i in range(start, stop)]
        table = pa.table({
            "id": list(range(start, stop)),
            "sku": [f"sku{i}" for i in range(start, stop)],
            "label": [f"label{i % 50}" for i in range(start, stop)],
            "path": [f"/photos/{i}.jpg" for i in range(start, stop)],
            "content_hash": [hashes[i] if hashes else f"h{i}" for i in range(start, stop)],
            "vector": pa.array(vec, type=pa.list_(pa.float32())),
            "error": [errors.get(i) if errors else None for i in range(start, stop)],
        })
        pq.write_table(table, folder / f"part-{start // per_file:05d}.parquet")


def _vectors(n, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((40, DIM)).astype(np.float32)
    x = centres[rng.integers(0, 40, n)] + 0.3 * rng.standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_ivfpq_from_shards_trains_on_a_sample_and_adds_every_row_once(tmp_path):
    n = 6000
    x = _vectors(n)
    hashes = [f"h{i}" for i in range(n)]
    hashes[n - 1] = hashes[5]  # the same photo twice: added once
    _write_shards(tmp_path / "shards", x, hashes, errors={17: "not an image"})
    cfg = IndexConfig(ivfpq_min_train=1000, train_max=3000, pq_m=16, ivf_nlist_max=16)
    built = build_from_parquet(tmp_path / "shards", tmp_path / "cat", embedder="test:random", index_type="ivfpq",
                               config=cfg, chunk_rows=512)
    assert built.index_type == "ivfpq"
    assert built.added == n - 2 and built.skipped == 1
    assert built.errors == ["/photos/17.jpg: not an image"]
    cat = Catalog.open(tmp_path / "cat", config=cfg)
    assert len(cat) == n - 2 and cat.index_type == "ivfpq" and cat.embedder_name == "test:random"
    paths = [cat.get(i).path for i in cat.ids()]
    assert len(set(paths)) == len(paths) == n - 2  # none twice (sample rows were not re-added)
    assert "/photos/17.jpg" not in paths
    assert ("/photos/5.jpg" in paths) != (f"/photos/{n - 1}.jpg" in paths)  # one of the two copies
    # recall@10 (vs exact neighbours) as good as the same index built in memory from all vectors at once
    present = set(paths)
    keep = np.array([i for i in range(n) if f"/photos/{i}.jpg" in present])
    ref = Catalog.create(tmp_path / "ref", "test:random", DIM, "ivfpq", config=cfg, autosave=False)
    ref.add(x[keep], [{"path": f"/photos/{i}.jpg"} for i in keep])
    assert ref.index_type == "ivfpq"
    probe = keep[::53]
    true = keep[np.argsort(-(x[probe] @ x[keep].T), axis=1)[:, :10]]

    def recall(c):
        hits = c.search(x[probe], k=10)
        return np.mean([len({f"/photos/{j}.jpg" for j in t} & {h.path for h in hs}) / 10
                        for t, hs in zip(true, hits)])

    assert recall(cat) >= recall(ref) - 0.03 and recall(cat) > 0.2, (recall(cat), recall(ref))


def _items_of(cat):
    return [(it.id, it.sku, it.label, it.path, it.content_hash) for it in cat.items()]


def test_ivfpq_shard_build_equals_the_in_memory_build(tmp_path):
    """Same rows in the same order: the same ids and items, the same trained index, the same hits."""
    n = 5000
    x = _vectors(n, seed=2)
    _write_shards(tmp_path / "shards", x, per_file=700)
    cfg = IndexConfig(ivfpq_min_train=1000, train_max=2500, pq_m=16, ivf_nlist_max=16)
    build_from_parquet(tmp_path / "shards", tmp_path / "cat", embedder="test:random", index_type="ivfpq",
                       config=cfg, chunk_rows=300)
    ref = Catalog.create(tmp_path / "ref", "test:random", DIM, "ivfpq", config=cfg, autosave=False)
    ref.add(x, [{"sku": f"sku{i}", "label": f"label{i % 50}", "path": f"/photos/{i}.jpg", "content_hash": f"h{i}"}
                for i in range(n)])
    ref.save()
    ref = Catalog.open(tmp_path / "ref", config=cfg)
    cat = Catalog.open(tmp_path / "cat", config=cfg)
    assert cat.header()["index_type"] == ref.header()["index_type"] == "ivfpq"
    assert cat.header()["requested_index_type"] == ref.header()["requested_index_type"]
    assert _items_of(cat) == _items_of(ref)
    got, want = cat.search(x[::37], k=10), ref.search(x[::37], k=10)
    assert [[h.id for h in hs] for hs in got] == [[h.id for h in hs] for hs in want]
    assert np.allclose([[h.score for h in hs] for hs in got], [[h.score for h in hs] for hs in want], atol=1e-5)


def test_a_shard_build_never_holds_all_vectors(tmp_path):
    """Peak memory traced by tracemalloc (numpy's buffers included) of a build over 40 shards stays
    far below the size of all the vectors; the in-memory build of the same vectors does not."""
    import tracemalloc

    n, dim = 24_000, 256
    rng = np.random.default_rng(3)
    x = rng.standard_normal((n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    folder = tmp_path / "shards"
    folder.mkdir()
    for k, start in enumerate(range(0, n, 600)):
        part = x[start:start + 600]
        pq.write_table(pa.table({"path": [f"/p/{i}.jpg" for i in range(start, start + len(part))],
                                 "vector": pa.FixedSizeListArray.from_arrays(pa.array(part.ravel()), dim)}),
                       folder / f"part-{k:03d}.parquet")
    cfg = IndexConfig(ivfpq_min_train=1000, train_max=1500, pq_m=16, ivf_nlist_max=16)
    del part
    size = x.nbytes  # 24.6 MB

    def traced_peak(build) -> int:
        tracemalloc.start()
        try:
            build()
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    shards = traced_peak(lambda: build_from_parquet(folder, tmp_path / "cat", embedder="t", index_type="ivfpq",
                                                    config=cfg, chunk_rows=600))

    def in_memory():
        from search.shard_index import _chunks, shard_files
        vecs = np.concatenate([c["vector"] for f in shard_files(folder) for c in _chunks(f, 600)])
        Catalog.create(tmp_path / "ref", "t", dim, "ivfpq", config=cfg).add(vecs)

    memory = traced_peak(in_memory)
    assert len(Catalog.open(tmp_path / "cat", config=cfg)) == n
    assert memory > size, (memory, size)  # the measure sees the vectors
    assert shards < size / 4, (shards, size)


def test_small_auto_build_is_exact_and_matches_an_in_memory_catalog(tmp_path):
    x = _vectors(300, seed=1)
    _write_shards(tmp_path / "shards", x, per_file=64)
    (tmp_path / "shards" / SIDECAR).write_text(json.dumps({"embedder": "test:random", "dim": DIM}))
    build_from_parquet(tmp_path / "shards", tmp_path / "cat")
    ref = Catalog.create(tmp_path / "ref", "test:random", DIM)
    ref.add(x, [{"sku": f"sku{i}", "label": f"label{i % 50}", "path": f"/photos/{i}.jpg",
                 "content_hash": f"h{i}"} for i in range(len(x))])
    cat = Catalog.open(tmp_path / "cat")
    assert cat.index_type == ref.index_type == "flat"
    got = [[(h.path, round(h.score, 5)) for h in hs] for hs in cat.search(x[:20], k=5)]
    want = [[(h.path, round(h.score, 5)) for h in hs] for hs in ref.search(x[:20], k=5)]
    assert got == want


def _vector_column(layout: str, rows: list):
    """``rows`` (float32 lists, None for a missing vector) as the Arrow column ``layout`` writes:
    Spark's array<float> (list), large_list, pandas'/pyarrow's fixed_size_list, Ray's tensor extension."""
    if layout == "list":
        return pa.array(rows, type=pa.list_(pa.float32()))
    if layout == "large_list":
        return pa.array(rows, type=pa.large_list(pa.float32()))
    if layout == "float64_list":  # Spark's array<double>
        return pa.array(rows, type=pa.list_(pa.float64()))
    fixed = pa.array(rows, type=pa.list_(pa.float32(), DIM))
    if layout == "fixed_size_list":
        return fixed
    ext = pytest.importorskip("ray.data.extensions", reason="Ray's tensor type needs ray (shelfready[ray])")
    full = ext.ArrowTensorArray.from_numpy(np.asarray([r or [0.0] * DIM for r in rows], dtype=np.float32))
    if not any(r is None for r in rows):
        return full
    storage = pa.array(rows, type=full.storage.type)  # Ray's own type, its storage with null rows
    return pa.ExtensionArray.from_storage(full.type, storage)


LAYOUTS = ("list", "large_list", "float64_list", "fixed_size_list", "ray_tensor")


@pytest.mark.parametrize("nulls", [False, True], ids=["full", "with-nulls"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_vectors_are_read_in_every_arrow_layout(tmp_path, layout, nulls):
    x = _vectors(40, seed=3)
    missing = {5, 17} if nulls else set()
    rows = [None if i in missing else x[i].tolist() for i in range(len(x))]
    column = _vector_column(layout, rows)
    if layout == "ray_tensor" and not nulls:
        assert type(column).__name__ == "ArrowTensorArray"  # what `catalog build --engine ray` writes
    folder = tmp_path / "shards"
    folder.mkdir()
    table = pa.table({"id": list(range(len(x))), "sku": [f"sku{i}" for i in range(len(x))],
                      "label": ["l"] * len(x), "path": [f"/p/{i}.jpg" for i in range(len(x))],
                      "content_hash": [f"h{i}" for i in range(len(x))], "vector": column})
    pq.write_table(table, folder / "part-0.parquet")
    built = build_from_parquet(folder, tmp_path / "cat", embedder="test:random", index_type="flat")
    assert built.added == len(x) - len(missing)
    cat = Catalog.open(tmp_path / "cat")
    kept = [i for i in range(len(x)) if i not in missing]
    hits = cat.search(x[kept], k=1)
    assert [h[0].path for h in hits] == [f"/p/{i}.jpg" for i in kept]
    assert np.allclose([h[0].score for h in hits], 1.0, atol=1e-5)  # the very vectors, not a neighbour


def test_vectors_of_different_lengths_are_one_line_errors(tmp_path):
    from engines import EngineError

    folder = tmp_path / "shards"
    folder.mkdir()
    x = _vectors(3)
    column = pa.array([x[0].tolist(), x[1][:10].tolist(), x[2].tolist()], type=pa.list_(pa.float32()))
    pq.write_table(pa.table({"path": ["a", "b", "c"], "vector": column}), folder / "part-0.parquet")
    with pytest.raises(EngineError, match=r"part-0.parquet: vectors of different lengths \(10 to 64\)"):
        build_from_parquet(folder, tmp_path / "cat", embedder="test:random", index_type="flat")


def test_from_parquet_cli_needs_the_embedder_name(tmp_path):
    _write_shards(tmp_path / "shards", _vectors(10))
    proc = run([sys.executable, "-m", "cli", "catalog", "build", "--from-parquet", str(tmp_path / "shards"),
                "--out", str(tmp_path / "cat")])
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"Error: which embedder made the vectors in {tmp_path / 'shards'}? give --embedder "
        f"(no {SIDECAR} there)"]


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.parametrize("broken", [False, True], ids=["good-photos", "one-broken"])
def test_ray_build_equals_the_local_build(tmp_path, sample_paths, broken):
    """With good photos only Ray writes its tensor type (a broken photo's null makes it a plain list)."""
    src = tmp_path / "photos"
    for i, p in enumerate(sample_paths[:6]):  # labels from folders, as README's example
        (src / f"class{i % 3}").mkdir(parents=True, exist_ok=True)
        shutil.copy(p, src / f"class{i % 3}" / p.name)
    if broken:
        (src / "class0" / "broken.jpg").write_bytes(b"not an image")
    args = [sys.executable, "-m", "cli", "catalog", "build", str(src), "--labels-from-folders", "--out"]
    local = run([*args, str(tmp_path / "local")])
    ray = run([*args, str(tmp_path / "ray"), "--engine", "ray", "--quiet"])
    assert local.returncode == ray.returncode == int(broken), ray.stderr[-3000:]  # the broken photo, alike
    assert "Traceback" not in ray.stderr
    assert local.stdout.splitlines()[-1].replace("local", "ray") == ray.stdout.splitlines()[-1]
    assert [ln for ln in ray.stderr.splitlines() if ln.startswith("error:")] == [
        ln for ln in local.stderr.splitlines() if ln.startswith("error:")]
    shards = sorted((tmp_path / "ray-shards").glob("*.parquet"))
    assert shards and json.loads((tmp_path / "ray-shards" / SIDECAR).read_text())["rows"] == 6 + broken
    table = pq.read_table(shards[0])
    assert set(table.column_names) >= {"id", "sku", "label", "path", "content_hash", "vector"}
    a, b = Catalog.open(tmp_path / "local"), Catalog.open(tmp_path / "ray")

    def items(cat):
        return sorted((it.path, it.sku, it.label, it.content_hash) for it in map(cat.get, cat.ids()))

    assert items(a) == items(b) and len(items(a)) == 6
    from photos.io import load_image
    from search import create_embedder

    q = create_embedder(a.embedder_name).embed([load_image(p) for p in sample_paths[:6]])
    for ha, hb in zip(a.search(q, k=6), b.search(q, k=6)):
        assert [h.path for h in ha] == [h.path for h in hb]
        assert np.allclose([h.score for h in ha], [h.score for h in hb], atol=1e-4)


_ITEMS_RSS = r"""
import sys
from pathlib import Path
import numpy as np
from search import Catalog, IndexConfig
def rss():
    return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmRSS"))
out, how, n, dim = Path(sys.argv[1]), sys.argv[2], 150_000, 16
rng = np.random.default_rng(0)
x = rng.standard_normal((n, dim)).astype(np.float32)
x /= np.linalg.norm(x, axis=1, keepdims=True)
cfg = IndexConfig(ivfpq_min_train=1000, train_max=2000, pq_m=4, ivf_nlist_max=16)
cat = Catalog.create_trained(out, "t", dim, x[:2000].copy(), n, "ivfpq", config=cfg, autosave=False)
if how == "memory":  # the same catalog with its item table in memory, as a small build has it
    from search.generations import new_items_db
    cat._state.gen.conn = new_items_db()
items = [{"sku": f"sku-{i:08d}", "path": f"/photos/shelf/{i:08d}.jpg", "content_hash": f"{i:064x}"} for i in range(n)]
before = rss()
for s in range(0, n, 5000):
    cat.add(x[s:s + 5000], items[s:s + 5000])
grown = rss() - before
cat.save()
print(grown, len(Catalog.open(out)))
"""


def test_a_trained_build_keeps_its_item_table_out_of_memory(tmp_path):
    """create_trained (the shard build) fills its item table in a temporary file: adding 150,000
    items grows the process by far less than the same items in an in-memory table do, and the
    saved catalog holds them all."""
    import subprocess

    grown = {}
    for how in ("disk", "memory"):
        proc = subprocess.run([sys.executable, "-c", _ITEMS_RSS, str(tmp_path / how), how], capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        size, count = map(int, proc.stdout.split())
        assert count == 150_000
        grown[how] = size
    assert grown["memory"] > 30 * 2**20, grown  # the measure sees an in-memory table (about 40 MB)
    assert grown["disk"] < grown["memory"] / 3, grown
