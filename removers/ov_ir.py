"""OpenVINO IR of a remover, prepared for mixed bf16/fp32, cached on disk.

u2netp under OpenVINO's ``INFERENCE_PRECISION_HINT`` bf16 moves masks more than
the accuracy guard allows (IoU vs fp32 down to 0.973 on the sample photos, 0.67
on grocery photos). Measured stage by stage (bench/model_speed.py ``mixed``), the
error comes almost all from one tensor: the second decoder block's (stage2d)
``hx2d`` rounded to bf16 on its way, upsampled and concatenated, into that block's
last conv. Keeping those 4 nodes in fp32 (2.5% of the model's multiply-adds)
brings the sample photos to IoU >= 0.998 at bf16 speed.

How: the ONNX file is read with a static 1x3xSxS input, constant-folded, and
its MaxPool-8 / Interpolate-11 nodes are rewritten as MaxPool-1 / Interpolate-4
(the CPU plugin would convert them itself and drop the marks on the way). The
nodes to keep are marked with OpenVINO's ``precise`` runtime attribute
(``DisablePrecisionConversion``: the CPU plugin then runs them in fp32 under a
bf16 hint). OpenVINO's Python API cannot set that typed attribute, so it is
written into the saved IR's XML (on the layers renamed ``<name>@fp32`` just before
saving), which OpenVINO's IR reader turns into it.
Under an f32 hint the marks change nothing; the static graph is also faster.

Cached as ``<cache>/<model>-<weights sha256[:16]>-ov<version>-<recipe hash>.xml``,
written to a temp name and renamed (a crash never leaves half an IR).
"""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Recipe:
    side: int  # the static input side (the session's own resize target)
    keep_fp32: tuple[str, ...]  # node names (of the ONNX file) kept in fp32 under bf16


# u2netp.onnx as rembg ships it (md5 checked by removers.models.verify): stage2d's
# rebnconv2d, the upsample and concat after it, and rebnconv1d.
RECIPES = {
    "u2netp": Recipe(320, ("Conv_765/WithoutBiases", "Resize_785", "Concat_786", "Conv_787/WithoutBiases")),
}
_PRECISE = '<rt_info><attribute name="precise" version="0" /></rt_info>'
FP32_TAG = "@fp32"  # suffix given to the kept nodes' names, to find them in the saved XML


def _static_model(onnx_path: Path, side: int):
    """The ONNX model with a fixed input, folded, with op versions the CPU plugin keeps as they are."""
    import numpy as np
    import openvino as ov
    import openvino.opset1 as op1
    from openvino._offline_transformations import apply_moc_transformations
    from openvino.utils.node_factory import NodeFactory

    model = ov.Core().read_model(str(onnx_path))
    model.reshape([1, 3, side, side])
    apply_moc_transformations(model, cf=True)
    for node in model.get_ordered_ops():
        kind, version = node.get_type_name(), node.get_type_info().version_id
        new = None
        if kind == "MaxPool" and version == "opset8" and not node.output(1).get_target_inputs():
            a = node.get_attributes()
            new = op1.max_pool(node.input_value(0), a["strides"], a["pads_begin"], a["pads_end"], a["kernel"],
                               a["rounding_type"], a["auto_pad"])
        elif kind == "Interpolate" and version == "opset11" and node.get_attributes()["shape_calculation_mode"] == "sizes":
            sizes_node = node.input_value(1).get_node()
            if sizes_node.get_type_name() != "Constant" or len(node.inputs()) != 2:
                continue
            sizes = sizes_node.get_data().astype(np.int64)
            scales = (sizes / np.array(list(node.input_value(0).get_shape()))).astype(np.float32)
            new = NodeFactory("opset4").create(
                "Interpolate", [node.input_value(0), op1.constant(sizes).output(0), op1.constant(scales).output(0)],
                node.get_attributes())
        if new is not None:
            new.set_friendly_name(node.get_friendly_name())
            for target in node.output(0).get_target_inputs():
                target.replace_source_output(new.output(0))
    model.validate_nodes_and_infer_types()
    return model


def _mark(xml: str, count: int) -> str:
    """Add the ``precise`` attribute to the ``count`` layers named with ``FP32_TAG``."""
    pattern = re.compile(r'(<layer id="\d+" name="[^"]*%s" type="[^"]+" version="[^"]+">\s*(?:<data[^>]*/>)?)'
                         % re.escape(FP32_TAG))
    xml, found = pattern.subn(lambda m: m.group(1) + _PRECISE, xml)
    if found != count:
        raise ValueError(f"marked {found} of {count} layers in the saved IR")
    return xml


def prepared_ir(model_name: str, onnx_path: Path, cache_dir: Path) -> Path:
    """The IR of ``onnx_path`` for ``model_name``'s recipe (built on first use, then reused)."""
    import openvino as ov

    recipe = RECIPES[model_name]
    with open(onnx_path, "rb") as fh:
        digest = hashlib.file_digest(fh, "sha256").hexdigest()[:16]
    tag = hashlib.sha256(repr(recipe).encode()).hexdigest()[:8]
    version = ov.get_version().split("-")[0]
    target = cache_dir / f"{model_name}-{digest}-ov{version}-{tag}.xml"
    if target.is_file() and target.with_suffix(".bin").is_file():
        return target
    return write_ir(onnx_path, recipe, target)


def write_ir(onnx_path: Path, recipe: Recipe, target: Path, strict: bool = True) -> Path:
    """Write the prepared IR of ``onnx_path`` to ``target`` (.xml, .bin beside it) atomically.

    ``strict``: a recipe node missing from the model is an error (else it is skipped)."""
    import openvino as ov

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.stem}.{os.getpid()}.xml"
    model = _static_model(onnx_path, recipe.side)
    wanted, marked = set(recipe.keep_fp32), 0
    for node in model.get_ordered_ops():
        if node.get_friendly_name() in wanted:
            wanted.discard(node.get_friendly_name())
            node.set_friendly_name(node.get_friendly_name() + FP32_TAG)
            marked += 1
    if wanted and strict:
        raise ValueError(f"nodes {sorted(wanted)[:3]} not in {onnx_path.name}: not the file the recipe was measured on")
    ov.save_model(model, str(tmp), compress_to_fp16=False)
    tmp.write_text(_mark(tmp.read_text(encoding="utf-8"), marked), encoding="utf-8")
    os.replace(tmp.with_suffix(".bin"), target.with_suffix(".bin"))
    os.replace(tmp, target)
    return target
