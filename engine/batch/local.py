"""The local batch backend: a pool of spawned worker processes (engine.worker.WorkerClient).

Each worker owns an executor, its cache and its loaded models for the pool's whole life, so a
50-prompt batch loads the DiT once per worker, not once per job. With GPUs there is one worker per
GPU (or per `gpus_per_job` GPUs), pinned with CUDA_VISIBLE_DEVICES; on a CPU-only machine the pool
has one worker unless told otherwise, and the CPU threads (all cores but one) are shared out
between workers.

Invariants:
- A worker that crashes (segfault, out-of-memory kill, os._exit in a node) is replaced and its job
  retried, up to `retries` times; a node that raises is a failed job, never retried.
- Workers ignore SIGINT: Ctrl+C reaches only the batch driver, which interrupts running jobs
  cooperatively, waits `stop_grace` seconds, then kills what is left (at once on a second Ctrl+C).
- The pool outlives one `execute` call, so several batches (or tests) can share warm workers.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

from engine.batch.jobs import (JobListener, JobResult, JobStatus, JobTask, StopSignal,
                               result_from_run)
from engine.batch.manifest import BatchDir
from engine.batch.matrix import BatchError
from engine.config import Settings
from engine.document import Workflow
from engine.events import RunFinished
from engine.run_api import RunReport, RunStatus
from engine.worker import WorkerClient


def detect_gpus() -> int:
    """CUDA devices visible to this process (0 without CUDA or without torch's CUDA build)."""
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # a broken driver must not stop a CPU batch
        return 0


def worker_envs(workers: int | None, gpus: int, gpus_per_job: int = 1,
                cpu_count: int | None = None) -> list[dict[str, str]]:
    """The environment of each worker: which GPUs it sees, or its share of the CPU threads.

    GPUs are dealt round-robin in blocks of `gpus_per_job`, so more workers than GPUs share them.
    Indices refer to this process's CUDA_VISIBLE_DEVICES when that is set."""
    if gpus <= 0:
        count = max(1, workers or 1)
        if os.environ.get("OMP_NUM_THREADS"):
            return [{} for _ in range(count)]  # the user chose; do not override
        # One core is left to the driver and the system: measured on a busy 2-core machine, a
        # worker given both cores ran the same job 3-15x slower than one given a single core
        # (OpenMP threads spin waiting for a core that someone else holds).
        threads = max(1, ((cpu_count or os.cpu_count() or 1) - 1) // count)
        return [{"OMP_NUM_THREADS": str(threads)} for _ in range(count)]
    per_job = max(1, gpus_per_job)
    if per_job > gpus:
        raise BatchError(f"--gpus-per-job {per_job} but only {gpus} GPU(s) are visible")
    count = workers or max(1, gpus // per_job)
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    ids = visible if len(visible) == gpus else [str(i) for i in range(gpus)]
    return [{"CUDA_VISIBLE_DEVICES": ",".join(ids[(w * per_job + k) % gpus] for k in range(per_job))}
            for w in range(count)]


@contextmanager
def _sigint_ignored() -> Iterator[None]:
    """Start children with SIGINT ignored: the disposition survives exec and CPython keeps an
    ignored SIGINT ignored, so a terminal Ctrl+C does not kill workers in the middle of a job."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@dataclass
class _Busy:
    task: JobTask
    run_id: str
    partial: Path
    worker: str


class LocalPool:
    """A pool of worker processes for batches on this machine."""

    label = "local"
    boot_attempts = 3  # a worker that dies this many times in a row while starting is given up

    def __init__(self, settings: Settings | None = None, workers: int | None = None,
                 gpus_per_job: int = 1, retries: int = 2, stop_grace: float = 10.0,
                 gpus: int | None = None, max_workers: int | None = None):
        self.settings = settings or Settings()
        self.retries = max(0, retries)
        self.stop_grace = stop_grace
        envs = worker_envs(workers, detect_gpus() if gpus is None else gpus, gpus_per_job)
        if max_workers:  # never more workers than jobs to run
            envs = envs[:max(1, max_workers)]
        self.clients = [WorkerClient(self.settings, env=env) for env in envs]
        self._probes: dict[int, str] = {}  # slot -> run id of its start-up probe (an empty run)
        self._boot_failures = [0] * len(self.clients)
        self._boot_error = ""

    @property
    def size(self) -> int:
        return len(self.clients)

    @property
    def pids(self) -> list[int | None]:
        return [c.pid if c.is_alive() else None for c in self.clients]

    def start(self, wait: bool = False, timeout: float = 300.0) -> None:
        """Start every worker; with `wait`, return once each has answered its start-up probe
        (imports done), so timings that follow exclude process start-up."""
        for index in range(self.size):
            self._ensure_started(index)
        deadline = time.monotonic() + timeout
        while wait and self._probes and time.monotonic() < deadline:
            for index in list(self._probes):
                self._poll_probe(index)
            time.sleep(0.05)

    def _ensure_started(self, index: int) -> None:
        """Start a slot's worker if it is not running. Jobs go only to workers that answered an
        empty probe run, so a fast worker is not left idle while a slow one boots with a job
        queued in its pipe."""
        client = self.clients[index]
        if not client.is_alive() and self._usable(index):
            with _sigint_ignored():
                client.restart()  # also closes the runs a dead process still owed
            self._probes[index] = client.submit(Workflow().to_json())

    def _poll_probe(self, index: int) -> None:
        for event in self.clients[index].poll_events(0.0):
            if isinstance(event, RunFinished) and event.run_id == self._probes.get(index):
                del self._probes[index]
                if event.status is RunStatus.DONE:
                    self._boot_failures[index] = 0
                else:
                    self._boot_failures[index] += 1
                    self._boot_error = event.error or event.status.value
                    self._ensure_started(index)

    def _usable(self, index: int) -> bool:
        return self._boot_failures[index] < self.boot_attempts

    def close(self) -> None:
        for client in self.clients:
            client.close()
        self._probes.clear()

    def __enter__(self) -> "LocalPool":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---- running a batch -------------------------------------------------------------------
    def execute(self, tasks: Sequence[JobTask], batch_dir: BatchDir, listener: JobListener,
                stop: StopSignal) -> None:
        queue = deque(tasks)
        attempts: dict[str, int] = {}
        busy: dict[int, _Busy] = {}
        stop_deadline: float | None = None
        while queue or busy:
            if stop.requested:
                queue.clear()  # jobs never started stay unrecorded and run next time
                if stop_deadline is None:
                    stop_deadline = time.monotonic() + self.stop_grace
                    for index in busy:
                        self.clients[index].interrupt()
                if stop.forced or time.monotonic() > stop_deadline:
                    for index, job in list(busy.items()):
                        self.clients[index].kill()
                        self.clients[index].poll_events(0.0)  # drains the run it owed
                        batch_dir.discard(job.partial)
                        listener.finished(JobResult(job.task.id, JobStatus.INTERRUPTED, error="killed on stop",
                                                    attempts=attempts[job.task.id], worker=job.worker))
                    return
            for index in range(self.size):
                if index in busy or not queue:
                    continue
                if index in self._probes:
                    self._poll_probe(index)  # counts a worker that died while starting
                else:
                    self._ensure_started(index)  # replaces a worker that crashed in a job
                if index not in self._probes and self._usable(index):
                    task = queue.popleft()
                    attempts[task.id] = attempts.get(task.id, 0) + 1
                    busy[index] = self._submit(index, task, batch_dir, listener)
            if queue and not busy and not any(map(self._usable, range(self.size))):
                for task in queue:  # no worker can start (broken install, CUDA failure, ...)
                    listener.finished(JobResult(task.id, JobStatus.FAILED, error="no worker process could "
                                                f"start: {self._boot_error}", attempts=0))
                return
            progressed = False
            for index, job in list(busy.items()):
                for event in self.clients[index].poll_events(0.0):
                    if isinstance(event, RunFinished) and event.run_id == job.run_id:
                        del busy[index]
                        progressed = True
                        self._finished(event, job, attempts[job.task.id], batch_dir, listener,
                                       queue, stop)
            if not progressed:
                time.sleep(0.02)  # pipes are polled, not waited on: N workers, 50 polls/s each

    def _submit(self, index: int, task: JobTask, batch_dir: BatchDir, listener: JobListener) -> _Busy:
        client = self.clients[index]
        partial = batch_dir.new_partial(task.id)
        run_id = client.submit(task.request(partial))
        worker = f"local-{index} pid {client.pid}"
        listener.started(task, worker)
        return _Busy(task, run_id, partial, worker)

    def _finished(self, event: RunFinished, job: _Busy, attempt: int, batch_dir: BatchDir,
                  listener: JobListener, queue: deque, stop: StopSignal) -> None:
        if event.status is RunStatus.CRASHED and not stop.requested:
            batch_dir.discard(job.partial)
            if attempt <= self.retries:  # the worker is replaced on its next submit
                listener.retrying(job.task, job.worker, event.error, attempt + 1)
                queue.appendleft(job.task)
                return
            listener.finished(JobResult(job.task.id, JobStatus.FAILED, error=f"the worker crashed on "
                                        f"{'every' if attempt > 1 else 'its'} attempt ({attempt}): "
                                        f"{event.error}", attempts=attempt, worker=job.worker))
            return
        report = event.report or RunReport.crashed(job.run_id, event.error, event.status)
        listener.finished(result_from_run(job.task.id, report, batch_dir, job.partial, job.worker,
                                          attempt))
