"""Remover time per photo at batch 1 vs batches of N photos per model call (u2netp, onnxruntime).

    nice -n 5 python bench/remover_batch.py --photos 40 --rounds 5 --batches 4,8

The batched path (removers/segment_batch.py) is there for GPUs (``--device cuda`` runs
8 photos per call by default); this measures what it costs or gains on this CPU.
The photos are decoded once, before timing; each round times every mode on all the
photos, modes in a rotating order (alternating rounds, one process), and the
medians of the rounds are printed with the ratio to the anchor: batch 1 on
onnxruntime (``segment.predict_alpha``, the weights as shipped). ``model`` is the
time inside the onnxruntime calls alone; ``total`` adds the per-photo pre- and
post-processing (the same code in every mode). ``auto`` is what a CPU run uses by
default here (``RuntimeConfig()``: OpenVINO bf16 on a native-bf16 CPU), one photo
per call, for reference.
Photos: sample_images/ plus clothing_small/validation photos of ../shared/data.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from photos.io import load_image  # noqa: E402
from removers import segment, segment_batch  # noqa: E402
from removers.config import RuntimeConfig  # noqa: E402

DATA = ROOT.parent / "shared" / "data"


def photo_paths(n: int) -> list[Path]:
    paths = sorted((ROOT / "sample_images").glob("*.jpg"))
    more = sorted((DATA / "clothing_small" / "validation").rglob("*.jpg"))
    step = max(1, len(more) // max(1, n - len(paths)))
    return (paths + more[::step])[:n]


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class Timed:
    """Wraps a session's ``run``: seconds spent inside it and the batch sizes it was given."""

    def __init__(self, session) -> None:
        self.inner, self.seconds, self.sizes = session.run, 0.0, []
        session.run = self

    def __call__(self, names, feed):
        t = time.perf_counter()
        out = self.inner(names, feed)
        self.seconds += time.perf_counter() - t
        self.sizes.append(len(next(iter(feed.values()))))
        return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--photos", type=int, default=40)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--batches", default="4,8", help="batch sizes to compare with batch 1")
    p.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads")
    p.add_argument("--no-auto", action="store_true", help="leave out the CPU default (auto) reference")
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = p.parse_args()

    paths = photo_paths(args.photos)
    images = [load_image(path).convert("RGB") for path in paths]
    cache = ROOT / "out" / "bench" / "remover_batch" / "cache"
    modes: dict[str, tuple[RuntimeConfig, Timed | None]] = {}
    one = RuntimeConfig(runtime="onnxruntime", threads=args.threads)
    modes["batch 1"] = (one, Timed(segment.get_session("u2netp", one).inner_session))
    for n in (int(b) for b in args.batches.split(",")):
        rt = RuntimeConfig(runtime="onnxruntime", threads=args.threads, remover_batch=n, cache_dir=str(cache))
        modes[f"batch {n}"] = (rt, Timed(segment_batch.get_batch_session("u2netp", rt)))
    if not args.no_auto:
        auto = RuntimeConfig(threads=args.threads)
        modes["auto"] = (auto, None)
        segment.get_session("u2netp", auto)
    for rt, _ in modes.values():  # warm-up: first-call allocations out of the timings
        segment_batch.predict_alphas(images[:rt.batch_size()], "u2netp", rt)

    names = list(modes)
    times: dict[str, dict[str, list[float]]] = {m: {"total": [], "model": [], "cpu": []} for m in names}
    for r in range(args.rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            rt, timed = modes[name]
            before = timed.seconds if timed else 0.0
            if timed:
                timed.sizes.clear()
            t, c = time.perf_counter(), cpu_s()
            masks = segment_batch.predict_alphas(images, "u2netp", rt)
            times[name]["total"].append(time.perf_counter() - t)
            times[name]["cpu"].append(cpu_s() - c)
            if timed:
                times[name]["model"].append(timed.seconds - before)
                want = [min(rt.batch_size(), len(images) - i) for i in range(0, len(images), rt.batch_size())]
                assert timed.sizes == want, (name, timed.sizes)
            assert len(masks) == len(images)

    n = len(images)
    anchor = {k: statistics.median(v) for k, v in times["batch 1"].items()}
    result = {"photos": n, "rounds": args.rounds, "threads": args.threads, "modes": {}}
    print(f"u2netp, {n} photos, {args.rounds} rounds, onnxruntime {args.threads} threads; "
          "ms per photo (median of rounds) and ratio to batch 1 (> 1 = faster)")
    print(f"{'mode':<8} {'total':>8} {'x':>6} {'model':>8} {'x':>6} {'cpu':>8} {'x':>6}")
    for name in names:
        med = {k: statistics.median(v) if v else float("nan") for k, v in times[name].items()}
        row = {k: round(1000 * v / n, 2) for k, v in med.items()}
        ratio = {k: round(anchor[k] / med[k], 3) if med[k] == med[k] else None for k in med}
        result["modes"][name] = {"ms_per_photo": row, "speed_vs_batch1": ratio}
        cells = [f"{row[k]:>8.1f} {ratio[k] or float('nan'):>6.2f}" for k in ("total", "model", "cpu")]
        print(f"{name:<8} " + " ".join(cells))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
