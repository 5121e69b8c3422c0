"""Remover registry: model name -> cached rembg session -> alpha mask.

Inference is rembg's own (its session classes' ``predict``), so a mask here is
the mask ``rembg`` gives for the same model file. Only the weight lookup is
ours: known offline models are checked (size + md5) before onnxruntime sees
them, so a truncated file is a one-line ModelError, not an onnxruntime crash.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
from PIL import Image

from . import models

_SESSIONS: dict[tuple[str, int], object] = {}
_LOCK = threading.Lock()


def available_removers() -> list[str]:
    """Every name rembg knows; `u2netp` is the offline default."""
    from rembg.sessions import sessions_names

    return list(sessions_names)


def _session_class(name: str):
    from rembg.sessions import sessions_class

    for cls in sessions_class:
        if cls.name() == name:
            return cls
    raise models.ModelError(
        f"unknown remover {name!r}; known: {', '.join(available_removers())}"
    )


def _local_weights(name: str) -> Path | None:
    """A weight file we can vouch for, or None to let rembg resolve/download it."""
    if name in models.MODELS:
        return models.verify(name)  # raises ModelError with the fix
    candidate = models.rembg_home() / "models" / name / f"{name}.onnx"
    return candidate if candidate.is_file() else None


def _threads() -> int:
    env = os.environ.get("SHELFREADY_THREADS")
    return int(env) if env else 0  # 0 = onnxruntime decides (all cores)


def get_session(name: str, threads: int | None = None):
    """One session per (model, thread count) per process, created on first use."""
    threads = _threads() if threads is None else threads
    key = (name, threads)
    with _LOCK:
        session = _SESSIONS.get(key)
        if session is not None:
            return session
        import onnxruntime as ort

        base = _session_class(name)
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        path = _local_weights(name)
        try:
            if path is not None:
                cls = type(f"Local{base.__name__}", (base,),
                           {"download_models": classmethod(lambda c, *a, **k: str(path))})
                session = cls(name, opts, providers=["CPUExecutionProvider"])
            else:
                session = base(name, opts, providers=["CPUExecutionProvider"])
        except models.ModelError:
            raise
        except Exception as exc:  # onnxruntime / download failure -> one line
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            hint = f"; run `{models.FETCH_COMMAND}`" if name in models.MODELS else (
                f"; put {name}.onnx in {models.rembg_home() / 'models' / name} or go online")
            raise models.ModelError(f"cannot load remover {name!r}: {first}{hint}") from None
        _SESSIONS[key] = session
        return session


def predict_alpha(image: Image.Image, model: str, threads: int | None = None) -> np.ndarray:
    """Alpha mask (uint8, HxW, 255 = product) of an RGB image, as rembg computes it."""
    session = get_session(model, threads)
    masks = session.predict(image.convert("RGB"))
    mask = masks[0]
    for extra in masks[1:]:  # models that return several masks: union
        mask = Image.fromarray(np.maximum(np.asarray(mask), np.asarray(extra)))
    alpha = np.asarray(mask.convert("L"), dtype=np.uint8)
    if alpha.shape != (image.height, image.width):
        alpha = np.asarray(mask.convert("L").resize(image.size, Image.Resampling.LANCZOS))
    return alpha
