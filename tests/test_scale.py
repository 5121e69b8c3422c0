"""`shelfready clean --engine ray` on a local Ray the command starts: missing Ray, driver killed and re-run."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest
from scale_helpers import (
    MANIFEST,
    NODES,
    ROOT,
    clean_cmd,
    exactly_once,
    manifest_rels,
    outcome,
    photos,
    run,
    wait_for_lines,
)

pytestmark = [pytest.mark.slow, pytest.mark.ray]


def test_ray_engine_without_ray_is_one_line_naming_the_extra(tmp_path, sample_paths):
    src = photos(sample_paths, tmp_path / "in", 1)
    no_ray = "import sys; sys.modules['ray'] = None; from cli.main import cli; cli()"
    proc = run([sys.executable, "-c", no_ray, "clean", str(src), str(tmp_path / "out"), "--engine", "ray"])
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "Error: the ray engine needs Ray Data, which is not installed: pip install shelfready[ray]"]
    # the local engine does not need Ray
    proc = run([sys.executable, "-c", no_ray, "clean", str(src), str(tmp_path / "local"), "--size", "128",
                "--quiet"])
    assert proc.returncode == 0, proc.stderr


def _raylets() -> set[int]:
    found = set()
    for p in psutil.process_iter(["name", "cmdline"]):
        try:
            if "raylet" in (p.info["name"] or "") or any("raylet" in c for c in (p.info["cmdline"] or [])[:1]):
                found.add(p.pid)
        except (psutil.Error, TypeError):
            pass
    return found


def test_driver_killed_mid_job_then_rerun_records_every_photo_once(tmp_path, sample_paths):
    """The command's own local Ray: SIGKILL the driver after two photos, run it again."""
    src = photos(sample_paths, tmp_path / "in", 6)
    out = tmp_path / "out"
    before = _raylets()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen(clean_cmd(src, out, "--engine", "ray", "--workers", "2"), cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_lines(out / MANIFEST, 2, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    first = (out / MANIFEST).read_text().count("\n")
    assert first < 6, "the job finished before the driver was killed: nothing tested"
    deadline = time.monotonic() + 30  # the local Ray dies with its driver
    while _raylets() - before and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _raylets() - before, "the killed command's Ray processes outlived it"
    again = subprocess.run(clean_cmd(src, out, "--engine", "ray", "--workers", "2"), cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert f"{first} already done" in again.stdout, again.stdout
    exactly_once(out, sorted(p.name for p in src.iterdir()))


def test_evaluate_with_the_ray_engine_scores_as_the_local_engine(tmp_path, sample_paths):
    """The cleanup runs on Ray into the evaluation cache; the report equals the local engine's."""
    import json
    import shutil

    shop, queries = tmp_path / "shop", tmp_path / "queries"
    shop.mkdir()
    stems = ("hat-2", "shoes-2")
    for p in sample_paths:
        if p.stem in stems:
            (queries / p.stem.split("-")[0]).mkdir(parents=True)
            shutil.copy(p, queries / p.stem.split("-")[0] / p.name)
        else:
            shutil.copy(p, shop / p.name)
    cat = tmp_path / "cat"
    assert run([sys.executable, "-m", "cli", "catalog", "build", str(shop), "--out", str(cat)]).returncode == 0
    reports = {}
    for engine in ("local", "ray"):
        cache = tmp_path / f"cache-{engine}"
        proc = run([sys.executable, "-m", "cli", "evaluate", "--catalog", str(cat), "--queries", str(queries),
                    "--out", str(tmp_path / engine), "--cache-dir", str(cache), "--size", "256", "--quiet",
                    "--workers", "2", "--engine", engine])
        assert proc.returncode == 0, proc.stderr
        reports[engine] = json.loads((tmp_path / engine / "report.json").read_text())
        manifests = list((cache / "clean").glob("*/" + MANIFEST))
        rels = [json.loads(ln)["rel"] for ln in manifests[0].read_text().splitlines()] if manifests else []
        # the queries and the catalog's photos (the report's reasons measure both), each cleaned once
        n_photos = len(stems) + len(list(shop.iterdir()))
        assert len(manifests) == 1 and len(rels) == len(set(rels)) == n_photos, rels
    assert reports["ray"]["metrics"] == reports["local"]["metrics"]
    strip = ("cleaned_path",)
    assert ([{k: v for k, v in r.items() if k not in strip} for r in reports["ray"]["photos"]]
            == [{k: v for k, v in r.items() if k not in strip} for r in reports["local"]["photos"]])


class _NoDriverEmbedding:
    """The driver's embedder, for its name, dim and cache key; embedding with it fails the test."""

    def __init__(self, inner) -> None:
        self.inner = inner

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def embed(self, images):
        raise AssertionError(f"{len(images)} photos embedded on the driver, not on a Ray actor")


def test_evaluate_on_ray_embeds_on_the_actors_and_scores_as_the_local_engine(tmp_path, sample_paths):
    from engines.config import RayConfig
    from hygiene.config import CleanConfig
    from search import create_embedder, datasets
    from search.evaluate import EvalConfig, evaluate
    from search.evaluate_ray import evaluate_on_ray

    queries = [datasets.LabelledImage(p, p.stem.split("-")[0], p.stem) for p in sample_paths
               if p.stem in ("hat-2", "shoes-2")]
    catalog = [datasets.LabelledImage(p, p.stem.split("-")[0], p.stem) for p in sample_paths
               if p.stem not in ("hat-2", "shoes-2")]
    from search.config import ReasonsConfig

    clean = CleanConfig(size=256)
    emb = create_embedder(None, device="cpu")
    # the scored variants only: the reasons' framed views are composed and embedded by the driver
    off = ReasonsConfig(enabled=False)
    local = evaluate(queries, catalog, emb, clean, config=EvalConfig(cache_dir=tmp_path / "local", reasons=off),
                     progress=False)
    ray = evaluate_on_ray(queries, catalog, _NoDriverEmbedding(emb), clean, False,
                          EvalConfig(cache_dir=tmp_path / "ray", reasons=off), RayConfig(num_cpus=2), progress=False)
    assert ray.to_json()["metrics"] == local.to_json()["metrics"]
    # every photo's embedding was written to the cache by the Ray job: raw queries + raw catalog + clean queries
    assert len(list((tmp_path / "ray" / "emb").rglob("*.npy"))) == 2 * len(queries) + len(catalog)


def test_a_photo_that_kills_every_actor_is_given_up_after_task_retries(tmp_path, sample_paths):
    """Ray Data retries a dead actor's task without limit; engines.attempts stops after task_retries + 1."""
    import faulty
    import ray.cloudpickle

    from engines.config import BatchConfig, RayConfig
    from engines.job import BatchJob
    from engines.ray_engine import run_batch_ray
    from hygiene.config import CleanConfig
    from photos.config import OutputConfig

    ray.cloudpickle.register_pickle_by_value(faulty)  # the actors import it from the pickle, not from tests/
    src = photos(sample_paths, tmp_path / "in", 3)
    (src / "poison.jpg").write_bytes((src / sample_paths[0].name).read_bytes())
    out = tmp_path / "out"
    job = BatchJob(src, out, CleanConfig(size=256), OutputConfig(), batch=BatchConfig(workers=2))
    summary = run_batch_ray(job, RayConfig(num_cpus=2, task_retries=1), progress=False,
                            process=faulty.process_or_crash)
    rows = {r["rel"]: r for r in summary.rows}
    assert rows["poison.jpg"]["status"] == "failed"
    assert rows["poison.jpg"]["error"].startswith("lost on Ray: its task failed 2 times"), rows["poison.jpg"]
    good = sorted(p.name for p in src.iterdir() if p.name != "poison.jpg")
    assert sorted(rows) == sorted(good + ["poison.jpg"])
    assert all(rows[n]["status"] in ("cleaned", "needs_review") and (out / n).is_file() for n in good), rows
    assert sorted(manifest_rels(out)) == good  # the lost photo is not recorded: the next run tries it again


def test_batched_remover_on_ray_cleans_as_the_local_engine_one_by_one(tmp_path, sample_paths):
    """The cuda path's batching, on the CPU: Ray actors get four photos a call and predict their masks in
    one model call; every output file and row equals the local engine's, photo by photo at batch 1."""
    from engines.batch import run_batch
    from engines.config import BatchConfig, RayConfig
    from engines.job import BatchJob
    from engines.ray_engine import run_batch_ray
    from hygiene.config import CleanConfig
    from removers.config import RuntimeConfig

    src = photos(sample_paths, tmp_path / "in", 7)
    one = RuntimeConfig(runtime="onnxruntime")  # auto may resolve to OpenVINO here, which does not batch
    four = RuntimeConfig(runtime="onnxruntime", remover_batch=4, cache_dir=str(tmp_path / "cache"))
    run_batch(BatchJob(src, tmp_path / "local", CleanConfig(size=256, runtime=one), batch=BatchConfig(workers=2)),
              progress=False)
    run_batch_ray(BatchJob(src, tmp_path / "ray", CleanConfig(size=256, runtime=four), batch=BatchConfig(workers=2)),
                  RayConfig(num_cpus=2), progress=False)
    ray, local = outcome(tmp_path / "ray"), outcome(tmp_path / "local")
    assert ray["files"] == local["files"] and len(ray["files"]) == 7
    for part in ("manifest", "csv"):
        assert ([{k: v for k, v in r.items() if k != "settings"} for r in ray[part]]
                == [{k: v for k, v in r.items() if k != "settings"} for r in local[part]]), part
    assert ray["summary"]["counts"] == local["summary"]["counts"]
    assert ray["summary"]["settings"]["runtime"].pop("remover_batch") == 4  # batches > 1 are keyed
    assert ray["summary"]["settings"] == local["summary"]["settings"]
    calls = [json.loads(line)["batch"] for line in (tmp_path / "ray" / NODES).read_text().splitlines()]
    assert len(calls) == 7 and max(calls) == 4, calls  # photos per actor call (one model call each)
    assert list((tmp_path / "cache" / "batched").glob("u2netp-batch-*.onnx"))


def test_a_cuda_job_sizes_its_actor_pool_by_the_cluster_gpus(tmp_path, sample_paths):
    """A real local Ray declaring one logical GPU runs a real --device cuda clean job: its actors ask
    for a GPU each, so the pool is one actor (the CPUs would hold four), Ray gives it GPU 0, and it
    does every photo. No GPU here: each photo's step is the real one on the CPU (the actor notes
    what Ray gave it); an actor asking for a GPU no node has would never start and the job would hang."""
    import ray
    import ray.cloudpickle
    import scale_helpers

    from engines.cluster import pool_size
    from engines.config import BatchConfig, RayConfig
    from engines.job import BatchJob
    from engines.ray_engine import run_batch_ray
    from hygiene.config import CleanConfig
    from removers.config import RuntimeConfig

    ray.cloudpickle.register_pickle_by_value(scale_helpers)  # the actors import it from the pickle
    src = photos(sample_paths, tmp_path / "in", 4)
    out = tmp_path / "out"
    assert not ray.is_initialized()
    ray.init(address="local", num_cpus=2, num_gpus=1, include_dashboard=False)
    try:
        cfg = RayConfig(actor_cpus=0.5)
        assert pool_size(cfg, ray, 100) == 4  # CPU actors: 2 / 0.5
        assert pool_size(cfg, ray, 100, gpus=True) == 1  # one GPU
        assert pool_size(RayConfig(actor_cpus=0.5, actor_gpus=0.5), ray, 100, gpus=True) == 2
        assert pool_size(cfg, ray, 3) == 3 and pool_size(RayConfig(actors=3), ray, 100, gpus=True) == 3
        cuda = CleanConfig(size=256, runtime=RuntimeConfig(device="cuda", remover_batch=1))
        summary = run_batch_ray(BatchJob(src, out, cuda, batch=BatchConfig(workers=2)), cfg, progress=False,
                                process=scale_helpers.clean_on_cpu_noting_the_gpu)
    finally:
        ray.shutdown()
    names = sorted(p.name for p in src.iterdir())
    assert sorted(r["rel"] for r in summary.rows) == names
    exactly_once(out, names)
    notes = [json.loads((scale_helpers.gpu_notes(out) / f"{n}.json").read_text()) for n in names]
    assert len({n["actor"] for n in notes}) == 1, notes  # one actor: as many as GPUs
    assert all(n["gpu_ids"] == ["0"] and n["cuda_visible_devices"] == "0" for n in notes), notes
