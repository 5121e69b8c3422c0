"""Batched remover runs: several photos per model call (the path ``--device cuda`` takes).

u2netp (and its int8 copy) and IS-Net ship with a batch dimension fixed at 1. For
``RuntimeConfig.batch_size()`` > 1, ``batch_graph`` derives once a copy whose inputs'
and outputs' first dimension is symbolic and keeps it in the runtime's cache folder
(``RuntimeConfig.cache_dir`` or the user cache), written atomically, named by the
sha256 of the weights it came from (and IS-Net's side), beside a ``.sha256`` file of
its own bytes: a missing, truncated or altered copy is derived again. Deriving
refuses a graph that pins the batch (a Reshape/Expand/Tile to a constant shape
starting with 1, or an output whose first dimension shape inference fixes).
The sessions of batch 1 (``segment.get_session``) are never touched.

``predict_alphas(images, model, runtime)`` makes one model call per
``batch_size()`` photos, with ``segment.predict_alpha``'s per-photo pre- and
post-processing. With a batch > 1, ``predict_alpha`` of one photo also runs this
graph, so a photo's mask does not depend on the photos that shared its batch.

Equality with batch 1 (tests/test_segment_batch.py): u2netp's masks are the same
bytes on onnxruntime's CPU provider. IS-Net's differ by at most one level at a few
pixels: onnxruntime computes the graph with a symbolic batch dimension slightly
differently from the fixed-shape one (up to ~6e-5 of the [0, 1] output, with every
graph optimisation off too, and at batch 1 already), while batch 4 and batch 1 of
the derived graph are identical. So ``remover_batch`` > 1 is in the settings key.

Batched runs are onnxruntime's (CPU or CUDA provider). A remover that resolves to
OpenVINO, and rembg's other models, run one photo per call.
"""
from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from photos.keys import bytes_sha256, file_sha256, one_line

from . import base, isnet, models
from . import runtime as runtime_mod
from .config import RuntimeConfig

BATCHABLE = ("u2netp", base.INT8, isnet.NAME)
BATCH_DIM = "batch"
DERIVED = "batch-v1"  # in the derived file's name: a change to ``derive`` bumps it
_PINNING_OPS = ("Reshape", "Expand", "Tile")  # ops whose shape input could hard-code batch 1

_SESSIONS: dict[tuple, object] = {}
_LOCK = threading.Lock()


def batched(model: str, runtime: RuntimeConfig) -> bool:
    """Whether ``model`` runs from the batch-capable graph under ``runtime``."""
    return (model in BATCHABLE and runtime.batch_size() > 1
            and runtime_mod.resolve(runtime, "remover", model=model).engine == runtime_mod.ONNXRUNTIME)


def _source_graph(model: str, weights: Path, side: int):
    import onnx

    if model == isnet.NAME:  # re-targeted to the runtime's side, ``output`` head only
        return onnx.load_from_string(isnet.graph_bytes(weights, side))
    return onnx.load(str(weights))


def _constants(graph) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return values


def pinned_batch(model) -> list[str]:
    """What in the graph ``model`` fixes the batch at 1: shape inputs of Reshape/Expand/Tile
    that are constants starting with 1, and outputs whose first dimension shape inference
    makes a number."""
    import onnx

    consts = _constants(model.graph)
    found = [f"{n.op_type} {n.name or n.output[0]}" for n in model.graph.node
             if n.op_type in _PINNING_OPS and len(n.input) > 1 and n.input[1] in consts
             and consts[n.input[1]].size and int(consts[n.input[1]].flat[0]) == 1]
    inferred = onnx.shape_inference.infer_shapes(model)
    for out in inferred.graph.output:
        dims = out.type.tensor_type.shape.dim
        if dims and dims[0].HasField("dim_value"):
            found.append(f"output {out.name} (first dimension {dims[0].dim_value})")
    return found


def derive(model: str, weights: Path, side: int = isnet.NATIVE_SIDE) -> bytes:
    """The graph of ``weights`` with a symbolic first dimension on its 4-D inputs and outputs."""
    graph = _source_graph(model, weights, side)
    for value in list(graph.graph.input) + list(graph.graph.output):
        dims = value.type.tensor_type.shape.dim
        if len(dims) == 4:
            dims[0].Clear()
            dims[0].dim_param = BATCH_DIM
    del graph.graph.value_info[:]  # shapes inferred for batch 1 would pin it
    pins = pinned_batch(graph)
    if pins:
        raise models.ModelError(f"remover {model!r} cannot run batched: its graph fixes the batch at 1 "
                                f"({', '.join(pins[:3])}); use remover_batch 1")
    return graph.SerializeToString()


def _cache_folder(runtime: RuntimeConfig) -> Path:
    base = Path(runtime.cache_dir) if runtime.cache_dir else runtime_mod.default_cache_dir().parent
    return base / "batched"


def batch_graph(model: str, weights: Path, runtime: RuntimeConfig = RuntimeConfig()) -> Path:
    """``derive``'s graph as a file in the cache folder: reused when its bytes match its
    ``.sha256`` record, else derived again (atomically: a killed writer leaves no half file)."""
    from photos.save import write_bytes_atomic, write_text_atomic

    side = f"-{runtime.isnet_side}" if model == isnet.NAME else ""
    target = _cache_folder(runtime) / f"{model}{side}-{DERIVED}-{file_sha256(weights)[:16]}.onnx"
    record = target.with_name(target.name + ".sha256")
    try:
        if target.is_file() and record.read_text().strip() == file_sha256(target):
            return target
    except OSError:  # no record (a copy from before it, or a crash between the two writes): derive
        pass
    data = derive(model, weights, runtime.isnet_side)
    write_bytes_atomic(target, data)
    write_text_atomic(record, bytes_sha256(data) + "\n")
    return target


def get_batch_session(model: str, runtime: RuntimeConfig = RuntimeConfig()):
    """onnxruntime session of ``batch_graph`` (device's providers), one per process and settings."""
    key = (model, runtime, str(models.rembg_home()))
    with _LOCK:
        session = _SESSIONS.get(key)
        if session is not None:
            return session
        weights = base.local_weights(model)  # the same checked weights as batch 1
        if weights is None:
            raise models.ModelError(f"remover {model!r}: no local weights; run `{models.fetch_command(model)}`")
        import onnxruntime as ort

        try:
            path = batch_graph(model, weights, runtime)
        except OSError as exc:
            raise models.ModelError(f"cannot keep the batched remover {model!r} in {_cache_folder(runtime)}: "
                                    f"{exc.strerror or one_line(exc)}; set another cache folder") from None
        try:
            session = ort.InferenceSession(str(path), base.session_options(runtime),
                                           providers=base.providers(runtime))
        except models.ModelError:
            raise
        except Exception as exc:  # noqa: BLE001 - onnxruntime's failure -> one line
            raise models.ModelError(f"cannot load the batched remover {model!r} from {path}: {one_line(exc)}; "
                                    "delete that file to derive it again") from None
        _SESSIONS[key] = session
        return session


def _run(session, model: str, chunk: list[Image.Image], runtime: RuntimeConfig) -> list[np.ndarray]:
    """One model call for the photos of ``chunk`` (RGB)."""
    if model == isnet.NAME:
        arrays = [np.asarray(im) for im in chunk]
        x = np.concatenate([isnet.preprocess(a, runtime.isnet_side) for a in arrays])
        pred = session.run(None, {isnet.INPUT: x})[0]
        return [isnet.postprocess(pred[i:i + 1], a.shape[1], a.shape[0]) for i, a in enumerate(arrays)]
    x = np.concatenate([base.u2netp_input(im) for im in chunk])
    first = session.get_outputs()[0].name
    pred = session.run([first], {session.get_inputs()[0].name: x})[0]
    return [base.u2netp_mask(pred[i, 0], im.size) for i, im in enumerate(chunk)]


def predict_alphas(images: Sequence[Image.Image], model: str,
                   runtime: RuntimeConfig = RuntimeConfig()) -> list[np.ndarray]:
    """Alpha masks (uint8, HxW, 255 = product) of ``images``, one model call per
    ``runtime.batch_size()`` photos; only where ``batched`` (segment.predict_alpha runs the rest)."""
    if not batched(model, runtime):
        raise ValueError(f"remover {model!r} with remover_batch {runtime.batch_size()} is not batched; "
                         "segment.predict_alpha runs it")
    session = get_batch_session(model, runtime)
    size = runtime.batch_size()
    masks: list[np.ndarray] = []
    for start in range(0, len(images), size):
        masks.extend(_run(session, model, [im.convert("RGB") for im in images[start:start + size]], runtime))
    return masks
