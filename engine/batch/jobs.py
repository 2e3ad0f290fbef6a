"""What the batch runner hands to an execution backend (local pool or Ray) and gets back.

A `JobTask` is a job ready to run: its id, its overrides and the workflow with them applied. A
backend runs tasks on its workers and reports each one through a `JobListener`: `started` when a
worker takes it, `finished` with a `JobResult` once it is done, failed or interrupted. Backends own
retries after a worker crash (up to the batch's retry count); node failures are never retried
because they are deterministic.

Invariants:
- A result with status "done" means the job's folder was already published in the batch folder.
- Every task given to `execute` gets exactly one `finished` call, unless the batch is stopped, in
  which case tasks never started get none (they stay unrecorded and run next time).
"""

from __future__ import annotations

import os
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Sequence

from engine.batch.manifest import BatchDir
from engine.run_api import CachePolicy, NamedEnum, RunReport, RunRequest, RunStatus


class JobStatus(NamedEnum):
    DONE = "done"
    FAILED = "failed"
    INTERRUPTED = "interrupted"  # stopped on request: no record, runs again next time


@dataclass(frozen=True)
class JobTask:
    id: str
    overrides: tuple[str, ...]
    workflow_json: dict[str, Any]  # the workflow with this job's overrides applied
    use_cache: bool = True
    workflow_signature: str = ""  # engine.signature.workflow_signature of that workflow
    approved_endpoints: tuple[str, ...] = ()  # addresses the user allowed (--allow-endpoint)

    def request(self, output_dir: Path | str) -> RunRequest:
        """The run of this job, writing into `output_dir` (its attempt folder)."""
        return RunRequest(self.workflow_json, cache=CachePolicy.USE if self.use_cache else
                          CachePolicy.OFF, output_dir=str(output_dir), source=f"job {self.id!r}",
                          approved_endpoints=self.approved_endpoints)


@dataclass
class JobResult:
    id: str
    status: JobStatus
    outputs: list[str] = field(default_factory=list)  # relative to the batch folder
    seconds: float = 0.0
    error: str = ""
    attempts: int = 1
    worker: str = ""
    nodes: dict[str, Any] = field(default_factory=dict)  # node id -> {type, status, seconds}
    log: list[dict[str, Any]] = field(default_factory=list)  # what nodes and the cache said

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


class JobListener(Protocol):
    def started(self, task: JobTask, worker: str) -> None: ...

    def retrying(self, task: JobTask, worker: str, error: str, attempt: int) -> None: ...

    def finished(self, result: JobResult) -> None: ...


class StopSignal:
    """Ctrl+C for a batch: the first request lets running jobs stop cooperatively, a second one
    (`force`) tells backends to kill their workers at once."""

    def __init__(self) -> None:
        self._requested = threading.Event()
        self._forced = threading.Event()

    def request(self) -> None:
        if self._requested.is_set():
            self._forced.set()
        self._requested.set()

    @property
    def requested(self) -> bool:
        return self._requested.is_set()

    @property
    def forced(self) -> bool:
        return self._forced.is_set()


class Backend(Protocol):
    """A pool of workers that keep their executor (models + cache) between jobs."""

    label: str

    def execute(self, tasks: Sequence[JobTask], batch_dir: BatchDir, listener: JobListener,
                stop: StopSignal) -> None: ...

    def close(self) -> None: ...


def result_from_run(task_id: str, report: RunReport, batch_dir: BatchDir, partial: Path,
                    worker: str, attempts: int = 1) -> JobResult:
    """Publish or discard an attempt's folder according to how its run finished: done ->
    published; interrupted (or its worker killed on a stop) -> dropped; anything else -> failed
    with the message that names the node."""
    nodes = {nid: {"type": rec.node_type, "status": rec.status.value, "seconds": round(rec.seconds, 4)}
             for nid, rec in report.nodes.items()}
    log = [entry.to_json() for entry in report.log]
    base = dict(seconds=report.seconds, attempts=attempts, worker=worker, nodes=nodes, log=log)
    if report.status is RunStatus.DONE:
        outputs = batch_dir.publish(partial, task_id, report.outputs)
        return JobResult(task_id, JobStatus.DONE, outputs, **base)
    batch_dir.discard(partial)
    error = str(report.error) if report.error else f"run ended with status {report.status.value}"
    if report.status in (RunStatus.INTERRUPTED, RunStatus.CRASHED):
        return JobResult(task_id, JobStatus.INTERRUPTED, error=error, **base)
    if report.status is RunStatus.INVALID:
        error = f"invalid workflow: {'; '.join(map(str, report.problems)) or error}"
    return JobResult(task_id, JobStatus.FAILED, error=error, **base)


def run_task_in_process(executor: Any, task: JobTask, batch_dir: BatchDir, worker: str,
                        interrupt: Any = None, attempts: int = 1) -> JobResult:
    """Run one task on an in-process Executor (a Ray actor's) and publish its folder."""
    from engine.errors import WorkflowError

    partial = batch_dir.new_partial(task.id)
    try:
        report = executor.run(task.request(partial), interrupt=interrupt)
    except WorkflowError as exc:
        report = RunReport.refused(task.id, exc.problems, str(exc))
    except Exception as exc:  # an engine bug must fail this job, not the actor
        batch_dir.discard(partial)
        return JobResult(task.id, JobStatus.FAILED, error=f"{type(exc).__name__}: {exc}",
                         attempts=attempts, worker=worker)
    return result_from_run(task.id, report, batch_dir, partial, worker, attempts)


def host_label() -> str:
    return f"{socket.gethostname()} pid {os.getpid()}"
