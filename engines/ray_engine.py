"""`shelfready clean --engine ray`: the local engine's batch, with Ray Data actors instead of the pool.

Everything but the scheduling is engines.batch's: the driver locks OUT, removes
stale temp files and plans (``plan_batch``: the manifest decides what is done);
each actor of a ``map_batches`` actor pool holds one remover session and runs
``process_one`` (the per-photo step of the local engine) on one photo at a
time or, when the remover runs batched (``RuntimeConfig.batch_size()`` > 1, the
default on cuda), ``engines.batch_group.process_group`` on ``batch_size()``
photos (their masks in one model call, then each photo finished by
``process_one``); the rows stream back to the driver, which alone appends them to the
manifest (``Recorder``) and writes the summary (``write_summary``). So the
output files, the manifest and the summary are those of the local engine (the
rows' ``seconds``/``timings`` are timings of the run, as between any two runs).

Exactly once: only the driver writes the manifest, one fsynced line per photo as
its row arrives. A driver killed mid-job leaves every recorded photo in the
manifest and the rest undone (outputs are written atomically, temp files of
killed writers are removed at the next start); the re-run skips the first and
does the second. An actor that dies (SIGKILL, OOM, its node removed) is
restarted by Ray and its photo retried (Ray Data's own actor fault tolerance);
a photo started more than ``RayConfig.task_retries + 1`` times (counted by
``engines.attempts``) is not run again but reported failed in the summary (not in
the manifest, so the next run tries it again), so a photo that kills every
worker cannot stall the job. With batched removers an actor call holds several
photos, and such a photo takes the others of its call down with it (they too are
reported lost, and done by the next run).

Which node cleaned each photo is appended to ``OUT/.shelfready-nodes.jsonl``
(rel, node id, node address, settings, photos in its actor call), not to the
manifest or summary, which stay identical to the local engine's.
"""
from __future__ import annotations

import dataclasses
import json
import os
import pickle
import signal
import sys
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path

from engines.batch import init_worker, run_with, with_threads
from engines.job import OK_STATUSES, BatchJob, BatchSummary, Task
from engines.pool import signals_caught
from engines.recorder import Recorder
from engines.records import run_log
from photos.keys import one_line

from . import EngineError
from .attempts import attempts_counter, started
from .cluster import pool_size, ray_connection
from .config import RayConfig

NODES_FILE = ".shelfready-nodes.jsonl"


class CleanActor:
    """One Ray actor: a remover session loaded once, then ``process_one`` per photo (or
    ``process_group`` per call when the remover runs batched)."""

    def __init__(self, job: BatchJob, threads: int, attempts, tries: int, process=None) -> None:
        import ray

        from removers.models import ModelError
        from removers.segment import get_session
        from removers.segment_batch import batched, get_batch_session

        init_worker(threads)
        self.job, self.attempts, self.tries = job, attempts, tries
        self.process = process  # the per-photo step; None: process_one (tests inject a crashing one)
        ctx = ray.get_runtime_context()
        self.node = ctx.get_node_id()
        self.address = ray.util.get_node_ip_address()
        try:  # warm the session; a missing weight becomes each photo's one-line error, as locally
            load = get_batch_session if batched(job.clean.model, job.clean.runtime) else get_session
            load(job.clean.model, job.clean.runtime)
        except ModelError:
            pass

    def __call__(self, batch: dict) -> dict:
        import numpy as np

        rows = [pickle.dumps(r) for r in self._rows([(int(i), pickle.loads(t))
                                                     for i, t in zip(batch["i"], batch["task"])])]
        n = len(rows)
        return {"i": batch["i"], "row": np.array(rows, dtype=object),
                "node": np.array([self.node] * n, dtype=object),
                "address": np.array([self.address] * n, dtype=object),
                "batch": np.full(n, n, dtype=np.int64)}

    def _rows(self, items: list[tuple[int, Task]]) -> list[dict]:
        """Rows in the order of ``items``: photos given up on are lost rows; the others run one by
        one (``process_one``, or the test's ``process``) or, several at once, as one group."""
        from engines.batch_group import process_group

        lost = {i for i, _ in items if started(self.attempts, str(i)) > self.tries}  # actor died every time
        run = [task for i, task in items if i not in lost]
        if self.process:
            done = iter([self.process((self.job, task)) for task in run])
        else:
            done = iter(process_group(self.job, run))  # process_one per photo unless the remover batches
        return [_lost_row(self.job, task, self.tries) if i in lost else next(done) for i, task in items]


class _Stopped(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_stopped(signum, _frame):
    """SIGINT/SIGTERM end the streaming loop: recorded photos stay recorded."""
    raise _Stopped(signum)


def _lost_row(job: BatchJob, task: Task, tries: int) -> dict:
    """A photo whose Ray task failed every try: failed in the summary, not in the manifest (the next
    run tries it again; Ray does not say whether its actor died or the engine itself failed)."""
    return {"rel": task.rel, "sha256": task.digest, "settings": job.fingerprint(), "output": "",
            "status": "failed", "error": f"lost on Ray: its task failed {tries} times (actor died or engine "
            "error, see Ray's log); run again to retry", "model": job.clean.model, "reasons": [], "ready": False,
            "failed_checks": "", "seconds": 0.0}


def _dataset(ray, job: BatchJob, todo: list[Task], cfg: RayConfig, size: int, progress: bool, process=None):
    from ray.data import ActorPoolStrategy, DataContext

    ctx = DataContext.get_current()
    ctx.max_errored_blocks = -1  # a block that raised in the actor: recorded as lost, the job goes on
    ctx.enable_progress_bars = progress
    ctx.print_on_execution_start = progress
    threads = job.clean.runtime.threads or cfg.actor_threads
    blocks = max(1, min(len(todo), cfg.max_blocks))
    ds = ray.data.from_items([{"i": i, "task": pickle.dumps(t)} for i, t in enumerate(todo)],
                             override_num_blocks=blocks)
    # Ray Data restarts dead actors and retries their tasks by default (no retry options: since Ray 2.60
    # they would go through the deprecated **ray_remote_args); engines.attempts caps the retries
    return ds.map_batches(
        CleanActor, fn_constructor_kwargs={"job": job, "threads": threads, "attempts": attempts_counter(ray),
                                           "tries": cfg.task_retries + 1, "process": process},
        batch_size=job.clean.runtime.batch_size(), batch_format="numpy", compute=ActorPoolStrategy(size=size),
        num_cpus=cfg.actor_cpus,
        num_gpus=cfg.actor_gpus if job.clean.runtime.device == "cuda" else None)


def run_batch_ray(job: BatchJob, cfg: RayConfig = RayConfig(), progress: bool = True,
                  sources: Sequence[Path] | None = None, summary_files: bool = True,
                  wait_for_folder: bool = False, process=None) -> BatchSummary:
    """``engines.batch.run_batch`` on Ray: same arguments and result, same files in OUT (``process``:
    the per-photo step, as run_batch's; None is ``process_one``)."""

    def execute(job: BatchJob, todo: list[Task], summary: BatchSummary) -> int:
        nonlocal cfg
        job = with_threads(job, cfg.actor_threads)
        cfg = cfg if cfg.address or cfg.num_cpus else dataclasses.replace(cfg, num_cpus=job.batch.workers)
        return _run(job, todo, summary, cfg, progress, process)

    return run_with(execute, job, sources, summary_files, wait_for_folder)


def _run(job: BatchJob, todo: list[Task], summary: BatchSummary, cfg: RayConfig, progress: bool,
         process=None) -> int:
    """Stream the rows of the actors into the manifest; returns the signal that stopped it, or 0."""
    def show(row: dict) -> None:
        if progress and row["status"] not in OK_STATUSES:
            print(f"error: {row['rel']}: {row['error']}", file=sys.stderr)

    recorder = Recorder(job, summary, show)
    try:  # close: the records of an OUT on an object store are PUT by a writer thread (engines.batch)
        return _stream(job, todo, summary, cfg, progress, process, recorder)
    finally:
        recorder.close()


def _stream(job: BatchJob, todo: list[Task], summary: BatchSummary, cfg: RayConfig, progress: bool, process,
            recorder: Recorder) -> int:
    pending = dict(enumerate(todo))  # by position: two photos with the same bytes are two tasks
    with ray_connection(cfg) as ray, closing(run_log(job.out_dir, NODES_FILE)) as nodes:  # photos.store
        runtime = job.clean.runtime
        size = pool_size(cfg, ray, -(-len(todo) // runtime.batch_size()), gpus=runtime.device == "cuda")
        ds = _dataset(ray, job, todo, cfg, size, progress, process)
        try:
            with signals_caught(_raise_stopped):
                for batch in ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=0):
                    for i, blob, node, address, n in zip(batch["i"], batch["row"], batch["node"], batch["address"],
                                                         batch["batch"]):
                        if pending.pop(int(i), None) is None:
                            continue  # already recorded (never expected: a block is delivered once)
                        row = pickle.loads(blob)
                        recorder.record(row)
                        nodes.write(json.dumps({"rel": row["rel"], "node": node, "address": address,
                                                "settings": row["settings"], "batch": int(n)}) + "\n")
                        nodes.flush()
        except (_Stopped, KeyboardInterrupt) as exc:
            return int(exc.signum) if isinstance(exc, _Stopped) else int(signal.SIGINT)
        except Exception as exc:  # noqa: BLE001 - the cluster went away, Ray gave up: one line, resumable
            raise EngineError(f"the Ray job stopped: {one_line(exc)}; {len(todo) - len(pending)} photos are "
                              "recorded, run the same command again to do the rest") from None
        for task in list(pending.values()):  # blocks that raised in the actor (an engine error)
            recorder.record(_lost_row(job, task, cfg.task_retries + 1))
        if hasattr(nodes, "fileno"):  # a local file (on an object store: one object, PUT at the end)
            os.fsync(nodes.fileno())
    return 0
