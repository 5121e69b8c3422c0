"""Every worker keeps its cores busy: how removers.runtime.plan sets a process's threading, and what a
real 2-worker pool's inference threads are allowed to run on (issue 23: OpenVINO pinned every
worker's threads to the same first core, so two workers shared one core).

No timing here: the speed and the CPU utilisation are measured by bench/clean_throughput.py."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from removers import runtime
from removers.config import RuntimeConfig


def test_openvino_does_not_pin_in_a_process_that_does_not_own_its_cores():
    plan = runtime.plan(1)
    assert plan == runtime.Threading(threads=1, streams=1, pin=False)
    cfg = runtime.ov_config("fp32", plan, None)
    assert cfg["ENABLE_CPU_PINNING"] is False
    assert (cfg["INFERENCE_NUM_THREADS"], cfg["NUM_STREAMS"]) == (1, 1)


def test_all_threads_means_the_cores_this_process_is_given():
    assert runtime.plan(0).threads == len(runtime.given_cpus())


def test_concurrent_calls_get_streams_sharing_the_threads():
    cores = len(runtime.given_cpus())
    plan = runtime.plan(0, concurrent=4)
    assert plan.streams == min(4, cores) and plan.threads * plan.streams <= cores and not plan.pin
    cfg = runtime.ov_config("fp32", plan, None)
    assert cfg["NUM_STREAMS"] == plan.streams and cfg["INFERENCE_NUM_THREADS"] == plan.total_threads


def test_onnxruntime_threads_are_always_explicit():
    """Left at 0, onnxruntime sizes its pool itself and sets each thread's affinity to a core."""
    pytest.importorskip("onnxruntime")
    opts = runtime.ort_options(0, True)
    assert opts.intra_op_num_threads == len(runtime.given_cpus())
    assert runtime.ort_options(1, False).intra_op_num_threads == 1


def test_only_a_process_given_its_own_cpu_set_may_pin():
    """In a fresh process (affinity is process-wide): an inherited CPU set never pins, an owned one
    pins exactly as PIN_OWNED_CPUS says (measured, docs/speed.md)."""
    code = ("import json, os\n"
            "from removers import runtime\n"
            "cpu = min(os.sched_getaffinity(0))\n"
            "os.sched_setaffinity(0, {cpu})\n"  # inherited, as under taskset: shared with siblings
            "inherited = runtime.plan(1).pin\n"
            "runtime.own_cpus({cpu})\n"
            "print(json.dumps([inherited, runtime.plan(1).pin, runtime.plan(0).threads]))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    inherited, owned, threads = json.loads(out.strip().splitlines()[-1])
    assert inherited is False
    assert owned is runtime.PIN_OWNED_CPUS
    assert threads == 1


@pytest.mark.slow
def test_two_pool_workers_do_not_share_one_pinned_core(tmp_path, sample_paths):
    """A real 2-worker pool (engines.batch.run_batch) with the real u2netp on OpenVINO: each worker
    compiles with pinning off (the pool does not give workers their own CPU sets), and no core is
    the only core allowed to inference threads of both workers (read from /proc per thread while
    the remover runs: OpenVINO pins a thread for an inference and restores it after). With the
    old config (OpenVINO's default pinning) both workers' inference threads were confined to core 0."""
    pytest.importorskip("openvino")
    pytest.importorskip("psutil")
    import shutil

    import threads_probe

    from engines.batch import run_batch
    from engines.config import BatchConfig
    from engines.job import BatchJob
    from hygiene.config import CleanConfig

    if len(runtime.given_cpus()) < 2:
        pytest.skip("needs 2 cores")
    src = tmp_path / "in"
    src.mkdir()
    for p in sample_paths[:4]:
        shutil.copy(p, src / p.name)
    rt = RuntimeConfig(runtime="openvino", cache_dir=str(tmp_path / "ov-cache"))
    job = BatchJob(in_dir=src, out_dir=tmp_path / "out", clean=CleanConfig(runtime=rt),
                   batch=BatchConfig(workers=2))
    summary = run_batch(job, progress=False, process=threads_probe.process_and_probe)
    probes = [r["probe"] for r in summary.rows if "probe" in r]
    assert len(probes) == 4, [r.get("error") for r in summary.rows]
    workers = {p["pid"]: p for p in probes}
    assert len(workers) == 2, "both workers ran photos"
    for p in workers.values():
        assert p["pinning"] is False, "compiled with ENABLE_CPU_PINNING on, in a worker that shares its cores"

    def sole_cores(p) -> set[int]:  # cores some thread of this worker was confined to alone while inferring
        return {c[0] for sets in p["threads"].values() for c in sets if len(c) == 1 and len(p["given"]) > 1}

    a, b = workers.values()
    assert not sole_cores(a) & sole_cores(b), (
        f"both workers have inference threads confined to core(s) {sorted(sole_cores(a) & sole_cores(b))}")


def test_the_api_runs_one_openvino_stream_per_inference_thread(tmp_path):
    """The API's workers call one compiled model at once: each gets its own stream, no pinning."""
    pytest.importorskip("openvino")
    import numpy as np
    import onnx
    from onnx import TensorProto, helper

    from api.settings import ApiSettings

    rt = ApiSettings(workers=2).runtime
    assert rt.streams == 2
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    path = tmp_path / "tiny.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    import dataclasses

    runner = runtime.build_runner(path, runtime.Choice(runtime.OPENVINO, runtime.FP32, "test"),
                                  dataclasses.replace(rt, cache_dir=str(tmp_path / "cache")))
    assert int(runner.compiled.get_property("NUM_STREAMS")) == min(2, len(runtime.given_cpus()))
    assert runner.compiled.get_property("ENABLE_CPU_PINNING") is False
    np.testing.assert_array_equal(runner.run(None, {"x": np.array([[-1, 2, -3, 4]], np.float32)})[0],
                                  [[0, 2, 0, 4]])
