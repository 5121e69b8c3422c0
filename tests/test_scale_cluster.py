"""`shelfready clean --engine ray --ray-address ...` on a real 2-node Ray cluster on this machine.

Two raylets of 1 CPU each (Ray's own ``ray.cluster_utils.Cluster``, the way Ray
tests multi-node behaviour on one machine); the command runs in its own process
as a driver that joins the cluster. The tests share the cluster; the last one
removes the second node.
"""
from __future__ import annotations

import signal
import subprocess

import psutil
import pytest
from scale_helpers import (
    MANIFEST,
    ROOT,
    clean_cmd,
    exactly_once,
    nodes_of,
    outcome,
    photos,
    run,
    wait_for_lines,
)

pytestmark = [pytest.mark.slow, pytest.mark.ray]

ACTOR = "MapWorker(MapBatches(CleanActor))"


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    from engines.cluster import LOCAL_SYSTEM_CONFIG

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "_system_config": LOCAL_SYSTEM_CONFIG})
    second = c.add_node(num_cpus=1)
    c.wait_for_nodes()
    try:
        yield c, second
    finally:
        c.shutdown()


def _cluster_pids(c) -> set[int]:
    """The raylets of this cluster (another Ray on the machine is not ours to touch)."""
    pids = set()
    for node in c.list_all_nodes():
        for infos in node.all_processes.values():
            pids.update(info.process.pid for info in infos)
    return pids


def _actors(c) -> list[psutil.Process]:
    roots = _cluster_pids(c)
    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            title = " ".join(p.info["cmdline"] or [])
            if ACTOR in title and roots & {a.pid for a in p.parents()}:
                found.append(p)
        except psutil.Error:
            pass
    return found


def test_cluster_run_uses_both_nodes_and_equals_the_local_engine(tmp_path, sample_paths, cluster):
    c, _ = cluster
    src = photos(sample_paths, tmp_path / "in", 6)
    local = run(clean_cmd(src, tmp_path / "local", "--workers", "2"))
    assert local.returncode == 0, local.stderr
    ray = run(clean_cmd(src, tmp_path / "ray", "--engine", "ray", "--ray-address", c.address))
    assert ray.returncode == 0, ray.stderr
    assert ray.stdout.split(" (")[0] == local.stdout.split(" (")[0]  # same one-line summary but the time
    assert outcome(tmp_path / "ray") == outcome(tmp_path / "local")
    nodes = nodes_of(tmp_path / "ray")
    assert len(nodes) == 2 and sum(nodes.values()) == 6, nodes  # both nodes cleaned photos


def test_actor_killed_mid_job_is_retried_and_every_photo_recorded_once(tmp_path, sample_paths, cluster):
    c, _ = cluster
    src = photos(sample_paths, tmp_path / "in", 6)
    out = tmp_path / "out"
    proc = subprocess.Popen(clean_cmd(src, out, "--engine", "ray", "--ray-address", c.address), cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_lines(out / MANIFEST, 1, proc)
    victims = _actors(c)
    assert victims, "no actor process found"
    victims[0].send_signal(signal.SIGKILL)
    assert (out / MANIFEST).read_text().count("\n") < 6, "the job ended before the kill: nothing tested"
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    exactly_once(out, sorted(p.name for p in src.iterdir()))


def test_driver_killed_then_rerun_on_the_cluster(tmp_path, sample_paths, cluster):
    c, _ = cluster
    src = photos(sample_paths, tmp_path / "in", 6)
    out = tmp_path / "out"
    cmd = clean_cmd(src, out, "--engine", "ray", "--ray-address", c.address)
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_lines(out / MANIFEST, 2, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    first = (out / MANIFEST).read_text().count("\n")
    again = run(cmd)
    assert again.returncode == 0, again.stderr
    assert f"{first} already done" in again.stdout, again.stdout
    exactly_once(out, sorted(p.name for p in src.iterdir()))


def test_second_node_removed_mid_job_every_photo_once(tmp_path, sample_paths, cluster):
    c, second = cluster
    src = photos(sample_paths, tmp_path / "in", 8)
    out = tmp_path / "out"
    proc = subprocess.Popen(clean_cmd(src, out, "--engine", "ray", "--ray-address", c.address), cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_lines(out / MANIFEST, 2, proc)
    c.remove_node(second)
    assert (out / MANIFEST).read_text().count("\n") < 8, "the job ended before the removal: nothing tested"
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    exactly_once(out, sorted(p.name for p in src.iterdir()))
