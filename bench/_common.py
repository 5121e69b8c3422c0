"""Shared plumbing of the benches: the retrieval benches' arguments, run and table, and the CPU
utilisation figure of the speed benches (``tree_cpu_seconds``, ``utilisation``, ``CpuMeter``)."""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CACHE = Path("/tmp/shelfready-cache")
# A run that keeps less than this share of its cores busy is flagged (issue 23: OpenVINO pinned
# every worker to the same core and a third of the machine sat idle).
UTILISATION_FLOOR = 0.90


def given_cores() -> int:
    """Cores this process may run on (its affinity), which its children inherit."""
    import os

    return len(os.sched_getaffinity(0))


def _tree(pid: int | None):
    import psutil

    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def tree_cpu_seconds(pid: int | None = None) -> dict[tuple[int, float], float]:
    """CPU seconds (user + system) of a process and each of its live descendants, by (pid, start
    time). Reaped children's times are left out: whether they reach the parent depends on how it
    waits (Ray's raylet does not pass its workers' on), so ``CpuMeter`` follows every process itself."""
    import psutil

    out = {}
    try:
        procs = _tree(pid)
    except psutil.NoSuchProcess:
        return out
    for p in procs:
        try:
            with p.oneshot():
                t = p.cpu_times()
                out[(p.pid, p.create_time())] = t.user + t.system
        except psutil.NoSuchProcess:
            continue
    return out


def cpu_name() -> str:
    """The CPU's model name, its CPU count and the vector extensions that change kernels (named beside every figure)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
        else:
            name = platform.processor()
        flags = set(next(l for l in Path("/proc/cpuinfo").read_text().splitlines()
                         if l.startswith("flags")).split(":", 1)[1].split())
    except (OSError, StopIteration):
        return platform.processor() or "?"
    keep = [f for f in ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16") if f in flags]
    return f"{name} ({os.cpu_count()} cpus; {' '.join(keep)})"


def utilisation(cpu_seconds: float, wall_seconds: float, cores: int) -> float:
    """CPU used as a share of the cores given over the run."""
    return cpu_seconds / max(1e-9, wall_seconds * cores)


def flag(share: float) -> str:
    """``share`` as a percentage, marked when under UTILISATION_FLOOR."""
    return f"{share * 100:.0f} %" + (f"  << under {UTILISATION_FLOOR * 100:.0f} %" if share < UTILISATION_FLOOR else "")


class CpuMeter:
    """``with CpuMeter(cores) as m: ...`` then ``m.cpu``, ``m.wall``, ``m.share``: the CPU time of a
    process tree over the block (this process and its descendants, or ``pid``'s) per core given.

    The tree is sampled every ``interval`` seconds: each process counts from its first sample (0
    when it started inside the block) to its last, so workers that start and end inside the
    block count too (a process living less than one interval can be missed)."""

    def __init__(self, cores: int | None = None, pid: int | None = None, interval: float = 0.2) -> None:
        self.cores, self.pid, self.interval = cores or given_cores(), pid, interval
        self.cpu = self.wall = self.share = 0.0

    def _sample(self) -> None:
        for key, seconds in tree_cpu_seconds(self.pid).items():
            first = self._first.setdefault(key, 0.0 if self._started else seconds)
            self._last[key] = max(seconds, first)

    def _poll(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> "CpuMeter":
        import threading

        self._first, self._last, self._started = {}, {}, False
        self._sample()
        self._started = True
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._t0 = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.wall = time.perf_counter() - self._t0
        self._stop.set()
        self._thread.join()
        self._sample()
        self.cpu = sum(self._last[k] - self._first[k] for k in self._last)
        self.share = utilisation(self.cpu, self.wall, self.cores)


def parser(description: str, out: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--out", type=Path, default=ROOT / "out" / "bench" / out, help="report folder")
    p.add_argument("--limit", type=int, default=None, help="seeded random subset of the query photos")
    p.add_argument("--seed", type=int, default=0, help="seed of --limit subsets and the bootstrap")
    p.add_argument("--embedder", default=None, help="embedder name [search default]")
    p.add_argument("--workers", type=int, default=1, help="cleaning processes")
    p.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE,
                   help="cleaned images + embeddings, keyed by content hash and settings")
    p.add_argument("--cache-key", default=None,
                   help="pin cleaned images to an existing cache key (default: from config + hygiene code)")
    p.add_argument("--data", type=Path, default=None, help="shared data folder [../shared/data]")
    p.add_argument("--variants", default=None,
                   help="comma-separated query/catalog variants of raw, clean, fused (e.g. fused/fused)")
    p.add_argument("--model", default=None, help="remover, e.g. cascade [hygiene default]")
    p.add_argument("--fallback-model", default=None,
                   help="second remover for the cut-outs the gate does not trust, e.g. u2net, or a "
                        "comma-separated chain tried in turn, e.g. isnet-imgly,u2net [none]")
    p.add_argument("--view", choices=["white", "grey", "blur"], default=None,
                   help="background the embedder sees of a cleaned photo in clean/fused variants "
                        "[search.config.ViewConfig]; a variant may name its own, e.g. clean:blur@0.95")
    p.add_argument("--view-fill", type=float, default=None,
                   help="product share of the embedder's view of a cleaned photo [the preset's fill]")
    return p


def view_config(args):
    """The evaluation's default view from --view / --view-fill (None = ViewConfig's defaults)."""
    import dataclasses

    from search.config import DEFAULT_VIEW

    changes = {k: v for k, v in (("background", getattr(args, "view", None)),
                                 ("fill", getattr(args, "view_fill", None))) if v is not None}
    return dataclasses.replace(DEFAULT_VIEW, **changes)


def git_commit() -> str:
    try:
        rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "hygiene", "search"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return rev + ("+uncommitted" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def run(args, queries, catalog, title: str, clean_catalog: bool, variants=None):
    from hygiene.config import CleanConfig
    from search import create_embedder
    from search.evaluate import EvalConfig, evaluate
    from search.report import verdict_sentence, write_report

    t = time.perf_counter()
    if getattr(args, "variants", None):
        variants = args.variants.split(",")
    cfg = EvalConfig(seed=args.seed, workers=args.workers, cache_dir=args.cache_dir, cache_key=args.cache_key,
                     view=view_config(args))
    removers = {k: v for k in ("model", "fallback_model") if (v := getattr(args, k, None))}
    clean_config = CleanConfig(**removers)
    ev = evaluate(queries, catalog, create_embedder(args.embedder), clean_config, variants=variants,
                  clean_catalog=clean_catalog, config=cfg)
    ev.settings["command"] = "python " + " ".join([sys.argv[0], *sys.argv[1:]])
    ev.settings["git_commit"] = git_commit()
    ev.settings["seconds"] = round(time.perf_counter() - t, 1)
    cw = ev.settings.get("cleaned_with", {})
    ev.settings["note"] = (f"Cleaned with hygiene code {cw.get('hygiene_code', '?')} (git "
                           f"{cw.get('git_commit', '?')[:7]}, {cw.get('created', '?')}); bench run at git "
                           f"{ev.settings['git_commit']}. Command: {ev.settings['command']}")
    index = write_report(ev, args.out, title)
    print(f"\n{title}\n{ev.settings['n_queries']} queries, {ev.settings['n_catalog']} catalog items, "
          f"embedder {ev.settings['embedder']}, {ev.settings['ranking']}")
    print(ev.settings["note"])
    return ev, index, verdict_sentence


def table(ev, names) -> str:
    head = f"| variant | {' | '.join(names)} |"
    lines = [head, "|" + "---|" * (len(names) + 1)]
    for v in ev.variants:
        cells = [f"{ev.metrics[v][m]['mean']:.3f} [{ev.metrics[v][m]['low']:.3f}, {ev.metrics[v][m]['high']:.3f}]"
                 for m in names]
        lines.append(f"| {v} | {' | '.join(cells)} |")
    return "\n".join(lines)


def paired_vs(ev, anchor: str, variants) -> dict:
    """MRR difference of each variant minus ``anchor`` with a seeded paired bootstrap CI (the
    evaluation's resamples and confidence), from the per-photo reciprocal ranks."""
    import numpy as np

    cfg = ev.settings["eval_config"]
    rr = {v: np.array([p["rr_" + v.replace("/", "_")] for p in ev.photos]) for v in [anchor, *variants]}
    n = rr[anchor].size
    idx = np.random.default_rng(cfg["seed"]).integers(0, n, size=(cfg["resamples"], n))
    tail = (1 - cfg["confidence"]) / 2 * 100
    out = {}
    for v in variants:
        boots = (rr[v] - rr[anchor])[idx].mean(axis=1)
        out[v] = (float((rr[v] - rr[anchor]).mean()), float(np.percentile(boots, tail)),
                  float(np.percentile(boots, 100 - tail)))
    return out


def finish(ev, index, verdict_sentence, names) -> None:
    print(table(ev, names))
    for v in ev.variants[1:]:
        print(verdict_sentence(ev, v))
    print("\nMRR difference vs raw/raw (paired bootstrap CI):")
    for v in ev.variants[1:]:
        d = ev.comparisons[v]["diff"]["MRR"]
        print(f"  {v:<40} {d['mean']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]  "
              f"Wilcoxon p {ev.comparisons[v]['wilcoxon_p_rr']:.3g}")
    anchor = ev.headline
    others = [v for v in ev.variants[1:] if v != anchor]
    if others:
        print(f"\nMRR difference vs {anchor} (same photos, paired bootstrap CI):")
        for v, (mean, low, high) in paired_vs(ev, anchor, others).items():
            print(f"  {v:<40} {mean:+.3f} [{low:+.3f}, {high:+.3f}]")
    excl = len(ev.excluded)
    print(f"needs_review: {sum(p['status'] == 'needs_review' for p in ev.photos)} of {len(ev.photos)}; "
          f"left out: {excl}; {ev.settings['seconds']} s")
    print(f"report: {index}")
