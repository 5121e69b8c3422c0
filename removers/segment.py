"""Remover registry: model name -> cached rembg session -> alpha mask.

Inference is rembg's own session classes, so a mask here is the mask ``rembg``
gives for the same model file. Two things are ours:

* the weight lookup: known offline models are checked (size + md5, or the
  checksum recorded when the int8 model was built) before onnxruntime sees
  them, so a missing or truncated file is a one-line ModelError, not a crash;
* for the u2netp family, the per-image work around ``session.run`` (rembg's
  ``normalize`` + ``predict``) is done in float32, with a reducing-gap LANCZOS
  downscale and only the first model output fetched. The masks stay equal to
  rembg's own ``remove(..., only_mask=True)`` (IoU >= 0.99 at alpha 128, tested);
  it matters for large photos (a 12 MP photo: ~0.5 s of rembg's pre/post work).

``isnet-imgly`` (opt-in, AGPL-3.0 weights from an npm package) runs through
removers/isnet.py with the pre/post-processing of the package that made it.

``u2netp-int8`` is u2netp statically quantised to int8 (removers/quantize.py),
built locally by ``shelfready models build-int8 PHOTO_DIR``.
"""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
from PIL import Image

from photos.keys import one_line

from . import isnet, models
from . import runtime as runtime_mod
from .base import INT8, int8_path, u2netp_input, u2netp_mask  # noqa: F401 - segment.int8_path as before
from .base import local_weights as _local_weights
from .base import providers as _providers
from .base import session_options as _options
from .config import CASCADE, CASCADE_PAIR, RuntimeConfig

_U2NETP_FAMILY = ("u2netp", INT8)

_SESSIONS: dict[tuple, object] = {}
_LOCK = threading.Lock()


def available_removers() -> list[str]:
    """Every name rembg knows, the locally built int8 u2netp and the npm-shipped IS-Net."""
    from rembg.sessions import sessions_names

    return list(sessions_names) + [INT8, isnet.NAME]


def _session_class(name: str):
    from rembg.sessions import sessions_class

    lookup = "u2netp" if name == INT8 else name
    for cls in sessions_class:
        if cls.name() == lookup:
            return cls
    raise models.ModelError(
        f"unknown remover {name!r}; known: {', '.join(available_removers())}"
    )


def _openvino_class(base, path: Path | None, choice, runtime: RuntimeConfig):
    """``base`` whose inner session is an OpenVINO runner instead of onnxruntime's.

    rembg's sessions only call ``inner_session.get_inputs()`` and ``.run()``, which the
    runner provides, so rembg's pre/post-processing runs unchanged."""

    def __init__(self, model_name, *args, **kwargs):
        self.model_name = model_name
        weights = path if path is not None else Path(base.download_models(*args, **kwargs))
        self.inner_session = runtime_mod.build_runner(weights, choice, runtime, model_name)

    return type(f"OpenVino{base.__name__}", (base,), {"__init__": __init__})


def get_session(name: str, runtime: RuntimeConfig = RuntimeConfig()):
    """One session per (model, runtime settings, model folder) per process, created on first use.

    ``session.inner_session`` is onnxruntime's session or an OpenVINO runner (see
    removers/runtime.py), as ``runtime`` resolves on this machine; for isnet-imgly the
    session itself is one of the two (``isnet.predict`` calls its ``run``). ``cascade``
    loads both of the cascade's removers (so a server checks both weights at start-up)
    and returns the first one's session."""
    if name == CASCADE:
        fast, strong = CASCADE_PAIR
        get_session(strong, runtime)
        return get_session(fast, runtime)
    choice = runtime_mod.resolve(runtime, "remover", model=name)
    key = (name, runtime, choice, str(models.rembg_home()))
    with _LOCK:
        session = _SESSIONS.get(key)
        if session is not None:
            return session
        base = None if name == isnet.NAME else _session_class(name)
        path = _local_weights(name)
        try:
            if name == isnet.NAME and choice.engine == runtime_mod.OPENVINO:
                cache = Path(runtime.cache_dir) if runtime.cache_dir else runtime_mod.default_cache_dir()
                session = runtime_mod.build_runner(isnet.graph_file(path, runtime.isnet_side, cache), choice, runtime)
            elif name == isnet.NAME:
                session = isnet.load_session(path, runtime.isnet_side, _options(runtime), _providers(runtime))
            elif choice.engine == runtime_mod.OPENVINO:
                session = _openvino_class(base, path, choice, runtime)(name)
            elif path is not None:
                attrs = {"download_models": classmethod(lambda c, *a, **k: str(path))}
                if name == INT8:
                    attrs["name"] = classmethod(lambda c, *a, **k: INT8)
                cls = type(f"Local{base.__name__}", (base,), attrs)
                session = cls(name, _options(runtime), providers=_providers(runtime))
            else:
                session = base(name, _options(runtime), providers=_providers(runtime))
        except models.ModelError:
            raise
        except Exception as exc:  # onnxruntime / openvino / download failure -> one line
            first = one_line(exc)
            hint = f"; run `{models.fetch_command(name)}`" if name in models.MODELS or name == INT8 else (
                f"; put {name}.onnx in {models.rembg_home() / 'models' / name} or go online")
            raise models.ModelError(f"cannot load remover {name!r} on {choice.engine}: {first}{hint}") from None
        _SESSIONS[key] = session
        return session


def release(name: str | None = None) -> int:
    """Drop this process's cached sessions of ``name`` (all when None); returns how many.

    A session holds its weights and its runtime's memory arena (IS-Net at 1024 px:
    over a GB); a bench that walks through several models or sides frees each one."""
    import gc

    with _LOCK:
        keys = [k for k in _SESSIONS if name is None or k[0] == name]
        for k in keys:
            del _SESSIONS[k]
    gc.collect()
    return len(keys)


def _u2netp_alpha(session, image: Image.Image) -> np.ndarray:
    """rembg's U2netpSession.predict, float32 and without the full-size LANCZOS cost."""
    inner = session.inner_session
    first = inner.get_outputs()[0].name
    pred = inner.run([first], {inner.get_inputs()[0].name: u2netp_input(image)})[0][0, 0]
    return u2netp_mask(pred, image.size)


def predict_alpha(image: Image.Image, model: str, runtime: RuntimeConfig = RuntimeConfig()) -> np.ndarray:
    """Alpha mask (uint8, HxW, 255 = product) of an RGB image, as rembg computes it.

    With ``runtime.batch_size()`` > 1 the batch-capable graph runs it (removers/segment_batch.py),
    so a photo's mask does not depend on which photos shared its batch."""
    from . import segment_batch

    if segment_batch.batched(model, runtime):
        return segment_batch.predict_alphas([image], model, runtime)[0]
    session = get_session(model, runtime)
    rgb = image.convert("RGB")
    if model in _U2NETP_FAMILY:
        return _u2netp_alpha(session, rgb)
    if model == isnet.NAME:
        return isnet.predict(session, rgb, runtime.isnet_side)
    masks = session.predict(rgb)
    mask = masks[0]
    for extra in masks[1:]:  # models that return several masks: union
        mask = Image.fromarray(np.maximum(np.asarray(mask), np.asarray(extra)))
    alpha = np.asarray(mask.convert("L"), dtype=np.uint8)
    if alpha.shape != (image.height, image.width):
        alpha = np.asarray(mask.convert("L").resize(image.size, Image.Resampling.LANCZOS))
    return alpha
