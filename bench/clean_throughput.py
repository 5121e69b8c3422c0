"""Photos/s of `shelfready clean` vs `rembg p -m u2netp` on the same folder, same run.

    python bench/clean_throughput.py                       # 120 clothing photos, 3 rounds
    python bench/clean_throughput.py --n 40 --rounds 2 --workers 1,2 --model u2netp
    python bench/clean_throughput.py --workers 2 --runtimes auto --baseline /tmp/old-checkout

``--baseline DIR`` adds, per model x workers, the first runtime run from another checkout
of this project (DIR, e.g. ``git archive`` of an older commit): before/after in one run.
A fixed list of photos (every k-th of ../shared/data/clothing_small/validation) is
copied to a temp folder. Each round runs every contender once, in an order that
rotates from round to round; a contender is timed as the whole command (start-up
and model load included, as a user sees it). Reported per contender: median
photos/s, its ratio to rembg's, CPU seconds per photo (user+sys of all its
processes: steadier than wall time on a shared machine), CPU utilisation (that
CPU time as a share of the cores given over the wall time; under 90 % is flagged:
cores left idle, e.g. workers pinned to the same core, issue 23), peak RSS of the
largest single process (a worker) and peak RSS of the whole process tree. On a
shared machine other jobs depress the utilisation of every contender alike: read
it against rembg's in the same run.
rembg does less work: a cut-out PNG at input size. shelfready does the full job:
cut-out, white compose with foreground estimation, square frame resized to the
preset's 1600 px (less when that would enlarge the product > 2x), readiness checks, JPEG write, manifest.
The model-only ceiling (session.run alone, 320x320, 1 process x 2 threads and
2 processes x 1 thread) comes from bench/model_speed.py, run with --model-limit.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench._common import flag, given_cores, utilisation  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
BIN = Path(sys.executable).parent

# Runs a command and prints its children's peak RSS (KiB) and CPU seconds: the
# rusage of every waited-for descendant, so pool workers are included.
_RUSAGE = ("import resource,subprocess,sys;r=subprocess.run(sys.argv[1:]);"
           "u=resource.getrusage(resource.RUSAGE_CHILDREN);"
           "print('RUSAGE',r.returncode,u.ru_maxrss,u.ru_utime+u.ru_stime,file=sys.stderr)")


def photo_list(n: int, data: Path = DATA) -> list[Path]:
    photos = sorted((data / "clothing_small" / "validation").glob("*/*.jpg"))
    if len(photos) < n:
        raise SystemExit(f"need {n} photos under {data / 'clothing_small'}, found {len(photos)}")
    return [photos[int(i * len(photos) / n)] for i in range(n)]


def _tree_rss_kib(root: int) -> int:
    """Sum of VmRSS over a process and its descendants (Linux /proc)."""
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
            for task in Path(f"/proc/{pid}/task").iterdir():
                todo.extend(int(c) for c in (task / "children").read_text().split())
        except (OSError, ValueError):
            continue
    return total


def run_timed(cmd: list[str], env: dict, cwd: Path | None = None) -> dict:
    """Run ``cmd`` (in ``cwd``: ``python -m cli`` imports the checkout of the working folder, which
    comes before PYTHONPATH) and measure it."""
    peak = [0]
    proc = subprocess.Popen([sys.executable, "-c", _RUSAGE, *cmd], env=env, cwd=cwd,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    t0 = time.perf_counter()
    done = threading.Event()

    def poll() -> None:
        while not done.wait(0.25):
            peak[0] = max(peak[0], _tree_rss_kib(proc.pid))

    th = threading.Thread(target=poll, daemon=True)
    th.start()
    _, err = proc.communicate()
    wall = time.perf_counter() - t0
    done.set()
    th.join()
    line = [x for x in err.splitlines() if x.startswith("RUSAGE ")]
    if not line:
        raise SystemExit(f"{cmd[0]} crashed: {err[-500:]}")
    _, rc, maxrss, cpu = line[-1].split()
    if int(rc) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed with {rc}: {err[-800:]}")
    return {"wall": wall, "cpu": float(cpu), "worker_rss_mib": int(maxrss) / 1024,
            "tree_rss_mib": peak[0] / 1024}


def contenders(models: list[str], workers: list[int], runtimes: list[str],
               baseline: Path | None = None) -> dict[str, tuple[list[str], dict, Path]]:
    """rembg, then shelfready (this checkout's code: ``python -m cli``) per model x workers x runtime,
    and with ``baseline`` the first runtime from that checkout.

    A runtime is ``RUNTIME[/PRECISION]`` (e.g. ``auto``, ``openvino/bf16``, ``onnxruntime/fp32``)."""
    base_env = {k: v for k, v in os.environ.items() if k not in ("SHELFREADY_THREADS", "PYTHONPATH")}
    env = dict(base_env, PYTHONPATH=str(ROOT))
    out = {"rembg p -m u2netp": ([str(BIN / "rembg"), "p", "-m", "u2netp"], env, ROOT)}
    for model in models:
        for w in workers:
            if baseline is not None:
                engine, _, precision = runtimes[0].partition("/")
                out[f"shelfready clean --model {model} --workers {w} --runtime {engine} "
                    f"--precision {precision or 'auto'} [baseline {baseline.name}]"] = (
                    [sys.executable, "-m", "cli", "clean", "--quiet", "--model", model, "--workers", str(w),
                     "--runtime", engine, "--precision", precision or "auto"],
                    dict(base_env, PYTHONPATH=str(baseline.resolve())), baseline.resolve())
            for rt in runtimes:
                engine, _, precision = rt.partition("/")
                flags = ["--runtime", engine, "--precision", precision or "auto"]
                out[f"shelfready clean --model {model} --workers {w} {' '.join(flags)}"] = (
                    [sys.executable, "-m", "cli", "clean", "--quiet", "--model", model, "--workers", str(w),
                     *flags], env, ROOT)
    return out


def check_outputs(name: str, out_dir: Path, n: int) -> None:
    from PIL import Image

    files = [p for p in out_dir.rglob("*") if p.suffix.lower() in (".png", ".jpg") and not p.name.startswith(".")]
    if len(files) != n:
        raise SystemExit(f"{name}: {len(files)} outputs for {n} photos in {out_dir}")
    if name.startswith("shelfready"):
        with Image.open(files[0]) as im:
            if im.format != "JPEG" or im.width != im.height:
                raise SystemExit(f"{name}: unexpected output {im.format} {im.size}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=120)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--models", default="u2netp", help="comma list of shelfready --model values")
    ap.add_argument("--workers", default="1,2", help="comma list of shelfready --workers values")
    ap.add_argument("--runtimes", default="auto,openvino/bf16",
                    help="comma list of RUNTIME[/PRECISION] for shelfready (see --runtime/--precision)")
    ap.add_argument("--data", type=Path, default=DATA, help="shared data folder [../shared/data]")
    ap.add_argument("--baseline", type=Path, help="another checkout: its shelfready runs too (first runtime)")
    ap.add_argument("--model-limit", action="store_true", help="also run bench/model_speed.py layout")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    runs = contenders(a.models.split(","), [int(w) for w in a.workers.split(",")], a.runtimes.split(","),
                      a.baseline)
    names = list(runs)
    res: dict[str, list[dict]] = {k: [] for k in names}
    cores = given_cores()
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="shelfready-bench-") as tmp:
        src = Path(tmp) / "in"
        src.mkdir()
        for i, p in enumerate(photo_list(a.n, a.data)):
            shutil.copy(p, src / f"{i:03d}_{p.parent.name}.jpg")
        for r in range(a.rounds):
            order = names[r % len(names):] + names[: r % len(names)]
            for name in order:
                cmd, env, cwd = runs[name]
                out = Path(tmp) / f"out-{r}-{names.index(name)}"
                m = run_timed(cmd + [str(src), str(out)], env, cwd)
                check_outputs(name, out, a.n)
                shutil.rmtree(out)
                m["photos_per_s"] = a.n / m["wall"]
                m["utilisation"] = utilisation(m["cpu"], m["wall"], cores)
                res[name].append(m)
                print(f"round {r + 1}: {name}: {m['photos_per_s']:.2f} photos/s, "
                      f"{m['cpu'] / a.n:.3f} CPU s/photo, CPU {m['utilisation'] * 100:.0f} % of {cores} cores",
                      flush=True)
    base = statistics.median(m["photos_per_s"] for m in res[names[0]])
    base_cpu = statistics.median(m["cpu"] for m in res[names[0]])
    rows = []
    from bench._common import cpu_name

    load_end = os.getloadavg()
    print(f"\n{a.n} photos, {a.rounds} rounds, {cpu_name()}, {cores} cores given, load avg (1 min) "
          f"{load_start[0]:.1f} at start, {load_end[0]:.1f} at end")
    for name in names:
        ms = res[name]
        row = {"contender": name, "photos_per_s": statistics.median(m["photos_per_s"] for m in ms),
               "cpu_s_per_photo": statistics.median(m["cpu"] for m in ms) / a.n,
               "worker_rss_mib": max(m["worker_rss_mib"] for m in ms),
               "tree_rss_mib": max(m["tree_rss_mib"] for m in ms),
               "utilisation": statistics.median(m["utilisation"] for m in ms)}
        row["vs_rembg"] = row["photos_per_s"] / base
        row["cpu_vs_rembg"] = statistics.median(m["cpu"] for m in ms) / base_cpu
        rows.append(row)
        print(f"  {name:45s} {row['photos_per_s']:5.2f} photos/s  x{row['vs_rembg']:.2f} vs rembg  "
              f"{row['cpu_s_per_photo']:.3f} CPU s/photo (x{row['cpu_vs_rembg']:.2f})  "
              f"CPU {flag(row['utilisation'])} of {cores} cores  "
              f"peak RSS worker {row['worker_rss_mib']:.0f} MiB, tree {row['tree_rss_mib']:.0f} MiB")
    out = {"n": a.n, "rounds": a.rounds, "cpu": cpu_name(), "cores": cores,
           "load_average": [load_start, load_end], "rows": rows, "raw": res}
    if a.model_limit:
        sys.path.insert(0, str(ROOT / "bench"))
        import model_speed

        out["model_limit"] = model_speed.layout(["fp32"], [(1, 2), (2, 1)], 8, 1, Path(tempfile.gettempdir()) / "shelfready-bench")
        model_speed.show("model-only ceiling (session.run, 320x320)", out["model_limit"])
    if a.json:
        a.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
