"""Photos cleaned as a group: their remover masks in one batched model call, then each photo alone.

``process_group(job, tasks) -> rows`` is ``process_one`` for several photos at
once, for engines that hand a worker several photos (the Ray actors on a GPU):

1. every photo is loaded (one that cannot be is left to ``process_one``, which
   reads it again and makes its usual error row);
2. the photos the remover must see (``pipeline.needs_model``) get their masks
   from ``segment_batch.predict_alphas``: one model call per
   ``RuntimeConfig.batch_size()`` photos;
3. each photo is finished by ``process_one(job, task, image, alpha)``: the same
   code, rows and output files as a photo run alone.

When the remover does not run batched (``segment_batch.batched``: batch size 1,
OpenVINO, rembg's other models) this is ``process_one`` per photo. If the
batched call fails (a GPU out of memory, a missing weight), each photo runs
alone and reports its own outcome.
"""
from __future__ import annotations

import time
from collections.abc import Sequence

from .batch import load_task, process_one
from .job import BatchJob, Task


def process_group(job: BatchJob, tasks: Sequence[Task]) -> list[dict]:
    """Rows of ``tasks`` (in order), as ``process_one`` makes them; never raises."""
    from hygiene.pipeline import needs_model
    from removers.segment_batch import batched, predict_alphas

    if len(tasks) < 2 or not batched(job.clean.model, job.clean.runtime):
        return [process_one(job, task) for task in tasks]
    images, seconds, tasks = {}, {}, list(tasks)
    for i, task in enumerate(tasks):
        t = time.perf_counter()
        try:
            images[i], tasks[i] = load_task(task, job.limits)  # a URI's task gains its bytes' sha256
        except Exception:  # noqa: BLE001 - process_one reads it again and reports it
            pass
        seconds[i] = time.perf_counter() - t
    todo = [i for i, image in images.items() if needs_model(image)]
    alphas, share = {}, 0.0
    if todo:
        t = time.perf_counter()
        try:
            alphas = dict(zip(todo, predict_alphas([images[i] for i in todo], job.clean.model,
                                                   job.clean.runtime)))
        except Exception:  # noqa: BLE001 - each photo then runs alone and reports its own outcome
            alphas = {}
        share = (time.perf_counter() - t) / len(todo)
    rows = []
    for i, task in enumerate(tasks):
        row = process_one(job, task, images.pop(i, None), alphas.pop(i, None))
        spent = seconds[i] + (share if i in todo else 0.0)  # its load and its part of the model call
        row["seconds"] = round(row["seconds"] + spent, 3)
        if "timings" in row and i in todo:
            row["timings"]["segment"] = round(row["timings"]["segment"] + share, 4)
        rows.append(row)
    return rows
