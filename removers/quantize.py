"""Build an int8 copy of the u2netp remover, calibrated on shipped photos.

``build_int8(src, dst, calibration_images)`` converts the fp32 ``u2netp.onnx`` to
opset 13 (per-channel DequantizeLinear needs it) and runs onnxruntime's static
quantisation (QDQ, per-channel int8 weights, uint8 activations, MinMax ranges).
Calibration inputs are the given photos plus a few deterministic variants of
each (mirror, centre crop), preprocessed exactly as rembg does for u2netp, so
the calibrated ranges match what the model sees.
No dev data is needed: ``shelfready models build-int8 DIR`` calibrates on the photos in
DIR (``sample_images/`` works).

The build is deterministic for a given onnxruntime version and set of photos,
written atomically, and followed by a small JSON sidecar (``<dst>.json``) with
the file's sha256 and size, which ``verify_int8`` checks before a session
loads the file. Needs the ``onnx`` package (quantisation tooling only).

Measured (bench/model_speed.py, AVX2 CPU without VNNI): no faster than fp32
(CPU time per run 0.97-0.99x) and masks differ (IoU vs fp32 at alpha 128: mean
0.83 on 100 clothing, 0.50 on 50 grocery photos), so it is an opt-in remover,
not the default. Recipes tried: reduce_range (7-bit weights) broke the model
(IoU ~0.47); int8 activations left 73 of 119 convolutions unfused (slower).
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from .models import FETCH_COMMAND, ModelError

BUILD_COMMAND = "shelfready models build-int8 PHOTO_DIR"

MEAN = (0.485, 0.456, 0.406)  # rembg's u2netp normalisation
STD = (0.229, 0.224, 0.225)
SIZE = (320, 320)
OPSET = 13
SIDECAR_SUFFIX = ".json"
FORMAT_VERSION = 1  # bump when the recipe below changes


def rembg_input(image: Image.Image) -> np.ndarray:
    """The (1, 3, 320, 320) float32 tensor rembg's U2netpSession.normalize makes."""
    im = np.asarray(image.convert("RGB").resize(SIZE, Image.Resampling.LANCZOS), dtype=np.float64)
    im = im / max(float(im.max()), 1e-6)
    im = (im - np.array(MEAN)) / np.array(STD)
    return im.transpose(2, 0, 1)[None].astype(np.float32)


def _variants(image: Image.Image) -> list[Image.Image]:
    """The photo, its mirror image and a centre crop (product larger in frame)."""
    w, h = image.size
    crop = image.crop((w // 8, h // 8, w - w // 8, h - h // 8))
    return [image, ImageOps.mirror(image), crop]


def calibration_tensors(paths: list[Path]) -> list[np.ndarray]:
    """Preprocessed calibration inputs, in a fixed order (sorted by file name)."""
    if not paths:
        raise ValueError("build_int8 needs at least one calibration image")
    tensors = []
    for path in sorted(Path(p) for p in paths):
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im).convert("RGB")
        tensors.extend(rembg_input(v) for v in _variants(im))
    return tensors


class _Reader:
    """onnxruntime CalibrationDataReader over a fixed list of tensors."""

    def __init__(self, input_name: str, tensors: list[np.ndarray]):
        self._items = iter([{input_name: t} for t in tensors])

    def get_next(self):
        return next(self._items, None)


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def build_int8(src: Path, dst: Path, calibration_images: list[Path]) -> Path:
    """Quantise ``src`` (fp32 u2netp) to ``dst`` (int8 QDQ) and record its checksum.

    Takes ~110 s wall / ~75 s CPU on a heavily shared 2-core machine for the 12
    sample photos (36 calibration inputs); calibration runs dominate.
    """
    return _build(src, dst, calibration_images, **RECIPE)


RECIPE = dict(fmt="QDQ", activation="QUInt8", weight="QInt8", per_channel=True,
              reduce_range=False, method="MinMax")


def _build(src: Path, dst: Path, calibration_images: list[Path], *, fmt: str, activation: str,
           weight: str, per_channel: bool, reduce_range: bool, method: str,
           cache: Path | None = None) -> Path:
    try:
        import onnx
    except ImportError:
        raise ModelError("building the int8 remover needs the onnx package: pip install onnx") from None
    import onnxruntime as ort
    from onnx import version_converter
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise ModelError(f"cannot build int8 model: {src} not found; run `{FETCH_COMMAND}`")
    tensors = calibration_tensors([Path(p) for p in calibration_images])
    input_name = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"]).get_inputs()[0].name
    dst.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".int8-", dir=dst.parent) as tmp:
        prepped = Path(tmp) / "prepped.onnx"
        opset13 = Path(tmp) / "opset13.onnx"  # per-channel DequantizeLinear needs opset >= 13
        onnx.save(version_converter.convert_version(onnx.load(str(src)), OPSET), str(opset13))
        quant_pre_process(str(opset13), str(prepped), skip_symbolic_shape=False)
        out = Path(tmp) / dst.name
        quantize_static(
            str(prepped), str(out), _Reader(input_name, tensors),
            quant_format=getattr(QuantFormat, fmt), per_channel=per_channel,
            reduce_range=reduce_range,
            activation_type=getattr(QuantType, activation), weight_type=getattr(QuantType, weight),
            calibrate_method=getattr(CalibrationMethod, method),
            calibration_cache_path=str(cache) if cache else None,
        )
        os.replace(out, dst)
    meta = {"format_version": FORMAT_VERSION, "sha256": sha256_of(dst), "size": dst.stat().st_size,
            "source_sha256": sha256_of(src), "onnxruntime": ort.__version__,
            "recipe": {"fmt": fmt, "activation": activation, "weight": weight,
                       "per_channel": per_channel, "reduce_range": reduce_range, "method": method},
            "calibration": [Path(p).name for p in sorted(calibration_images)]}
    side = dst.with_name(dst.name + SIDECAR_SUFFIX)
    fd, tmp_side = tempfile.mkstemp(dir=dst.parent, prefix=f".{side.name}.", suffix=".part")
    with os.fdopen(fd, "w") as fh:
        json.dump(meta, fh, indent=1)
    os.replace(tmp_side, side)
    return dst


def verify_int8(path: Path) -> Path:
    """Return ``path`` if it matches the checksum recorded at build time, else ModelError."""
    path = Path(path)
    side = path.with_name(path.name + SIDECAR_SUFFIX)
    if not path.is_file():
        raise ModelError(f"int8 remover not found at {path}; run `{BUILD_COMMAND}`")
    try:
        meta = json.loads(side.read_text())
        expected, size = meta["sha256"], int(meta["size"])
    except (OSError, ValueError, KeyError, TypeError):
        raise ModelError(f"int8 remover at {path} has no valid checksum record; "
                         f"run `{BUILD_COMMAND}`") from None
    if path.stat().st_size != size or sha256_of(path) != expected:
        raise ModelError(f"int8 remover at {path} is corrupt (checksum mismatch); "
                         f"run `{BUILD_COMMAND}`")
    return path
