"""Model-only speed and mask agreement of u2netp / u2net variants (fp32, int8, input size, bf16).

    python bench/model_speed.py latency --rounds 10        # one session.run, per variant x threads
    python bench/model_speed.py layout --per-proc 8        # photos/s of P processes x T threads
    python bench/model_speed.py iou --clothing 100 --grocery 50
    python bench/model_speed.py stages --clothing 20 --grocery 10   # where bf16 moves the mask
    python bench/model_speed.py iou --model u2net --variants fp32,ov,ovbf16   # the full U^2-Net
    python bench/model_speed.py all

Variants: ``fp32`` (the shipped u2netp.onnx), ``int8`` (removers.quantize.build_int8,
calibrated on sample_images only; built once into --work), ``fp32@288`` / ``fp32@256``
(same weights, smaller input: fewer FLOPs, masks differ), ``ov`` (the same fp32 file run by
OpenVINO instead of onnxruntime, f32 precision), ``ovbf16`` (OpenVINO with
INFERENCE_PRECISION_HINT bf16: native on AMX / AVX512_BF16 CPUs), ``ovir`` / ``ovmix`` (the IR of
removers/ov_ir.py that OpenVINO runs in the product: static input, f32 / bf16 with the recipe's
nodes in fp32; ``ovmix`` is what ``auto`` runs on a native-bf16 CPU), ``daz`` (fp32 with
onnxruntime's denormals-as-zero). ``stages`` measures, per U^2-Net stage, the mask IoU when only
that stage runs in bf16 (the rest fp32), then none in fp32, then the shipped recipe: how the
recipe was found; ``--keep en1+de1`` adds a row with those stages in fp32 and the rest in bf16.
``--model u2net`` runs the same on the full U^2-Net (same graph layout and preprocessing as
u2netp, more channels; ``fp32``, ``ov``, ``ovbf16``, ``ovir``/``ovmix`` when it has a recipe).
Every timing is taken interleaved with its anchor (fp32) in the same run; medians
are printed with the ratio to fp32, wall and CPU time (CPU time is steadier on a
shared machine).
IoU is against rembg's own U2netpSession.predict with fp32 weights, at alpha >= 128,
on dev photos from ../shared/data (never needed at run time).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from removers import models, ov_ir, quantize  # noqa: E402
from removers.config import RuntimeConfig  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
SAMPLES = ROOT / "sample_images"


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def int8_path(work: Path) -> Path:
    """The int8 model built from sample_images, reused while its checksum holds."""
    dst = work / "u2netp-int8.onnx"
    try:
        return quantize.verify_int8(dst)
    except models.ModelError:
        t = time.perf_counter()
        quantize.build_int8(models.verify("u2netp"), dst, sorted(SAMPLES.glob("*.jpg")))
        print(f"built {dst} in {time.perf_counter() - t:.1f} s", flush=True)
        return dst


def resized_model(work: Path, size: int) -> Path:
    """u2netp.onnx with its input fixed to size x size (the graph is fully convolutional)."""
    import onnx

    dst = work / f"u2netp-{size}.onnx"
    if not dst.is_file():
        m = onnx.load(str(models.verify("u2netp")))
        del m.graph.value_info[:]
        for d, v in zip(m.graph.input[0].type.tensor_type.shape.dim, (1, 3, size, size)):
            d.dim_value = v
        for out in m.graph.output:
            for d, v in zip(out.type.tensor_type.shape.dim, (1, 1, size, size)):
                d.dim_value = v
        onnx.save(m, str(dst))
    return dst


def variant_file(name: str, work: Path, model: str = "u2netp") -> tuple[Path, int]:
    base, _, size = name.partition("@")
    size = int(size or 320)
    if base in ("ov", "ovbf16", "daz"):
        return models.verify(model), size
    if base in ("ovir", "ovmix"):
        if model not in ov_ir.RECIPES:
            raise ValueError(f"{model} has no recipe in removers/ov_ir.py: use ov / ovbf16")
        return ov_ir.prepared_ir(model, models.verify(model), work / "ov"), 320
    if model != "u2netp" and (base != "fp32" or size != 320):
        raise ValueError(f"variant {name!r} is built for u2netp only")
    if base == "int8":
        if size != 320:
            raise ValueError("int8 is built for 320x320 only")
        return int8_path(work), 320
    if base != "fp32":
        raise ValueError(f"unknown variant {name!r}")
    return (models.verify(model) if size == 320 else resized_model(work, size)), size


class _OpenVinoSession:
    """The two calls of an onnxruntime session this bench uses, run by OpenVINO (f32)."""

    def __init__(self, path: Path, threads: int, precision: str = "f32"):
        try:
            import openvino as ov
        except ImportError:
            raise SystemExit("the 'ov' variants need OpenVINO: .venv/bin/pip install openvino") from None
        from removers import runtime

        cfg = runtime.ov_config("bf16" if precision == "bf16" else "fp32", runtime.plan(threads), None)
        model = ov.Core().compile_model(str(path), "CPU", cfg)
        self._input = model.inputs[0].get_any_name()
        self._request = model.create_infer_request()

    def get_inputs(self):
        return [type("Input", (), {"name": self._input})]

    def run(self, _outputs, feed):
        return [np.array(self._request.infer(list(feed.values()))[0])]


def make_session(path: Path, threads: int, variant: str = "fp32"):
    if variant.startswith("ov"):
        bf16 = variant.startswith(("ovbf16", "ovmix"))
        return _OpenVinoSession(path, threads, "bf16" if bf16 else "f32")
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    if variant == "daz":  # flush denormal floats to zero (a known CPU slow path)
        opts.add_session_config_entry("session.set_denormal_as_zero", "1")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def model_input(image: Image.Image, size: int) -> np.ndarray:
    """rembg's u2netp preprocessing at any square size."""
    im = np.asarray(image.convert("RGB").resize((size, size), Image.Resampling.LANCZOS), dtype=np.float64)
    im = im / max(float(im.max()), 1e-6)
    im = (im - np.array(quantize.MEAN)) / np.array(quantize.STD)
    return im.transpose(2, 0, 1)[None].astype(np.float32)


def mask_from(session, image: Image.Image, size: int) -> np.ndarray:
    """rembg's U2netpSession.predict, with the input size as a parameter."""
    pred = session.run(None, {session.get_inputs()[0].name: model_input(image, size)})[0][:, 0]
    pred = np.squeeze((pred - pred.min()) / (pred.max() - pred.min()))
    mask = Image.fromarray((pred * 255).astype("uint8"), mode="L")
    return np.asarray(mask.resize(image.size, Image.Resampling.LANCZOS))


def sample_photo() -> Image.Image:
    with Image.open(SAMPLES / "dress.jpg") as im:
        return ImageOps.exif_transpose(im).convert("RGB")


# ---------------------------------------------------------------- latency
def latency(variants: list[str], threads: list[int], rounds: int, work: Path, model: str = "u2netp") -> list[dict]:
    photo = sample_photo()
    runs = {}
    for v in variants:
        path, size = variant_file(v, work, model)
        x = model_input(photo, size)
        for t in threads:
            s = make_session(path, t, v)
            runs[(v, t)] = (s, {s.get_inputs()[0].name: x})
            s.run(None, runs[(v, t)][1])  # warm-up
    wall = {k: [] for k in runs}
    cpu = {k: [] for k in runs}
    for _ in range(rounds):
        for k, (s, feed) in runs.items():
            c0, t0 = cpu_s(), time.perf_counter()
            s.run(None, feed)
            wall[k].append(time.perf_counter() - t0)
            cpu[k].append(cpu_s() - c0)
    rows = []
    for (v, t) in runs:
        anchor = (variants[0], t)
        rows.append({"variant": v, "threads": t,
                     "wall_ms": 1000 * statistics.median(wall[(v, t)]),
                     "cpu_ms": 1000 * statistics.median(cpu[(v, t)]),
                     "wall_vs_anchor": statistics.median(wall[(v, t)]) / statistics.median(wall[anchor]),
                     "cpu_vs_anchor": statistics.median(cpu[(v, t)]) / statistics.median(cpu[anchor])})
    return rows


# ---------------------------------------------------------------- layout
def _worker(path: str, size: int, threads: int, n: int, barrier, out, variant: str = "fp32") -> None:
    s = make_session(Path(path), threads, variant)
    feed = {s.get_inputs()[0].name: model_input(sample_photo(), size)}
    s.run(None, feed)
    barrier.wait()
    for _ in range(n):
        s.run(None, feed)
    out.put(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)  # MiB (Linux: KiB)


def _layout_once(variant: str, path: Path, size: int, procs: int, threads: int, n: int) -> tuple[float, float]:
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(procs + 1), ctx.Queue()
    ps = [ctx.Process(target=_worker, args=(str(path), size, threads, n, barrier, out, variant)) for _ in range(procs)]
    for p in ps:
        p.start()
    barrier.wait()
    t0 = time.perf_counter()
    rss = [out.get() for _ in ps]
    wall = time.perf_counter() - t0
    for p in ps:
        p.join()
    return procs * n / wall, max(rss)


def layout(variants: list[str], shapes: list[tuple[int, int]], per_proc: int, rounds: int, work: Path,
           model: str = "u2netp") -> list[dict]:
    """Model-only throughput ceiling of each processes x threads shape (alternating rounds)."""
    res: dict = {}
    files = {v: variant_file(v, work, model) for v in variants}
    for _ in range(rounds):
        for v in variants:
            for procs, threads in shapes:
                n = per_proc * max(1, 2 // procs)  # same number of photos per shape
                rate, rss = _layout_once(v, *files[v], procs, threads, n)
                res.setdefault((v, procs, threads), []).append((rate, rss))
    anchor = (variants[0],) + shapes[0]
    base = statistics.median(r for r, _ in res[anchor])
    return [{"variant": v, "procs": p, "threads": t,
             "photos_per_s": statistics.median(r for r, _ in vals),
             "vs_anchor": statistics.median(r for r, _ in vals) / base,
             "peak_rss_mib_per_worker": max(m for _, m in vals)}
            for (v, p, t), vals in res.items()]


# ---------------------------------------------------------------- iou
def dev_photos(clothing: int, grocery: int) -> list[Path]:
    """A fixed, spread-out list: every k-th clothing validation photo, every k-th grocery val photo."""
    cl = sorted((DATA / "clothing_small" / "validation").glob("*/*.jpg"))
    gr = sorted((DATA / "grocery_store" / "dataset" / "val").glob("*/*/*.jpg")) + \
        sorted((DATA / "grocery_store" / "dataset" / "val").glob("*/*/*/*.jpg"))
    gr = sorted(set(gr))
    pick = lambda xs, n: [xs[int(i * len(xs) / n)] for i in range(n)] if n and xs else []  # noqa: E731
    return pick(cl, clothing) + pick(gr, grocery)


def iou(a: np.ndarray, b: np.ndarray, thr: int = 128) -> float:
    a, b = a >= thr, b >= thr
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def iou_table(variants: list[str], clothing: int, grocery: int, work: Path, model: str = "u2netp") -> list[dict]:
    from removers import segment

    photos = dev_photos(clothing, grocery)
    ref_session = segment.get_session(model, RuntimeConfig(runtime="onnxruntime", precision="fp32"))
    files = {v: variant_file(v, work, model) for v in variants}
    sessions = {v: (make_session(path, 0, v), size) for v, (path, size) in files.items()}
    scores = {v: {"clothing": [], "grocery": []} for v in variants}
    for path in photos:
        with Image.open(path) as im:
            image = ImageOps.exif_transpose(im).convert("RGB")
        ref = np.asarray(ref_session.predict(image)[0])  # rembg's own predict, fp32
        group = "clothing" if "clothing_small" in str(path) else "grocery"
        for v, (s, size) in sessions.items():
            scores[v][group].append(iou(ref, mask_from(s, image, size)))
    rows = []
    for v in variants:
        for group, vals in scores[v].items():
            if vals:
                rows.append({"variant": v, "set": group, "n": len(vals), "mean_iou": float(np.mean(vals)),
                             "min_iou": float(np.min(vals)), "share_below_0.98": float(np.mean(np.array(vals) < 0.98))})
    return rows


_STAGES = [("en1", 0), ("en2", 14), ("en3", 26), ("en4", 36), ("en5", 44), ("en6", 52), ("de5", 60),
           ("de4", 68), ("de3", 76), ("de2", 86), ("de1", 98), ("side", 112)]  # first conv of each, in order


def stage_map(model) -> dict[str, str]:
    """Every compute node of a U^2-Net static model (u2netp or u2net: same layout) -> its stage
    (by the conv it follows)."""
    import re

    layers = [(o.get_friendly_name(), o.get_type_name()) for o in model.get_ordered_ops()
              if o.get_type_name() not in ("Parameter", "Constant", "Result")]
    convs = sorted((n for n, t in layers if t == "Convolution"), key=lambda n: int(re.findall(r"\d+", n)[0]))
    assert len(convs) == 119, len(convs)
    stage_of = {c: [s for s, first in _STAGES if i >= first][-1] for i, c in enumerate(convs)}
    out, cur = {}, "en1"
    for n, _ in layers:
        cur = stage_of.get(n, cur)
        out[n] = cur
    return out


def stages(clothing: int, grocery: int, work: Path, model: str = "u2netp", keep: tuple[str, ...] = ()) -> list[dict]:
    """Mask IoU vs fp32 when only one stage runs in bf16; then all in bf16; then the shipped recipe
    (if the model has one); then each ``keep`` set of stages ("en1+de1") in fp32, the rest in bf16."""
    from removers import segment

    src = models.verify(model)
    where = stage_map(ov_ir._static_model(src, 320))
    sets = {f"only {s} in bf16": tuple(n for n, st in where.items() if st != s) for s, _ in _STAGES}
    sets["all in bf16"] = ()
    if model in ov_ir.RECIPES:
        recipe = ov_ir.RECIPES[model]
        sets[f"recipe ({len(recipe.keep_fp32)} nodes fp32)"] = recipe.keep_fp32
    for stage_set in keep:
        names = stage_set.split("+")
        unknown = set(names) - {s for s, _ in _STAGES}
        if unknown:
            raise ValueError(f"unknown stages {sorted(unknown)}; stages are {[s for s, _ in _STAGES]}")
        sets[f"{stage_set} in fp32"] = tuple(n for n, st in where.items() if st in names)
    photos = [(p, "sample") for p in sorted(SAMPLES.glob("*.jpg"))] + [
        (p, "clothing" if "clothing_small" in str(p) else "grocery") for p in dev_photos(clothing, grocery)]
    ref_session = segment.get_session(model, RuntimeConfig(runtime="onnxruntime", precision="fp32"))
    images, refs = [], []
    for path, group in photos:
        with Image.open(path) as im:
            image = ImageOps.exif_transpose(im).convert("RGB")
        images.append((image, group))
        refs.append(np.asarray(ref_session.predict(image)[0]))
    rows = []
    for i, (label, kept) in enumerate(sets.items()):
        ir = ov_ir.write_ir(src, ov_ir.Recipe(320, kept), work / "ov" / f"{model}-stages-{i}.xml", strict=False)
        session = _OpenVinoSession(ir, 0, "bf16")
        scores: dict[str, list[float]] = {}
        for (image, group), ref in zip(images, refs):
            scores.setdefault(group, []).append(iou(ref, mask_from(session, image, 320)))
        rows.append({"bf16": label, **{f"{g}_min": float(np.min(v)) for g, v in scores.items()},
                     **{f"{g}_mean": float(np.mean(v)) for g, v in scores.items()}})
    return rows


def show(title: str, rows: list[dict]) -> None:
    print(f"\n== {title}")
    for r in rows:
        print("  " + "  ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("what", choices=["latency", "layout", "iou", "stages", "all"])
    ap.add_argument("--variants", default="fp32,int8,fp32@288,fp32@256")
    ap.add_argument("--model", choices=["u2netp", "u2net"], default="u2netp")
    ap.add_argument("--keep", action="append", default=[], help="with `stages`: stages kept in fp32, the rest in bf16, e.g. en1+de1 (repeatable)")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--per-proc", type=int, default=8)
    ap.add_argument("--clothing", type=int, default=100)
    ap.add_argument("--grocery", type=int, default=50)
    ap.add_argument("--work", type=Path, default=Path("/tmp/shelfready-bench"))
    ap.add_argument("--json", type=Path, help="also write the rows here")
    a = ap.parse_args(argv)
    a.work.mkdir(parents=True, exist_ok=True)
    variants = a.variants.split(",")
    out = {}
    if a.what in ("latency", "all"):
        out["latency"] = latency(variants, [int(t) for t in a.threads.split(",")], a.rounds, a.work, a.model)
        show("model-only latency (median; ratios vs first variant, same threads)", out["latency"])
    if a.what in ("layout", "all"):
        out["layout"] = layout(variants[:2], [(1, 2), (2, 1)], a.per_proc, max(1, a.rounds // 4), a.work, a.model)
        show("model-only throughput by processes x threads (ratio vs first row)", out["layout"])
    if a.what in ("iou", "all"):
        out["iou"] = iou_table([v for v in variants if v != "fp32"], a.clothing, a.grocery, a.work, a.model)
        show(f"{a.model}: mask IoU vs rembg fp32 at alpha>=128", out["iou"])
    if a.what == "stages":
        out["stages"] = stages(a.clothing, a.grocery, a.work, a.model, tuple(a.keep))
        show(f"mask IoU vs rembg fp32 at alpha>=128, {a.model} on OpenVINO, bf16 where named", out["stages"])
    if a.json:
        a.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
