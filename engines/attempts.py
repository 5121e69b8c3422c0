"""How often each Ray task has been started: the cap on retries of a task whose actor keeps dying.

Ray Data retries the task of an actor that died (SIGKILL, OOM, its node
removed) on a restarted actor, without limit: that is its default, and since
Ray 2.60 ``map_batches`` takes no ``max_task_retries`` (``**ray_remote_args``
is deprecated, removal in 2.64). So a photo that crashes every worker that
touches it would be retried for ever. Each actor asks this counter (one small
Ray actor a job, 0 CPUs, on the driver's node, which the job cannot outlive)
before it starts a task; a task started more than ``RayConfig.task_retries + 1``
times is not run again but answered as lost, so the job goes on.

The counter lives on the head node (which the cluster cannot lose) and is
restarted by Ray if it dies anyway; its counts then start again from zero, and
an actor that cannot reach it runs the task (the cap is a guard, never a reason
to lose a photo).
"""
from __future__ import annotations


class Attempts:
    """A Ray actor: task key -> times started."""

    def __init__(self) -> None:
        self.started: dict[str, int] = {}

    def begin(self, key: str) -> int:
        """Count one more start of ``key``; return how many there have been (1 the first time)."""
        self.started[key] = self.started.get(key, 0) + 1
        return self.started[key]


def attempts_counter(ray):
    """A new counter for one job, on the head node."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    heads = [n["NodeID"] for n in ray.nodes() if n.get("Alive") and "node:__internal_head__" in n.get("Resources", {})]
    where = ray.get_runtime_context().get_node_id() if not heads else heads[0]
    return ray.remote(Attempts).options(
        num_cpus=0, max_restarts=-1, max_task_retries=-1,
        scheduling_strategy=NodeAffinitySchedulingStrategy(where, soft=True)).remote()


def started(counter, key: str) -> int:
    """In an actor: count a start of task ``key`` and return the count (1 if the counter is unreachable)."""
    import ray

    try:
        return int(ray.get(counter.begin.remote(str(key)), timeout=60))
    except (ray.exceptions.RayError, TimeoutError):  # GetTimeoutError is both
        return 1
