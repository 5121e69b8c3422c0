"""CPU time per photo of hygiene.pipeline.clean outside the model, old code vs new, one run.

    python bench/profile_clean.py                          # 24 clothing photos, old = main, 3 rounds
    python bench/profile_clean.py --old-rev 6a25ff4 --n 12 --rounds 2
    python bench/profile_clean.py --halo --n 40            # foreground estimation halo metric only
    python bench/profile_clean.py --overlap --n 40 --rounds 3   # decode/encode overlapped with the model?

Profile: the masks are computed once (u2netp) and fed to both versions, so the
model is excluded. The ``hygiene`` package of ``--old-rev`` is extracted with
``git archive`` into a temp folder; each round runs the old and the new code in a
fresh process each (alternating, order rotated per round). Per photo and stage:
process CPU time (``time.process_time``, all threads) of decode (``load_image``),
the pipeline's own stages (``mask``: refine/gate/tidy/box; ``compose``: foreground
estimation, resize, white, place; ``checks``) and JPEG encode (``encode_image``,
amazon preset 1600 px, quality from OutputConfig). Medians over rounds.

Overlap (``--overlap``): the whole per-photo job (decode, clean with the model at the
default runtime, JPEG write) in P processes x T model threads (2x1, the default layout
on 2 cores, and 1x2), serial vs overlapped: a 2-thread pool decodes the next photo and
encodes/writes the previous result while the model runs (Pillow, OpenCV and the model
runtimes release the GIL). Photos/s of the timed loop (model loaded and warmed up
first, processes started together), alternating rounds, medians.

Halo metric (``--halo``): on each dev photo with its u2netp mask a, a synthetic
photo is composed with a known foreground F (the photo) and a known background B
(a saturated colour, different per photo): I = aF + (1-a)B (float, then uint8).
The estimator gets (I, a); reported is the mean absolute colour error |F_est - F|
(0-255, averaged over channels) over the band 0 < a < 255, and the error of the
on-white result aF_est + (1-a)255 vs aF + (1-a)255 over the same band (what a
viewer sees as a halo). Lower is better; "ml" is pymatting's estimator (today's),
"blur" blur-fusion, "none" no estimation.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench._common import cpu_name  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
STAGES = ("decode", "mask", "compose", "checks", "encode")


def photo_list(n: int, data: Path = DATA) -> list[Path]:
    photos = sorted((data / "clothing_small" / "validation").glob("*/*.jpg"))
    if len(photos) < n:
        raise SystemExit(f"need {n} photos under {data / 'clothing_small'}, found {len(photos)}")
    return [photos[int(i * len(photos) / n)] for i in range(n)]


def masks_for(paths: list[Path], out: Path) -> None:

    from photos.io import load_image
    from removers import segment
    from removers.config import RuntimeConfig

    arrays = {}
    for i, p in enumerate(paths):
        arrays[f"m{i}"] = segment.predict_alpha(load_image(p).convert("RGB"), "u2netp", RuntimeConfig())
    np.savez(out, **arrays)


def worker(paths: list[Path], mask_file: Path) -> dict:
    """Runs inside a process whose sys.path starts with the code under test."""
    import time

    import cv2

    from hygiene import pipeline
    from hygiene.config import CleanConfig
    from photos.config import OutputConfig
    from photos.io import load_image
    from photos.save import encode_image
    from removers import segment

    cv2.setNumThreads(1)
    masks = np.load(mask_file)
    current = {}
    segment.predict_alpha = lambda image, model, runtime=None: current["mask"]
    pipeline.time.perf_counter = time.process_time  # the pipeline's stage timings become CPU time
    cfg, out_cfg = CleanConfig(), OutputConfig()
    totals = {s: [] for s in STAGES}
    for i, p in enumerate(paths):
        t = time.process_time()
        image = load_image(p)
        totals["decode"].append(time.process_time() - t)
        current["mask"] = masks[f"m{i}"]
        res = pipeline.clean(image, cfg)
        for s in ("mask", "compose", "checks"):
            totals[s].append(res.timings.get(s, 0.0))
        t = time.process_time()
        encode_image(res.image, out_cfg)
        totals["encode"].append(time.process_time() - t)
    return {s: sum(v) / len(v) for s, v in totals.items()}


def extract(rev: str, dest: Path) -> None:
    data = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "hygiene"], check=True,
                          capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(dest, filter="data")


def run_worker(code_root: Path, paths: list[Path], mask_file: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(code_root)}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", str(mask_file),
           *[str(p) for p in paths]]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True, cwd=str(code_root))
    return json.loads(out.stdout.strip().splitlines()[-1])


def profile(args) -> None:
    paths = photo_list(args.n, args.data)
    print(json.dumps({"cpu": cpu_name(), "old_rev": args.old_rev, "n": len(paths), "rounds": args.rounds,
                      "load_avg_1m": round(os.getloadavg()[0], 1)}), flush=True)
    with tempfile.TemporaryDirectory(prefix="profile-clean-") as tmp:
        tmp = Path(tmp)
        mask_file = tmp / "masks.npz"
        masks_for(paths, mask_file)
        old_root = tmp / "old"
        extract(args.old_rev, old_root)
        results = {"old": [], "new": []}
        for r in range(args.rounds):
            order = ("old", "new") if r % 2 == 0 else ("new", "old")
            for name in order:
                res = run_worker(old_root if name == "old" else ROOT, paths, mask_file)
                results[name].append(res)
                print(json.dumps({"round": r, "code": name, **{k: round(v * 1000, 1) for k, v in res.items()}}),
                      flush=True)
    med = {name: {s: statistics.median(r[s] for r in rows) for s in STAGES} for name, rows in results.items()}
    print(f"\nCPU ms per photo outside the model, median of {args.rounds} rounds, {len(paths)} photos, "
          f"amazon preset; {cpu_name()}")
    print(f"{'stage':<9} {'old':>8} {'new':>8} {'new/old':>8}")
    for s in (*STAGES, "total"):
        o = sum(med["old"].values()) if s == "total" else med["old"][s]
        n = sum(med["new"].values()) if s == "total" else med["new"][s]
        print(f"{s:<9} {o * 1000:>8.1f} {n * 1000:>8.1f} {n / o if o else float('nan'):>8.2f}")


def halo(args) -> None:
    import cv2

    from hygiene import compose
    from photos.io import load_image
    from removers import segment
    from removers.config import RuntimeConfig

    paths = photo_list(args.n, args.data)
    colours = np.array([(20, 220, 20), (220, 20, 220), (20, 20, 220), (230, 200, 20), (20, 200, 230),
                        (10, 10, 10)], np.float32)
    errs = {m: ([], []) for m in ("none", "ml", "blur")}
    for i, p in enumerate(paths):
        rgb = np.asarray(load_image(p).convert("RGB"))
        a = segment.predict_alpha(load_image(p).convert("RGB"), "u2netp", RuntimeConfig())
        a = compose.tidy_alpha(a, 128, 0.05)
        band = (a > 0) & (a < 255)
        if band.sum() < 50:
            continue
        af = a.astype(np.float32)[..., None] / 255
        f = rgb.astype(np.float32)
        image = np.clip(af * f + (1 - af) * colours[i % len(colours)] + 0.5, 0, 255).astype(np.uint8)
        truth_white = af * f + (1 - af) * 255
        for m in errs:
            est = image if m == "none" else compose.estimate_foreground(image, a, method=m)
            est = est.astype(np.float32)
            errs[m][0].append(float(np.abs(est[band] - f[band]).mean()))
            white = af * est + (1 - af) * 255
            errs[m][1].append(float(np.abs(white[band] - truth_white[band]).mean()))
        print(json.dumps({"photo": p.name, **{m: round(errs[m][0][-1], 2) for m in errs}}), flush=True)
    print(f"\nhalo metric, {len(errs['ml'][0])} clothing photos with u2netp masks, synthetic backgrounds; {cpu_name()}")
    print(f"{'method':<6} {'|F-F*| band':>12} {'on-white err band':>18}")
    for m, (fe, we) in errs.items():
        print(f"{m:<6} {np.mean(fe):>12.2f} {np.mean(we):>18.2f}")
    _ = cv2  # cv2 is imported for its thread setting side effects in compose


def overlap_worker(threads: int, mode: str, out_dir: Path, sync: Path, paths: list[Path]) -> dict:
    """One process of the overlap bench: warm up, wait for the go file, time the loop."""
    import time
    from concurrent.futures import ThreadPoolExecutor

    from hygiene import pipeline
    from hygiene.config import CleanConfig
    from photos.config import OutputConfig
    from photos.io import load_image, save_image_atomic
    from removers.config import RuntimeConfig
    from removers.runtime import limit_threads

    limit_threads(threads)
    cfg, out_cfg = CleanConfig(runtime=RuntimeConfig(threads=threads)), OutputConfig()
    pipeline.clean(load_image(paths[0]), cfg)  # model load and warm-up, untimed
    (sync / f"ready-{os.getpid()}").touch()
    while not (sync / "go").exists():
        time.sleep(0.01)
    t = time.perf_counter()
    if mode == "serial":
        for i, p in enumerate(paths):
            save_image_atomic(pipeline.clean(load_image(p), cfg).image, out_dir / f"{i}.jpg", out_cfg)
    else:
        with ThreadPoolExecutor(2) as pool:
            nxt = pool.submit(load_image, paths[0])
            writes = []
            for i in range(len(paths)):
                image = nxt.result()
                if i + 1 < len(paths):
                    nxt = pool.submit(load_image, paths[i + 1])
                result = pipeline.clean(image, cfg)
                writes.append(pool.submit(save_image_atomic, result.image, out_dir / f"{i}.jpg", out_cfg))
                if len(writes) > 2:
                    writes.pop(0).result()
            for w in writes:
                w.result()
    return {"wall": time.perf_counter() - t, "n": len(paths)}


def overlap(args) -> None:
    import time

    paths = photo_list(args.n, args.data)
    shapes = [(2, 1), (1, 2)]
    res: dict = {}
    print(json.dumps({"cpu": cpu_name(), "n": len(paths), "rounds": args.rounds,
                      "load_avg_1m": round(os.getloadavg()[0], 1)}), flush=True)
    for r in range(args.rounds):
        for procs, threads in shapes:
            for mode in (("serial", "overlap") if r % 2 == 0 else ("overlap", "serial")):
                with tempfile.TemporaryDirectory(prefix="overlap-") as tmp:
                    tmp = Path(tmp)
                    share = [paths[i::procs] for i in range(procs)]
                    env = {**os.environ, "PYTHONPATH": str(ROOT)}
                    ps = [subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--overlap-worker",
                                            str(threads), mode, str(tmp), str(tmp), *map(str, part)],
                                           env=env, stdout=subprocess.PIPE, text=True) for part in share]
                    while len(list(tmp.glob("ready-*"))) < procs and all(p.poll() is None for p in ps):
                        time.sleep(0.05)
                    (tmp / "go").touch()
                    outs = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in ps]
                rate = sum(o["n"] for o in outs) / max(o["wall"] for o in outs)
                res.setdefault((procs, threads, mode), []).append(rate)
                print(json.dumps({"round": r, "procs": procs, "threads": threads, "mode": mode,
                                  "photos_per_s": round(rate, 3)}), flush=True)
    print(f"\nwhole job photos/s (median of {args.rounds} rounds), {len(paths)} photos; {cpu_name()}; "
          f"load avg {os.getloadavg()[0]:.1f}")
    for procs, threads in shapes:
        ser = statistics.median(res[(procs, threads, "serial")])
        ovl = statistics.median(res[(procs, threads, "overlap")])
        print(f"{procs} proc x {threads} threads: serial {ser:.3f}, overlapped {ovl:.3f} (x{ovl / ser:.2f})")


def main(argv=None) -> None:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--overlap-worker":
        threads, mode, out_dir, sync, *paths = sys.argv[2:]
        print(json.dumps(overlap_worker(int(threads), mode, Path(out_dir), Path(sync), [Path(p) for p in paths])))
        return
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--worker":
        mask_file, *paths = sys.argv[2:]
        print(json.dumps(worker([Path(p) for p in paths], Path(mask_file))))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=24)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--old-rev", default="main", help="git revision of the old code")
    ap.add_argument("--data", type=Path, default=DATA, help="shared data folder [../shared/data]")
    ap.add_argument("--halo", action="store_true", help="halo metric of the foreground estimators only")
    ap.add_argument("--overlap", action="store_true", help="serial vs decode/encode overlapped with the model")
    args = ap.parse_args(argv)
    if args.overlap:
        overlap(args)
    else:
        halo(args) if args.halo else profile(args)


if __name__ == "__main__":
    main()
