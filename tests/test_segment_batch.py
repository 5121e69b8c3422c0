"""Batched remover runs (the cuda path), checked on the CPU: masks equal one-by-one masks, one
model call per batch, the cleaned photos of a group equal the photos cleaned alone, the derived
batch-capable graph is rebuilt when missing or damaged, the settings key of CPU runs is unchanged."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from mask_helpers import load_rgb, mask_iou
from PIL import Image

from hygiene.config import CleanConfig
from removers import isnet, models, runtime, segment, segment_batch
from removers.config import RuntimeConfig


def _file_digests(out: Path, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """{path under ``out``: sha256} of every file whose name does not start with one of ``skip``."""
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*")) if p.is_file() and not (skip and p.name.startswith(skip))}


def _runtimes(tmp_path, batch: int, **kw) -> tuple[RuntimeConfig, RuntimeConfig]:
    """(batched, one-by-one) on onnxruntime, the engine batches run on (auto may pick OpenVINO here)."""
    one = RuntimeConfig(runtime="onnxruntime", threads=2, **kw)
    return RuntimeConfig(runtime="onnxruntime", threads=2, remover_batch=batch, cache_dir=str(tmp_path), **kw), one


def _count_runs(monkeypatch, session) -> list[int]:
    """Batch sizes of the calls on the inner onnxruntime session."""
    calls: list[int] = []
    run = session.run
    monkeypatch.setattr(session, "run", lambda names, feed: calls.append(len(next(iter(feed.values()))))
                        or run(names, feed))
    return calls


# ------------------------------------------------------------ settings (no model)
def test_batch_size_is_one_on_cpu_and_keys_only_batches():
    assert RuntimeConfig().batch_size() == 1
    assert RuntimeConfig(device="cuda").batch_size() > 1  # config's CUDA_REMOVER_BATCH
    assert RuntimeConfig(device="cuda", remover_batch=1).batch_size() == 1
    cpu = CleanConfig().fingerprint()
    assert '"remover_batch"' not in cpu
    assert CleanConfig(runtime=RuntimeConfig(remover_batch=1)).fingerprint() == cpu
    four = CleanConfig(runtime=RuntimeConfig(remover_batch=4)).fingerprint()
    assert four != cpu and '"remover_batch": 4' in four
    cuda = json.loads(CleanConfig(runtime=RuntimeConfig(device="cuda")).fingerprint())["runtime"]
    assert cuda["remover_batch"] == RuntimeConfig(device="cuda").batch_size() and cuda["device"] == "cuda"
    with pytest.raises(ValueError, match="remover_batch must be between 0 and 256"):
        RuntimeConfig(remover_batch=-1)


def test_a_cuda_remover_runs_on_onnxruntime_in_fp32_whatever_the_cpu_offers():
    for asked in (RuntimeConfig(device="cuda"), RuntimeConfig(device="cuda", runtime="openvino", precision="bf16")):
        choice = runtime.resolve(asked, "remover", model="u2netp")
        assert (choice.engine, choice.precision) == (runtime.ONNXRUNTIME, runtime.FP32), choice
        assert segment_batch.batched("u2netp", asked)
    assert not segment_batch.batched("u2netp", RuntimeConfig(runtime="onnxruntime"))  # batch 1
    assert not segment_batch.batched("u2net_human_seg", RuntimeConfig(runtime="onnxruntime", remover_batch=4))


def test_a_graph_that_pins_the_batch_is_found():
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [1, 48])
    graph = helper.make_graph([helper.make_node("Reshape", ["x", "shape"], ["y"], name="flatten")],
                              "pinned", [x], [y], [shape])
    pins = segment_batch.pinned_batch(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]))
    assert pins and pins[0].startswith("Reshape flatten"), pins
    free = helper.make_tensor("shape", TensorProto.INT64, [2], [-1, 48])  # batch left to the input
    graph = helper.make_graph([helper.make_node("Reshape", ["x", "shape"], ["y"], name="flatten")],
                              "free", [x], [y], [free])
    assert segment_batch.pinned_batch(onnx.helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])) == []


# ------------------------------------------------------------ u2netp, real photos
@pytest.mark.slow
def test_u2netp_batched_masks_equal_one_by_one_in_one_call_per_batch(sample_paths, tmp_path, monkeypatch):
    """Same bytes: onnxruntime's CPU kernels compute each photo of a batch as they compute it alone."""
    batched, one = _runtimes(tmp_path, 4)
    images = [load_rgb(p) for p in sample_paths[:6]]
    calls = _count_runs(monkeypatch, segment_batch.get_batch_session("u2netp", batched))
    masks = segment_batch.predict_alphas(images, "u2netp", batched)
    assert calls == [4, 2]  # six photos, batches of four: two model calls
    for path, image, mask in zip(sample_paths, images, masks):
        alone = segment.predict_alpha(image, "u2netp", one)  # the weights as shipped, batch 1
        assert mask.shape == (image.height, image.width) and mask.dtype == np.uint8
        assert np.array_equal(mask, alone), (path.name, np.abs(mask.astype(int) - alone).max())
        assert alone.max() == 255  # a real mask, not two empty ones
    # one photo under a batch > 1 runs the same derived graph (its mask does not depend on its batch-mates)
    assert np.array_equal(segment.predict_alpha(images[0], "u2netp", batched), masks[0]) and calls[-1] == 1


@pytest.mark.slow
def test_the_derived_graph_is_rebuilt_when_missing_or_damaged(tmp_path):
    weights = models.verify("u2netp")
    rt = RuntimeConfig(runtime="onnxruntime", remover_batch=4, cache_dir=str(tmp_path))
    path = segment_batch.batch_graph("u2netp", weights, rt)
    good = path.read_bytes()
    record = path.with_name(path.name + ".sha256")
    assert record.read_text().strip() == hashlib.sha256(good).hexdigest()
    assert path.parent.parent == tmp_path and not list(path.parent.glob(".*.tmp"))
    assert segment_batch.pinned_batch(__import__("onnx").load_from_string(good)) == []
    damages = {"truncated": lambda: path.write_bytes(good[: len(good) // 2]),
               "altered": lambda: path.write_bytes(good[:-8] + b"\0" * 8),
               "missing": path.unlink, "record missing": record.unlink}
    for what, damage in damages.items():
        damage()
        assert segment_batch.batch_graph("u2netp", weights, rt) == path, what
        assert path.read_bytes() == good and record.read_text().strip() == hashlib.sha256(good).hexdigest(), what
    path.write_bytes(b"not an onnx file")  # a fresh process (new session key) meets a damaged copy
    image = Image.new("RGB", (64, 48), (200, 30, 30))
    rt2 = RuntimeConfig(runtime="onnxruntime", remover_batch=4, cache_dir=str(tmp_path), threads=1)
    assert segment_batch.predict_alphas([image, image], "u2netp", rt2)[0].shape == (48, 64)
    assert path.read_bytes() == good


@pytest.mark.slow
def test_an_unwritable_cache_folder_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    rt = RuntimeConfig(runtime="onnxruntime", remover_batch=2, cache_dir=str(blocker / "cache"))
    with pytest.raises(models.ModelError) as exc:
        segment_batch.get_batch_session("u2netp", rt)
    assert "\n" not in str(exc.value) and "set another cache folder" in str(exc.value)


# ------------------------------------------------------------ IS-Net (opt-in weights)
@pytest.mark.slow
def test_isnet_batched_masks_within_one_level_of_one_by_one(isnet_path, sample_paths, tmp_path, monkeypatch):
    """Not the same bytes: onnxruntime computes the graph whose batch dimension is symbolic a
    little differently from the fixed-shape graph (the model's [0, 1] output moves by ~1e-5,
    a photo here and there crosses a level when x255 is truncated), already at batch 1; within
    the derived graph a batch of four equals four batches of one exactly."""
    batched, one = _runtimes(tmp_path, 4, isnet_side=320)  # a small side: the test's memory and time
    images = [load_rgb(p) for p in sample_paths[:4]]
    session = segment_batch.get_batch_session(isnet.NAME, batched)
    x = np.concatenate([isnet.preprocess(np.asarray(im), 320) for im in images])
    together = session.run(None, {isnet.INPUT: x})[0]
    for i in range(len(images)):
        assert np.array_equal(together[i:i + 1], session.run(None, {isnet.INPUT: x[i:i + 1]})[0])
    calls = _count_runs(monkeypatch, session)
    masks = segment_batch.predict_alphas(images, isnet.NAME, batched)
    assert calls == [4]
    for path, image, mask in zip(sample_paths, images, masks):
        alone = segment.predict_alpha(image, isnet.NAME, one)
        assert np.abs(mask.astype(int) - alone).max() <= 1, path.name
        assert mask_iou(mask, alone) >= 0.999, (path.name, mask_iou(mask, alone))


# ------------------------------------------------------------ the pipeline: a group vs photos alone
@pytest.mark.slow
def test_a_group_cleans_every_photo_as_it_is_cleaned_alone(sample_paths, tmp_path, monkeypatch):
    """Real photos, a cut-out with transparency (no model) and a broken file in one group of remover
    batch 4: output bytes, masks and rows equal those of process_one with batch 1."""
    from badinputs import make_bad_files

    from engines.batch import process_one
    from engines.batch_group import process_group
    from engines.job import BatchJob, Task
    from photos.config import OutputConfig
    from photos.keys import file_sha256

    src = tmp_path / "in"
    src.mkdir()
    paths = list(sample_paths[:5])
    cutout = src / "cutout.png"
    rgba = load_rgb(sample_paths[5]).convert("RGBA")
    rgba.putalpha(Image.fromarray(np.pad(np.full((200, 200), 255, np.uint8),
                                         ((20, rgba.height - 220), (20, rgba.width - 220)))))
    rgba.save(cutout)
    broken = make_bad_files(sample_paths[0], tmp_path / "bad")["text_as_jpg"]
    paths[2:2] = [cutout, broken]
    batched, one = _runtimes(tmp_path / "cache", 4)

    def job(out: Path, rt: RuntimeConfig) -> tuple[BatchJob, list[Task]]:
        j = BatchJob(None, out, CleanConfig(size=256, runtime=rt), OutputConfig(save_mask=True))
        return j, [Task(p, p.name, j.out_path(Path(p.name)), file_sha256(p)) for p in paths]

    calls = _count_runs(monkeypatch, segment_batch.get_batch_session("u2netp", batched))
    group = process_group(*job(tmp_path / "group", batched))
    assert calls == [4, 1]  # the 5 photos the model sees: the cut-out needs none, the broken file never loads
    j1, tasks1 = job(tmp_path / "alone", one)
    alone = [process_one(j1, t) for t in tasks1]
    assert [r["rel"] for r in group] == [p.name for p in paths]
    by_status = [r["status"] for r in group]
    assert by_status.count("failed") == 1 and group[3]["status"] == "failed", by_status
    assert group[2]["model"] == "input-alpha"

    def strip(row: dict) -> dict:
        return {k: v for k, v in row.items() if k not in ("seconds", "timings", "settings")}

    assert [strip(r) for r in group] == [strip(r) for r in alone]
    made = _file_digests(tmp_path / "group")
    assert made == _file_digests(tmp_path / "alone") and len(made) == 2 * (len(paths) - 1)  # outputs and masks


def _decoy_graph(like: Path) -> bytes:
    """A batch-capable graph with u2netp's input and output names whose "mask" is the photo's
    brightness: whatever runs it gives masks no u2netp gives."""
    import onnx
    from onnx import TensorProto, helper

    real = onnx.load(str(like), load_external_data=False)
    x, y = real.graph.input[0].name, real.graph.output[0].name
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", [x], [y], axes=[1], keepdims=1)], "decoy",
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, [segment_batch.BATCH_DIM, 3, 320, 320])],
        [helper.make_tensor_value_info(y, TensorProto.FLOAT, [segment_batch.BATCH_DIM, 1, 320, 320])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString()


@pytest.mark.slow
def test_clean_remover_batch_option_reaches_the_remover_and_keeps_the_photos(sample_paths, tmp_path):
    """`shelfready clean --remover-batch 3` (onnxruntime: the engine batches run on) runs the
    batch-capable graph: the same output bytes as the default, the batch recorded in the settings,
    the derived graph kept in the cache folder of the run (XDG_CACHE_HOME here, never the user's).
    That graph is what ran: replaced by a decoy (with a valid record), the photos come out otherwise."""
    import os
    import shutil
    import subprocess
    import sys

    src = tmp_path / "in"
    src.mkdir()
    for p in sample_paths[:3]:
        shutil.copy(p, src / p.name)
    cache = tmp_path / "xdg-cache"
    env = dict(os.environ, XDG_CACHE_HOME=str(cache))
    derived = cache / "shelfready" / "batched"

    def clean_into(name: str, *extra: str) -> Path:
        out = tmp_path / name
        proc = subprocess.run([sys.executable, "-m", "cli", "clean", str(src), str(out), "--size", "256",
                               "--runtime", "onnxruntime", "--workers", "1", "--quiet", *extra],
                              capture_output=True, text=True, timeout=300, env=env)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return out

    one = clean_into("one")
    assert not list(derived.glob("*.onnx"))  # batch 1: the shipped graph, nothing derived
    three = clean_into("three", "--remover-batch", "3")
    graphs = list(derived.glob("u2netp-batch-*.onnx"))
    assert len(graphs) == 1, list(cache.rglob("*"))
    summary = {n: json.loads((o / "summary.json").read_text()) for n, o in (("one", one), ("three", three))}
    assert summary["three"]["settings"]["runtime"]["remover_batch"] == 3
    assert "remover_batch" not in summary["one"]["settings"]["runtime"]
    made = _file_digests(one, skip=(".", "summary"))
    assert made and made == _file_digests(three, skip=(".", "summary"))

    decoy = _decoy_graph(models.verify("u2netp"))
    graphs[0].write_bytes(decoy)
    graphs[0].with_name(graphs[0].name + ".sha256").write_text(hashlib.sha256(decoy).hexdigest() + "\n")
    fooled = clean_into("decoy", "--remover-batch", "3")
    assert graphs[0].read_bytes() == decoy  # a valid copy is reused, not derived again
    assert _file_digests(fooled, skip=(".", "summary")).keys() == made.keys()
    assert _file_digests(fooled, skip=(".", "summary")) != made  # the decoy's masks: the batched graph ran
