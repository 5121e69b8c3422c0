"""removers.runtime: how auto resolves, with the machine's capabilities injected."""
from __future__ import annotations

import numpy as np
import pytest

from hygiene.config import CleanConfig
from removers import runtime
from removers.config import RuntimeConfig
from removers.models import ModelError
from removers.runtime import BF16, FP32, ONNXRUNTIME, OPENVINO, TORCH, Capabilities

BF16_CPU = Capabilities("2026.4.1", True, "test")
AVX2_CPU = Capabilities("2026.4.1", False, "test")
NO_OV = Capabilities(None, True, "test")


@pytest.mark.parametrize("cfg, kind, caps, engine, precision", [
    (RuntimeConfig(), "remover", BF16_CPU, OPENVINO, BF16),  # auto: u2netp's mixed bf16 passes the guard
    (RuntimeConfig(), "remover", AVX2_CPU, ONNXRUNTIME, FP32),
    (RuntimeConfig(), "remover", NO_OV, ONNXRUNTIME, FP32),
    (RuntimeConfig(), "embedder", BF16_CPU, OPENVINO, FP32),
    (RuntimeConfig(), "embedder", NO_OV, TORCH, FP32),
    (RuntimeConfig(precision="bf16"), "remover", BF16_CPU, OPENVINO, BF16),
    (RuntimeConfig(precision="bf16"), "embedder", BF16_CPU, OPENVINO, BF16),
    (RuntimeConfig(precision="bf16"), "remover", AVX2_CPU, ONNXRUNTIME, FP32),  # no native bf16: fallback
    (RuntimeConfig(precision="bf16"), "embedder", AVX2_CPU, OPENVINO, FP32),
    (RuntimeConfig(precision="bf16"), "remover", NO_OV, ONNXRUNTIME, FP32),
    (RuntimeConfig(runtime="onnxruntime", precision="bf16"), "remover", BF16_CPU, ONNXRUNTIME, FP32),
    (RuntimeConfig(runtime="onnxruntime"), "embedder", BF16_CPU, TORCH, FP32),
    (RuntimeConfig(runtime="openvino"), "remover", AVX2_CPU, OPENVINO, FP32),
])
def test_resolve(cfg, kind, caps, engine, precision):
    choice = runtime.resolve(cfg, kind, caps)
    assert (choice.engine, choice.precision) == (engine, precision), choice.reason
    assert choice.reason and "\n" not in choice.reason


def test_auto_bf16_only_for_models_with_a_passing_bf16_path():
    assert runtime.resolve(RuntimeConfig(), "remover", BF16_CPU, "u2netp").precision == BF16
    isnet = runtime.resolve(RuntimeConfig(), "remover", BF16_CPU, "isnet-imgly")
    assert (isnet.engine, isnet.precision) == (OPENVINO, BF16) and "mixed" not in isnet.reason  # plain bf16
    assert runtime.resolve(RuntimeConfig(), "remover", AVX2_CPU, "isnet-imgly").precision == FP32
    other = runtime.resolve(RuntimeConfig(), "remover", BF16_CPU, "u2net")
    assert other.precision == FP32 and "accuracy guard" in other.reason
    # asked for explicitly, bf16 runs for any remover
    assert runtime.resolve(RuntimeConfig(precision="bf16"), "remover", BF16_CPU, "u2net").precision == BF16


def test_fingerprint_resolves_for_the_configured_model(monkeypatch):
    monkeypatch.setattr(runtime, "detect", lambda: BF16_CPU)
    assert '"precision": "bf16"' in CleanConfig(model="u2netp").fingerprint()
    assert '"precision": "bf16"' in CleanConfig(model="isnet-imgly").fingerprint()
    assert '"precision": "fp32"' in CleanConfig(model="u2net").fingerprint()


def test_bf16_fallback_says_why():
    choice = runtime.resolve(RuntimeConfig(precision="bf16"), "remover", AVX2_CPU)
    assert choice.precision == FP32 and "no native bf16" in choice.reason


def test_openvino_missing_is_one_line_model_error():
    with pytest.raises(ModelError, match="pip install openvino") as info:
        runtime.resolve(RuntimeConfig(runtime="openvino"), "remover", NO_OV)
    assert "\n" not in str(info.value)


def test_bad_values_are_refused():
    with pytest.raises(ValueError, match="runtime must be one of"):
        RuntimeConfig(runtime="tensorrt")
    with pytest.raises(ValueError, match="precision must be one of"):
        RuntimeConfig(precision="fp16")


def test_fingerprint_records_what_runs_not_auto():
    fp = CleanConfig().fingerprint()
    choice = runtime.resolve(RuntimeConfig(), "remover")
    assert f'"runtime": "{choice.engine}"' in fp and f'"precision": "{choice.precision}"' in fp
    assert '"auto"' not in fp
    # asking explicitly for what auto picks is the same settings
    same = RuntimeConfig(runtime=choice.engine if choice.engine != TORCH else "onnxruntime",
                         precision=choice.precision, threads=3, spin=False)
    assert CleanConfig(runtime=same).fingerprint() == fp


def test_detect_reads_this_cpu(monkeypatch):
    """On every CPU (AVX2-only ones too): native bf16 exactly when the kernel reports amx_bf16 or
    avx512_bf16; with OpenVINO, its version, and no bf16 when OpenVINO reports no BF16 capability."""
    caps = runtime.detect()
    flags = runtime._cpu_flags()
    bf16 = {"amx_bf16", "avx512_bf16"}
    assert caps.native_bf16 == bool(flags & bf16), (caps, sorted(flags & (bf16 | {"avx2"})))
    assert caps.bf16_source
    if caps.openvino is None:
        return
    import openvino as ov

    assert caps.openvino == ov.get_version().split("-")[0]
    uncached = getattr(runtime.detect, "__wrapped__", runtime.detect)
    monkeypatch.setattr(ov.Core, "get_property", lambda self, device, name: ["FP32", "INT8", "EXPORT_IMPORT"])
    assert uncached().native_bf16 is False  # what OpenVINO says of an AVX2 CPU without bf16
    monkeypatch.setattr(ov.Core, "get_property", lambda self, device, name: ["FP32", "BF16", "INT8"])
    assert uncached().native_bf16 is True


def test_openvino_runner_matches_onnxruntime_calling_convention(tmp_path):
    pytest.importorskip("openvino")
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Neg", ["x"], ["n"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("r", TensorProto.FLOAT, [1, 4]),
         helper.make_tensor_value_info("n", TensorProto.FLOAT, [1, 4])])
    path = tmp_path / "tiny.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    x = np.array([[-1.0, 0.5, -2.0, 3.0]], dtype=np.float32)
    cfg = RuntimeConfig(threads=1, cache_dir=str(tmp_path / "cache"))
    ov = runtime.build_runner(path, runtime.Choice(OPENVINO, FP32, "test"), cfg)
    ort = runtime.build_runner(path, runtime.Choice(ONNXRUNTIME, FP32, "test"), cfg)
    assert [p.name for p in ov.get_inputs()] == [p.name for p in ort.get_inputs()] == ["x"]
    for names in (None, ["n"], ["n", "r"]):
        got, want = ov.run(names, {"x": x}), ort.run(names, {"x": x})
        assert len(got) == len(want)
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w)


def test_limit_threads_caps_opencv_and_blas_in_a_worker_process():
    """What the pool's worker initialiser does, in a fresh process (the caps are process-wide)."""
    import subprocess
    import sys

    code = ("import json, cv2, numpy\n"
            "from threadpoolctl import threadpool_info\n"
            "from removers.runtime import limit_threads\n"
            "limit_threads(1)\n"
            "print(json.dumps([cv2.getNumThreads(), [p['num_threads'] for p in threadpool_info()]]))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    import json

    cv_threads, pools = json.loads(out.strip().splitlines()[-1])
    assert cv_threads == 1
    assert pools and all(n == 1 for n in pools), pools  # numpy's OpenBLAS at least


def test_prepared_ir_is_cached_and_refuses_a_foreign_recipe(tmp_path):
    """removers/ov_ir.py: u2netp's IR is built once per weights/OpenVINO/recipe and reused;
    a recipe naming nodes the file lacks is a one-line error, never a silently plain bf16 model."""
    pytest.importorskip("openvino")
    from removers import models, ov_ir

    try:
        weights = models.verify("u2netp")
    except ModelError:
        pytest.skip("u2netp weights missing: run `shelfready models fetch`")
    ir = ov_ir.prepared_ir("u2netp", weights, tmp_path)
    assert ir.read_text().count('name="precise"') == len(ov_ir.RECIPES["u2netp"].keep_fp32)
    stamp = ir.stat().st_mtime_ns
    assert ov_ir.prepared_ir("u2netp", weights, tmp_path) == ir and ir.stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="not in u2netp.onnx") as info:
        ov_ir.write_ir(weights, ov_ir.Recipe(320, ("Conv_99999",)), tmp_path / "x.xml")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "x.xml").exists() and not list(tmp_path.glob(".x.*"))
