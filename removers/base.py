"""What every remover session is built from: checked weights, onnxruntime's options and
providers, and the u2netp family's input and output (rembg's ``U2netpSession`` work,
float32, without the full-size LANCZOS cost). segment.py (one photo a call) and
segment_batch.py (several photos a call) both build on it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from . import models
from . import runtime as runtime_mod
from .config import RuntimeConfig

INT8 = "u2netp-int8"
_MEAN = np.array((0.485, 0.456, 0.406), dtype=np.float32)  # rembg's u2netp normalisation
_STD = np.array((0.229, 0.224, 0.225), dtype=np.float32)
_SIDE = 320
_REDUCING_GAP = 3.0  # PIL: box-reduce first while the image is > 3x the target, then LANCZOS


def int8_path() -> Path:
    """Where ``shelfready models build-int8`` puts the int8 u2netp (beside rembg's models)."""
    return models.rembg_home() / "models" / INT8 / f"{INT8}.onnx"


def local_weights(name: str) -> Path | None:
    """A weight file we can vouch for, or None to let rembg resolve/download it."""
    if name == INT8:
        from .quantize import verify_int8

        return verify_int8(int8_path())  # raises ModelError naming the fetch command
    if name in models.MODELS:
        return models.verify(name)  # raises ModelError with the fix
    candidate = models.rembg_home() / "models" / name / f"{name}.onnx"
    return candidate if candidate.is_file() else None


def session_options(runtime: RuntimeConfig):
    """onnxruntime options: ``runtime.threads`` (0 = all cores) and spin-waiting.

    The API server turns spinning off: its concurrent calls share the cores, and a
    spinning thread would burn a core another call needs."""
    return runtime_mod.ort_options(runtime.threads, runtime.spin)


def providers(runtime: RuntimeConfig) -> list[str]:
    """onnxruntime providers of ``runtime.device``; cuda without the CUDA provider is a one-line error."""
    if runtime.device != "cuda":
        return ["CPUExecutionProvider"]
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        raise models.ModelError("device cuda: this onnxruntime has no CUDA provider; "
                                "pip install shelfready[gpu] on a machine with an NVIDIA GPU")
    return ["CUDAExecutionProvider", "CPUExecutionProvider"]


def u2netp_input(image: Image.Image) -> np.ndarray:
    """rembg's U2netpSession input of an RGB photo, float32 [1, 3, 320, 320], without the
    full-size LANCZOS cost (a reducing-gap downscale)."""
    small = image.resize((_SIDE, _SIDE), Image.Resampling.LANCZOS, reducing_gap=_REDUCING_GAP)
    x = np.asarray(small, dtype=np.float32)
    x *= np.float32(1.0 / max(float(x.max()), 1e-6))
    return np.ascontiguousarray(((x - _MEAN) / _STD).transpose(2, 0, 1)[None])


def u2netp_mask(pred: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The model's first output for one photo (320 x 320) -> uint8 alpha of ``size`` (w, h):
    rembg's min/max stretch, then LANCZOS back to the photo's size."""
    lo, hi = float(pred.min()), float(pred.max())
    if not hi > lo:  # a flat prediction: rembg divides by zero here
        return np.zeros((size[1], size[0]), dtype=np.uint8)
    small_mask = ((pred - lo) * (255.0 / (hi - lo))).astype(np.uint8)
    return np.asarray(Image.fromarray(small_mask, mode="L").resize(size, Image.Resampling.LANCZOS))
