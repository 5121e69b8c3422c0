"""`shelfready clean s3://... s3://...`: the real CLI against an S3-compatible server on 127.0.0.1.

The server is moto's (``moto.server.ThreadedMotoServer``, the way s3fs tests
itself), started by these tests in this process on a free port of 127.0.0.1;
the CLI finds it the standard way (``AWS_ENDPOINT_URL`` and the AWS key
variables), nothing shelfready-specific. Not tested here: AWS itself, GCS,
MinIO, R2.
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from scale_helpers import outcome

pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ".shelfready-manifest.jsonl"
SIZE = "256"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class S3:
    """A moto S3 server on 127.0.0.1 and a boto3 client of it."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**{k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
                    "AWS_ENDPOINT_URL": self.url, "AWS_ACCESS_KEY_ID": "testing",
                    "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
                    "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
                    # the client library's own retry settings: 2 tries keep a stopped server's errors quick
                    "AWS_MAX_ATTEMPTS": "2", "AWS_RETRY_MODE": "standard"}
        self.server = None
        self.start()
        import boto3

        self.client = boto3.client("s3", endpoint_url=self.url, aws_access_key_id="testing",
                                   aws_secret_access_key="testing", region_name="us-east-1")

    def start(self) -> None:
        self.server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()

    def stop(self) -> None:
        self.server.stop()

    def bucket(self, name: str) -> str:
        self.client.create_bucket(Bucket=name)
        return name

    def upload(self, paths: list[Path], bucket: str, prefix: str) -> None:
        for p in paths:
            self.client.upload_file(str(p), bucket, f"{prefix}/{p.name}")

    def keys(self, bucket: str, prefix: str) -> dict[str, str]:
        """key -> ETag under prefix."""
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/")
        return {o["Key"]: o["ETag"] for page in pages for o in page.get("Contents", [])}

    def download(self, bucket: str, prefix: str, dst: Path) -> Path:
        for key in self.keys(bucket, prefix):
            target = dst / key[len(prefix) + 1:]
            target.parent.mkdir(parents=True, exist_ok=True)
            self.client.download_file(bucket, key, str(target))
        return dst


@pytest.fixture(scope="module")
def s3():
    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # the server's request log
    server = S3()
    try:
        yield server
    finally:
        server.stop()


def clean_cmd(src: str, out: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "cli", "clean", src, out, "--size", SIZE, "--quiet", *extra]


def run(args: list[str], env: dict | None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def exactly_once(s3: S3, bucket: str, prefix: str, names: list[str], tmp: Path) -> Path:
    """Every photo once in the merged manifest and the summary, with its output; no record objects
    left unmerged, no lock left behind."""
    keys = s3.keys(bucket, prefix)
    assert not [k for k in keys if f"{MANIFEST}.d/" in k], "record objects left unmerged"
    assert f"{prefix}/.shelfready-lock" not in keys, "lock left behind"
    out = s3.download(bucket, prefix, tmp)
    rels = [json.loads(line)["rel"] for line in (out / MANIFEST).read_text().splitlines()]
    assert Counter(rels) == Counter(names), rels
    rows = json.loads((out / "summary.json").read_text())["photos"]
    assert Counter(r["rel"] for r in rows) == Counter(names)
    assert all(r["status"] in ("cleaned", "needs_review") for r in rows), rows
    for name in names:
        assert (out / name).is_file(), name
    return out


def wait_for(predicate, proc: subprocess.Popen, what: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        assert proc.poll() is None, f"the run ended before {what}: {proc.returncode}"
        time.sleep(0.1)
    raise AssertionError(f"no {what} after {timeout} s")


def _records(s3: S3, bucket: str, prefix: str) -> int:
    return sum(f"{MANIFEST}.d/" in k for k in s3.keys(bucket, prefix))


def _one_line_error(r: subprocess.CompletedProcess) -> str:
    lines = r.stderr.strip().splitlines()
    assert r.returncode != 0 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    return lines[0]


# ------------------------------------------------------------------ the local engine


@pytest.fixture(scope="module")
def on_disk(tmp_path_factory, sample_paths):
    """The reference: a local-disk run of 4 photos (IN, OUT, its stdout)."""
    base = tmp_path_factory.mktemp("disk")
    local_in = base / "in"
    local_in.mkdir()
    for p in sample_paths[:4]:
        (local_in / p.name).write_bytes(p.read_bytes())
    local = run(clean_cmd(str(local_in), str(base / "local"), "--workers", "2"), None)
    assert local.returncode == 0, local.stderr
    return local_in, base / "local", local.stdout


def test_s3_in_and_out_equal_a_local_disk_run_and_resume(tmp_path, sample_paths, s3, on_disk):
    photos = sample_paths[:4]
    local_in, local_out, local_stdout = on_disk
    bucket = s3.bucket("equal")
    s3.upload(photos, bucket, "shop/in")
    before = s3.keys(bucket, "shop/in")

    remote = run(clean_cmd(f"s3://{bucket}/shop/in", f"s3://{bucket}/shop/out/", "--workers", "2"), s3.env)
    assert remote.returncode == 0, remote.stderr
    assert remote.stdout.split(" (")[0] == local_stdout.split(" (")[0]  # same counts
    assert f"summary: s3://{bucket}/shop/out/summary.json" in remote.stdout
    out = exactly_once(s3, bucket, "shop/out", [p.name for p in photos], tmp_path / "remote")
    assert outcome(out) == outcome(local_out)  # byte-identical outputs, same rows
    rows = [json.loads(line) for line in (out / MANIFEST).read_text().splitlines()]
    assert all(r["sha256"] == hashlib.sha256((local_in / r["rel"]).read_bytes()).hexdigest() for r in rows)
    assert s3.keys(bucket, "shop/in") == before  # originals untouched, nothing added beside them

    again = run(clean_cmd(f"s3://{bucket}/shop/in", f"s3://{bucket}/shop/out"), s3.env)
    assert again.returncode == 0, again.stderr
    assert "4 already done" in again.stdout, again.stdout

    # a changed original is done again, alone (its ETag changed)
    s3.client.put_object(Bucket=bucket, Key=f"shop/in/{photos[0].name}", Body=photos[1].read_bytes())
    third = run(clean_cmd(f"s3://{bucket}/shop/in", f"s3://{bucket}/shop/out"), s3.env)
    assert third.returncode == 0, third.stderr
    assert "1 cleaned" in third.stdout and "3 already done" in third.stdout, third.stdout

    # mixed: a local IN into a URI OUT gives the same outputs too
    mixed = run(clean_cmd(str(local_in), f"s3://{bucket}/mixed", "--workers", "2"), s3.env)
    assert mixed.returncode == 0, mixed.stderr
    got = s3.download(bucket, "mixed", tmp_path / "mixed")
    assert outcome(got)["files"] == outcome(local_out)["files"]


def test_refusals_and_one_line_errors(tmp_path, sample_paths, s3):
    bucket = s3.bucket("refuse")
    s3.upload(sample_paths[:1], bucket, "in")
    before = s3.keys(bucket, "in")
    for out in (f"s3://{bucket}/in", f"s3://{bucket}/in/", f"s3://{bucket}//in", f"s3://{bucket}/in/cleaned"):
        line = _one_line_error(run(clean_cmd(f"s3://{bucket}/in", out), s3.env))
        assert "input prefix" in line and "refusing" in line, line
    assert s3.keys(bucket, "in") == before

    line = _one_line_error(run(clean_cmd("s3://no-such-bucket/in", f"s3://{bucket}/out"), s3.env))
    assert "s3://no-such-bucket/in" in line and "bucket not found" in line, line
    line = _one_line_error(run(clean_cmd(f"s3://{bucket}/in", "s3://no-such-bucket/out"), s3.env))
    assert "s3://no-such-bucket/out" in line and "bucket not found" in line, line
    line = _one_line_error(run(clean_cmd(f"s3://{bucket}/nothing-here", f"s3://{bucket}/out"), s3.env))
    assert "no objects" in line, line

    closed = {**s3.env, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{_free_port()}"}
    line = _one_line_error(run(clean_cmd(f"s3://{bucket}/in", f"s3://{bucket}/out"), closed))
    assert f"s3://{bucket}/" in line and "cannot reach the endpoint" in line, line

    from moto import settings

    settings.INITIAL_NO_AUTH_ACTION_COUNT = 0  # the server now checks keys: ours are unknown to it
    try:
        line = _one_line_error(run(clean_cmd(f"s3://{bucket}/in", f"s3://{bucket}/out"), s3.env))
    finally:
        settings.INITIAL_NO_AUTH_ACTION_COUNT = float("inf")
    assert f"s3://{bucket}/" in line and "credentials refused" in line, line
    assert s3.keys(bucket, "in") == before and not s3.keys(bucket, "out")  # nothing written anywhere


def test_second_run_refused_then_killed_driver_rerun_ends_exactly_once(tmp_path, sample_paths, s3):
    photos = sample_paths[:4]
    bucket = s3.bucket("killed")
    s3.upload(photos, bucket, "in")
    cmd = clean_cmd(f"s3://{bucket}/in", f"s3://{bucket}/out", "--workers", "1")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=s3.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: "out/.shelfready-lock" in s3.keys(bucket, "out"), proc, "the lock object")
        second = run(cmd, s3.env)  # the same OUT while the first run holds it
        line = _one_line_error(second)
        assert "is being written by another shelfready run" in line and f"s3://{bucket}/out" in line, line
        wait_for(lambda: _records(s3, bucket, "out") >= 1, proc, "a record object")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    first = _records(s3, bucket, "out")
    assert first < 4, "the run ended before the kill: nothing tested"
    assert not [k for k in s3.keys(bucket, "out") if k.endswith("summary.json")]
    again = run(cmd, s3.env)  # the killed run's lock is stale (its process is gone): taken over
    assert again.returncode == 0, again.stderr
    assert f"{first} already done" in again.stdout, again.stdout
    exactly_once(s3, bucket, "out", [p.name for p in photos], tmp_path / "out")


def test_lease_refuses_a_live_holder_and_takes_over_a_stale_one(s3, monkeypatch):
    """The lock of an OUT on the store (engines.records.Lease), in this process: a lock renewed by a
    run of another host refuses; once not renewed for the lease time it is taken over, once."""
    from engines import records
    from photos import store

    for key, value in s3.env.items():
        if key.startswith("AWS_"):
            monkeypatch.setenv(key, value)
    bucket = s3.bucket("lease")
    s3.client.put_object(Bucket=bucket, Key="out/.shelfready-lock", Body=json.dumps(
        {"id": "theirs", "host": "another-host", "pid": 1, "renewed": time.time()}).encode())
    mine = records.Lease(f"s3://{bucket}/out", lease_seconds=2.0)
    with pytest.raises(store.LockedError, match="another-host"):
        mine.acquire()
    time.sleep(2.5)  # their lock is not renewed for longer than the lease: stale
    mine.acquire()
    try:
        body = json.loads(s3.client.get_object(Bucket=bucket, Key="out/.shelfready-lock")["Body"].read())
        assert body["id"] == mine.owner["id"]
        with pytest.raises(store.LockedError, match="being written by another shelfready run"):
            records.Lease(f"s3://{bucket}/out", lease_seconds=3600).acquire()
    finally:
        mine.release()
    assert "out/.shelfready-lock" not in s3.keys(bucket, "out")


def test_server_stopped_mid_run_one_line_per_photo_then_resume(tmp_path, sample_paths, s3):
    photos = sample_paths[:4]
    bucket = s3.bucket("stopped")
    s3.upload(photos, bucket, "in")
    cmd = [*clean_cmd(f"s3://{bucket}/in", f"s3://{bucket}/out", "--workers", "1")]
    cmd.remove("--quiet")  # the per-photo error lines go to stderr with the progress bar
    proc = subprocess.Popen(cmd, cwd=ROOT, env=s3.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: _records(s3, bucket, "out") >= 1, proc, "a record object")
    finally:
        s3.stop()
    try:
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        s3.start()  # the same server state, on the same port
    recorded = _records(s3, bucket, "out")
    assert recorded < 4, "the run ended before the server stopped: nothing tested"
    assert proc.returncode == 1 and "Traceback" not in stderr, stderr
    errors = [line.split("error: ", 1)[1] for line in stderr.splitlines() if "error: " in line]
    failed = sorted(e.split(": ", 1)[0] for e in errors)
    assert len(failed) == len(set(failed)) and len(failed) == 4 - recorded, stderr  # one line per photo left
    assert all("cannot reach the endpoint" in e for e in errors), errors
    final = [line for line in stderr.splitlines() if line.startswith("Error: ")]
    assert len(final) == 1 and "cannot write the summary" in final[0], stderr

    again = run(cmd, s3.env)
    assert again.returncode == 0, again.stderr
    assert f"{recorded} already done" in again.stdout, again.stdout
    exactly_once(s3, bucket, "out", [p.name for p in photos], tmp_path / "out")


# ------------------------------------------------------------------ the Ray engine


def _nodes(s3: S3, bucket: str, prefix: str) -> Counter:
    """Node of each photo, from the node logs of the runs (one object per run on a URI OUT)."""
    nodes: Counter = Counter()
    for key in s3.keys(bucket, prefix):
        if "/.shelfready-nodes.jsonl.d/" in key:
            body = s3.client.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
            nodes.update(json.loads(line)["node"] for line in body.splitlines())
    return nodes


@pytest.fixture(scope="module")
def cluster(s3):
    """Two raylets of 1 CPU (ray.cluster_utils.Cluster, as tests/test_scale_cluster.py); their actors
    get the AWS variables the standard way: from the environment the nodes start in."""
    from ray.cluster_utils import Cluster

    from engines.cluster import LOCAL_SYSTEM_CONFIG

    saved = dict(os.environ)
    os.environ.update({k: v for k, v in s3.env.items() if k.startswith("AWS_")})
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "_system_config": LOCAL_SYSTEM_CONFIG})
    c.add_node(num_cpus=1)
    c.wait_for_nodes()
    try:
        yield c
    finally:
        c.shutdown()
        os.environ.clear()
        os.environ.update(saved)


@pytest.mark.slow
@pytest.mark.ray
def test_ray_engine_s3_local_ray_and_2_node_cluster_equal_local_disk(tmp_path, sample_paths, s3, cluster, on_disk):
    photos = sample_paths[:4]
    _, local_out, local_stdout = on_disk
    bucket = s3.bucket("ray-equal")
    s3.upload(photos, bucket, "in")
    expected = outcome(local_out)

    on_cluster = run(clean_cmd(f"s3://{bucket}/in", f"s3://{bucket}/cluster", "--engine", "ray",
                               "--ray-address", cluster.address), s3.env)
    assert on_cluster.returncode == 0, on_cluster.stderr
    assert on_cluster.stdout.split(" (")[0] == local_stdout.split(" (")[0]
    got = exactly_once(s3, bucket, "cluster", [p.name for p in photos], tmp_path / "cluster")
    assert outcome(got) == expected
    nodes = _nodes(s3, bucket, "cluster")
    assert len(nodes) == 2 and sum(nodes.values()) == 4, nodes  # both nodes read and wrote the bucket

    s3.upload(photos[:2], bucket, "in2")  # a local Ray started and stopped by the command
    alone = run(clean_cmd(f"s3://{bucket}/in2", f"s3://{bucket}/alone", "--engine", "ray", "--workers", "1"), s3.env)
    assert alone.returncode == 0, alone.stderr
    got = exactly_once(s3, bucket, "alone", [p.name for p in photos[:2]], tmp_path / "alone")
    assert {k: v for k, v in outcome(got)["files"].items()} == {
        k: v for k, v in expected["files"].items() if k in {p.name for p in photos[:2]}}


@pytest.mark.slow
@pytest.mark.ray
def test_ray_driver_killed_on_the_cluster_then_rerun_exactly_once(tmp_path, sample_paths, s3, cluster):
    photos = sample_paths[:6]
    bucket = s3.bucket("ray-killed")
    s3.upload(photos, bucket, "in")
    cmd = clean_cmd(f"s3://{bucket}/in", f"s3://{bucket}/out", "--engine", "ray", "--ray-address", cluster.address)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=s3.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: _records(s3, bucket, "out") >= 2, proc, "two record objects")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    first = _records(s3, bucket, "out")
    assert first < 6, "the job ended before the kill: nothing tested"
    again = run(cmd, s3.env)
    assert again.returncode == 0, again.stderr
    # a photo whose record was PUT while the driver died may be cleaned again, but recorded once
    assert f"{first} already done" in again.stdout, again.stdout
    exactly_once(s3, bucket, "out", [p.name for p in photos], tmp_path / "out")


# ------------------------------------------------------------------ catalog build


@pytest.mark.slow
@pytest.mark.ray
def test_catalog_build_from_s3_sources_and_s3_shards_equals_local_disk(tmp_path, sample_paths, s3, cluster):
    """Photos in the bucket: the local build, the Ray build (shards written to the bucket) and
    --from-parquet s3:// give the catalog a local-disk build gives (the catalog folder is local)."""
    import numpy as np

    from photos.io import load_image
    from search import Catalog, create_embedder

    bucket = s3.bucket("catalog")
    src = tmp_path / "products"
    for i, p in enumerate(sample_paths[:4]):
        (src / f"class{i % 2}").mkdir(parents=True, exist_ok=True)
        (src / f"class{i % 2}" / p.name).write_bytes(p.read_bytes())
        s3.client.upload_file(str(p), bucket, f"products/class{i % 2}/{p.name}")
    build = [sys.executable, "-m", "cli", "catalog", "build", "--labels-from-folders", "--out"]
    local = run([*build, str(tmp_path / "local"), str(src)], s3.env)
    assert local.returncode == 0, local.stderr
    remote = run([*build, str(tmp_path / "remote"), f"s3://{bucket}/products"], s3.env)
    assert remote.returncode == 0, remote.stderr
    on_ray = run([*build, str(tmp_path / "ray"), f"s3://{bucket}/products", "--engine", "ray", "--quiet",
                  "--ray-address", cluster.address, "--shards", f"s3://{bucket}/shards"], s3.env)
    assert on_ray.returncode == 0, on_ray.stderr[-3000:]
    assert any(k.endswith(".parquet") for k in s3.keys(bucket, "shards"))
    shards = run([sys.executable, "-m", "cli", "catalog", "build", "--from-parquet", f"s3://{bucket}/shards",
                  "--out", str(tmp_path / "parquet")], s3.env)
    assert shards.returncode == 0, shards.stderr

    def items(cat):
        return sorted((Path(it.path).name, it.sku, it.label, it.content_hash) for it in map(cat.get, cat.ids()))

    ref = Catalog.open(tmp_path / "local")
    q = create_embedder(ref.embedder_name).embed([load_image(p) for p in sample_paths[:4]])
    for name in ("remote", "ray", "parquet"):
        cat = Catalog.open(tmp_path / name)
        assert items(cat) == items(ref) and len(cat) == 4, name
        assert all(cat.get(i).path.startswith(f"s3://{bucket}/products/") for i in cat.ids()), name
        for ha, hb in zip(ref.search(q, k=4), cat.search(q, k=4)):
            assert [h.sku for h in ha] == [h.sku for h in hb], name
            assert np.allclose([h.score for h in ha], [h.score for h in hb], atol=1e-4), name

    line = _one_line_error(run([*build, str(tmp_path / "none"), "s3://no-such-bucket/products"], s3.env))
    assert "s3://no-such-bucket/products" in line and "bucket not found" in line, line

    # evaluate: queries in the bucket, on the catalog built from the bucket, score as on local disk
    queries = tmp_path / "queries"
    for i, p in enumerate(sample_paths[:2]):
        (queries / f"class{i % 2}").mkdir(parents=True, exist_ok=True)
        (queries / f"class{i % 2}" / p.name).write_bytes(p.read_bytes())
        s3.client.upload_file(str(p), bucket, f"queries/class{i % 2}/{p.name}")
    evaluate = [sys.executable, "-m", "cli", "evaluate", "--quiet", "--size", SIZE]
    on_disk = run([*evaluate, "--catalog", str(tmp_path / "local"), "--queries", str(queries),
                   "--out", str(tmp_path / "report-local"), "--cache-dir", str(tmp_path / "cache-local")], s3.env)
    assert on_disk.returncode == 0, on_disk.stderr[-3000:]
    in_bucket = run([*evaluate, "--catalog", str(tmp_path / "remote"), "--queries", f"s3://{bucket}/queries",
                     "--out", str(tmp_path / "report-s3"), "--cache-dir", str(tmp_path / "cache-s3")], s3.env)
    assert in_bucket.returncode == 0, in_bucket.stderr[-3000:]
    assert "Traceback" not in in_bucket.stderr
    a = json.loads((tmp_path / "report-local" / "report.json").read_text())
    b = json.loads((tmp_path / "report-s3" / "report.json").read_text())
    assert a["verdict"] == b["verdict"] and a["variants"] == b["variants"]
    assert a["metrics"] and json.dumps(a["metrics"], sort_keys=True) == json.dumps(b["metrics"], sort_keys=True)
