"""The Ray batch backend: the same jobs on a Ray cluster, one long-lived actor per GPU slot.

Each actor builds an in-process executor (engine.runtime.make_executor) once and keeps it, with
its loaded models and its cache, for every job it runs. Jobs write their files straight into the
batch folder, which must be a path every node sees (a shared file system); only a small result
record travels back through Ray, never the outputs.

Connecting: a Ray instance already initialised in this process is used as it is; otherwise an
`address` ("auto", "ray://host:10001", "host:6379") joins a running cluster, and without one a
local instance is started (dashboard off, so no listener beyond Ray's own local ports) and shut
down at the end.
Actors see this project through PYTHONPATH; on a cluster without a shared checkout, install
Reelgraph on every node instead (and keep model roots and node packs at the same paths).

Invariants: an actor or node that dies is replaced by a fresh actor and its job retried up to
`retries` times (our own loop, so attempts are counted and recorded like the local pool's); a node
that raises fails its job without a retry. Ray is optional: without it, `RayPool` raises a
BatchError that says how to install it.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from typing import Any, Sequence

from engine import bundle
from engine.batch.jobs import (JobListener, JobResult, JobStatus, JobTask, StopSignal, host_label,
                               run_task_in_process)
from engine.batch.manifest import BatchDir
from engine.batch.matrix import BatchError
from engine.config import Settings

INSTALL_HINT = ("--executor ray needs Ray, an optional extra: pip install 'reelgraph[ray]' "
                "(or pip install 'ray[default]')")
# On Ray workers' PYTHONPATH: the folder holding the engine package (a checkout or site-packages).
_PROJECT_ROOT = str(bundle.code_root())


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise BatchError(INSTALL_HINT) from None
    return ray


class JobActor:
    """Lives in a Ray worker process; wrapped with ray.remote by RayPool."""

    def __init__(self, settings_json: dict[str, Any], slot: str):
        from engine.context import InterruptFlag
        from engine.runtime import make_executor

        self.executor = make_executor(Settings.from_json(settings_json))
        self.flag = InterruptFlag()
        self.label = f"{slot} {host_label()}"

    def describe(self) -> str:
        return self.label

    def run_job(self, task: JobTask, root: str, attempts: int) -> JobResult:
        self.flag.clear()
        return run_task_in_process(self.executor, task, BatchDir(root), self.label, self.flag,
                                   attempts)

    def interrupt(self) -> None:
        """Runs on the actor's second thread (max_concurrency=2) while run_job is busy."""
        self.flag.set()


class RayPool:
    """A set of Ray actors for batches; see the module docstring."""

    label = "ray"
    boot_attempts = 3  # an actor slot whose actor dies this many times while starting is given up

    def __init__(self, settings: Settings | None = None, address: str | None = None,
                 workers: int | None = None, gpus_per_job: int = 1, retries: int = 2,
                 stop_grace: float = 10.0, max_workers: int | None = None):
        self.ray = ray = import_ray()
        self.settings = settings or Settings()
        self.retries = max(0, retries)
        self.stop_grace = stop_grace
        self._owns_ray = False
        if not ray.is_initialized():
            init = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
            try:
                if address:
                    ray.init(address=address, **init)
                else:
                    # A private Ray for this batch. Ray cannot be bound to loopback (it rewrites
                    # 127.0.0.1 to the host's address and its gRPC servers listen on every
                    # interface); what keeps other hosts out is its token authentication, on by
                    # default for a new local instance (~/.ray/auth_token), unless turned off.
                    if os.environ.get("RAY_AUTH_MODE", "").lower() == "disabled":
                        logging.getLogger("reelgraph.batch").warning(
                            "RAY_AUTH_MODE=disabled: the local Ray started for this batch "
                            "accepts work from any host that can reach this machine")
                    ray.init(num_cpus=max(2, workers or 1), **init)
            except Exception as exc:  # unreachable address, version mismatch, no local resources
                where = f"the Ray cluster at {address!r}" if address else "a local Ray instance"
                raise BatchError(f"cannot start or join {where}: {_first_line(exc)}") from None
            self._owns_ray = True
        self._actor_cls = ray.remote(JobActor)
        self._options = self._actor_options(workers, gpus_per_job)
        count = self._options.pop("count")
        if max_workers:  # never more actors than jobs to run
            count = max(1, min(count, max_workers))
        self._probes: dict[Any, int] = {}  # describe() ref -> slot, for actors still starting
        self._boot_failures = [0] * count
        self._last_error = ""
        self.labels = [f"ray-{slot}" for slot in range(count)]  # "ray-0 host pid N" once known
        self.actors = [self._new_actor(slot) for slot in range(count)]

    def _actor_options(self, workers: int | None, gpus_per_job: int) -> dict[str, Any]:
        resources = self.ray.cluster_resources()
        gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 0))
        per_job = max(1, gpus_per_job)
        if gpus:
            count = workers or max(1, gpus // per_job)
            if count * per_job > gpus:
                raise BatchError(f"{count} Ray actors x {per_job} GPU(s) need {count * per_job} GPUs; "
                                 f"the cluster has {gpus}: lower --workers or --gpus-per-job")
        else:
            count, per_job = workers or 1, 0
        if count > cpus:
            raise BatchError(f"{count} Ray actors need one CPU each; the cluster has {cpus}: "
                             "lower --workers")
        path = os.pathsep.join(p for p in (_PROJECT_ROOT, os.environ.get("PYTHONPATH")) if p)
        return {"count": count, "num_cpus": 1, "num_gpus": per_job, "max_concurrency": 2,
                "max_restarts": 0, "max_task_retries": 0,
                "runtime_env": {"env_vars": {"PYTHONPATH": path}}}

    def _new_actor(self, slot: int) -> Any:
        """Create a slot's actor. It gets jobs only once its describe() probe answers, so a slow
        node starting up never holds a job that a ready actor could run."""
        actor = self._actor_cls.options(**self._options).remote(self.settings.to_json(), f"ray-{slot}")
        self._probes[actor.describe.remote()] = slot
        return actor

    def _probe_answered(self, ref: Any) -> None:
        slot = self._probes.pop(ref)
        try:
            self.labels[slot] = self.ray.get(ref)
            self._boot_failures[slot] = 0
        except self.ray.exceptions.RayError as exc:
            self._boot_failures[slot] += 1
            self._last_error = f"{type(exc).__name__}: {_first_line(exc)}"
            if self._usable(slot):
                self.actors[slot] = self._new_actor(slot)

    def _usable(self, slot: int) -> bool:
        return self._boot_failures[slot] < self.boot_attempts

    @property
    def size(self) -> int:
        return len(self.actors)

    def start(self, wait: bool = True, timeout: float = 300.0) -> None:
        """Wait until every actor has built its executor (imports done), so that timings which
        follow exclude start-up."""
        deadline = time.monotonic() + timeout
        while wait and self._probes and time.monotonic() < deadline:
            ready, _ = self.ray.wait(list(self._probes), num_returns=1, timeout=1.0)
            for ref in ready:
                self._probe_answered(ref)

    def close(self) -> None:
        for actor in self.actors:
            try:
                self.ray.kill(actor)
            except Exception:
                pass
        self.actors, self._probes = [], {}
        if self._owns_ray and self.ray.is_initialized():
            self.ray.shutdown()

    def __enter__(self) -> "RayPool":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---- running a batch -------------------------------------------------------------------
    def execute(self, tasks: Sequence[JobTask], batch_dir: BatchDir, listener: JobListener,
                stop: StopSignal) -> None:
        ray = self.ray
        queue = deque(tasks)
        attempts: dict[str, int] = {}
        inflight: dict[Any, tuple[int, JobTask]] = {}  # ObjectRef -> (actor slot, task)
        stop_deadline: float | None = None
        while queue or inflight:
            if stop.requested:
                queue.clear()  # jobs never started stay unrecorded and run next time
                if stop_deadline is None:
                    stop_deadline = time.monotonic() + self.stop_grace
                    for slot, _ in inflight.values():
                        self.actors[slot].interrupt.remote()
                if stop.forced or time.monotonic() > stop_deadline:
                    for slot, task in inflight.values():
                        ray.kill(self.actors[slot])
                        self.actors[slot] = self._new_actor(slot)
                        listener.finished(JobResult(task.id, JobStatus.INTERRUPTED, error="killed on stop",
                                                    attempts=attempts[task.id], worker=f"ray-{slot}"))
                    return
            busy = {slot for slot, _ in inflight.values()}
            starting = set(self._probes.values())
            for slot in range(self.size):
                if queue and slot not in busy and slot not in starting and self._usable(slot):
                    task = queue.popleft()
                    attempts[task.id] = attempts.get(task.id, 0) + 1
                    ref = self.actors[slot].run_job.remote(task, str(batch_dir.root), attempts[task.id])
                    inflight[ref] = (slot, task)
                    listener.started(task, self.labels[slot])
            if queue and not inflight and not self._probes:  # every slot gave up starting
                for task in queue:
                    listener.finished(JobResult(task.id, JobStatus.FAILED, attempts=0, error="no Ray actor "
                                                f"could start: {self._last_error}"))
                return
            ready, _ = ray.wait([*inflight, *self._probes], num_returns=1, timeout=0.2)
            for ref in ready:
                if ref in self._probes:
                    self._probe_answered(ref)
                    continue
                slot, task = inflight.pop(ref)
                result = self._collect(ref, slot, task, attempts[task.id], stop)
                if result is None:  # the actor died: retry on its replacement
                    listener.retrying(task, self.labels[slot], self._last_error,
                                      attempts[task.id] + 1)
                    self.labels[slot] = f"ray-{slot}"
                    queue.appendleft(task)
                else:
                    self.labels[slot] = result.worker or self.labels[slot]
                    listener.finished(result)

    def _collect(self, ref: Any, slot: int, task: JobTask, attempt: int,
                 stop: StopSignal) -> JobResult | None:
        """The job's result, or None when its actor died and the job should be retried."""
        ex = self.ray.exceptions
        lost = tuple(getattr(ex, n) for n in ("RayActorError", "WorkerCrashedError", "NodeDiedError",
                                               "ObjectLostError", "OwnerDiedError") if hasattr(ex, n))
        try:
            return self.ray.get(ref)
        except lost as exc:
            self.actors[slot] = self._new_actor(slot)  # possibly on another node
            self._last_error = f"{type(exc).__name__}: {_first_line(exc)}"
            if stop.requested:
                return JobResult(task.id, JobStatus.INTERRUPTED, error=self._last_error, attempts=attempt,
                                 worker=f"ray-{slot}")
            if attempt <= self.retries:
                return None
            return JobResult(task.id, JobStatus.FAILED, error=f"the Ray worker died on "
                             f"{'every' if attempt > 1 else 'its'} attempt ({attempt}): "
                             f"{self._last_error}", attempts=attempt, worker=f"ray-{slot}")
        except ex.RayTaskError as exc:  # run_job itself raised: an engine bug, not the node
            return JobResult(task.id, JobStatus.FAILED, error=_first_line(exc), attempts=attempt,
                             worker=f"ray-{slot}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
