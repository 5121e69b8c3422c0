"""Accuracy guard: every engine/precision path against fp32 on the reference engine.

Removers: mask IoU (alpha >= 128) >= 0.99 per sample photo vs u2netp fp32 on
onnxruntime. Embedder: cosine >= 0.999 per photo vs EfficientNet-Lite0 fp32 on torch.
A bf16 path that ``auto`` may pick (``runtime.AUTO_BF16``: u2netp's mixed bf16 of
removers/ov_ir.py) must meet the same bound; one it does not pick is opt-in and must
stay a working model (looser bound below). On a CPU without native bf16 the bf16
tests say so and the fallback to fp32 is tested, with the capability check injected.
"""
from __future__ import annotations

import pytest
from mask_helpers import mask_iou
from PIL import Image

from removers import runtime, segment
from removers.config import RuntimeConfig

pytestmark = pytest.mark.slow
pytest.importorskip("openvino")

IOU_MIN, COSINE_MIN = 0.99, 0.999
OPT_IN_IOU_MIN, OPT_IN_COSINE_MIN = 0.95, 0.995  # bf16 paths auto does not pick
REF = RuntimeConfig(runtime="onnxruntime", precision="fp32", threads=2)
CAPS = runtime.detect()


@pytest.fixture(scope="module")
def photos(sample_paths):
    return [Image.open(p).convert("RGB") for p in sample_paths]


@pytest.fixture(scope="module")
def reference_masks(photos):
    return [segment.predict_alpha(im, "u2netp", REF) for im in photos]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("ov-cache"))


def _remover_ious(photos, masks, cfg):
    return [mask_iou(m, segment.predict_alpha(im, "u2netp", cfg)) for im, m in zip(photos, masks)]


def test_remover_openvino_fp32_matches(photos, reference_masks, cache):
    cfg = RuntimeConfig(runtime="openvino", precision="fp32", threads=2, cache_dir=cache)
    assert runtime.resolve(cfg, "remover").engine == runtime.OPENVINO
    ious = _remover_ious(photos, reference_masks, cfg)
    assert min(ious) >= IOU_MIN, [round(i, 4) for i in ious]


def test_remover_bf16(photos, reference_masks, cache):
    """The path auto takes on this CPU: u2netp on OpenVINO in bf16, the recipe's nodes in fp32."""
    if not CAPS.native_bf16:
        pytest.skip("this CPU has no native bf16 (no AMX/AVX512_BF16): see the fallback test")
    cfg = RuntimeConfig(threads=2, cache_dir=cache)  # auto | auto
    choice = runtime.resolve(cfg, "remover", model="u2netp")
    assert (choice.engine, choice.precision) == (runtime.OPENVINO, runtime.BF16), choice.reason
    ious = _remover_ious(photos, reference_masks, cfg)
    bound = IOU_MIN if "u2netp" in runtime.AUTO_BF16["remover"] else OPT_IN_IOU_MIN
    assert min(ious) >= bound, [round(i, 4) for i in ious]


def test_remover_mixed_bf16_runs_as_marked(cache):
    """The recipe's nodes really run in fp32 and the convolutions around them in bf16
    (a marking OpenVINO dropped would silently give plain bf16 and its worse masks)."""
    if not CAPS.native_bf16:
        pytest.skip("this CPU has no native bf16 (no AMX/AVX512_BF16): see the fallback test")
    from removers.ov_ir import FP32_TAG, RECIPES

    cfg = RuntimeConfig(runtime="openvino", precision="bf16", threads=2, cache_dir=cache)
    compiled = segment.get_session("u2netp", cfg).inner_session.compiled
    precision, convs = {}, []
    for op in compiled.get_runtime_model().get_ordered_ops():
        rt = op.get_rt_info()
        kind, prec = rt["layerType"].astype(str), rt["runtimePrecision"].astype(str)
        for name in rt["originalLayersNames"].astype(str).split(","):
            precision[name] = prec
        if kind == "Convolution":
            convs.append(prec)
    for name in RECIPES["u2netp"].keep_fp32:
        assert precision[name + FP32_TAG] == "f32", (name, precision[name + FP32_TAG])
    assert convs.count("bf16") == len(convs) - 2 and convs.count("f32") == 2, convs


def test_remover_bf16_falls_back_to_fp32_without_native_bf16(photos, reference_masks, cache, monkeypatch):
    no_bf16 = runtime.Capabilities(CAPS.openvino, False, "injected: no bf16")
    monkeypatch.setattr(runtime, "detect", lambda: no_bf16)
    cfg = RuntimeConfig(runtime="openvino", precision="bf16", threads=2, cache_dir=cache)
    choice = runtime.resolve(cfg, "remover")
    assert choice.precision == runtime.FP32 and "no native bf16" in choice.reason
    session = segment.get_session("u2netp", cfg)
    assert session.inner_session.compiled.get_property("INFERENCE_PRECISION_HINT").to_string() == "f32"
    assert min(_remover_ious(photos, reference_masks, cfg)) >= IOU_MIN


@pytest.fixture(scope="module")
def reference_vectors(photos):
    from search import create_embedder

    emb = create_embedder(threads=2, runtime=RuntimeConfig(runtime="onnxruntime"))
    assert emb.choice.engine == runtime.TORCH
    return emb.embed(photos)


def _cosines(photos, ref, cfg):
    from search import create_embedder

    emb = create_embedder(threads=2, runtime=cfg)
    return (emb.embed(photos) * ref).sum(axis=1), emb


def test_embedder_openvino_fp32_matches(photos, reference_vectors, cache):
    cos, emb = _cosines(photos, reference_vectors,
                        RuntimeConfig(runtime="openvino", precision="fp32", cache_dir=cache))
    assert emb.choice.engine == runtime.OPENVINO
    assert cos.min() >= COSINE_MIN, cos.round(5).tolist()


def test_embedder_bf16(photos, reference_vectors, cache):
    if not CAPS.native_bf16:
        pytest.skip("this CPU has no native bf16 (no AMX/AVX512_BF16): see the fallback test")
    cos, emb = _cosines(photos, reference_vectors,
                        RuntimeConfig(runtime="openvino", precision="bf16", cache_dir=cache))
    assert emb.choice.precision == runtime.BF16
    bound = COSINE_MIN if runtime.AUTO_BF16["embedder"] else OPT_IN_COSINE_MIN
    assert cos.min() >= bound, cos.round(5).tolist()


def test_embedder_bf16_falls_back_without_native_bf16(photos, reference_vectors, cache, monkeypatch):
    monkeypatch.setattr(runtime, "detect", lambda: runtime.Capabilities(CAPS.openvino, False, "injected"))
    cos, emb = _cosines(photos, reference_vectors,
                        RuntimeConfig(runtime="openvino", precision="bf16", cache_dir=cache))
    assert emb.choice.precision == runtime.FP32
    assert cos.min() >= COSINE_MIN, cos.round(5).tolist()


def test_ir_cache_is_reused(photos, cache):
    from search import create_embedder

    cfg = RuntimeConfig(runtime="openvino", precision="fp32", cache_dir=cache)
    create_embedder(threads=2, runtime=cfg)
    from pathlib import Path

    irs = sorted(Path(cache).glob("efficientnet_lite0-*-fp32-224.xml"))
    assert len(irs) == 1 and irs[0].with_suffix(".bin").is_file()
    stamp = irs[0].stat().st_mtime_ns
    create_embedder(threads=2, runtime=cfg)
    assert irs[0].stat().st_mtime_ns == stamp  # not converted again
