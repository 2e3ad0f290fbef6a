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


@dataclass(frozen=True)
class JobTask:
    id: str
    overrides: tuple[str, ...]
    workflow_json: dict[str, Any]  # the workflow with this job's overrides applied
    use_cache: bool = True


@dataclass
class JobResult:
    id: str
    status: str  # done | failed | interrupted
    outputs: list[str] = field(default_factory=list)  # relative to the batch folder
    seconds: float = 0.0
    error: str = ""
    attempts: int = 1
    worker: str = ""
    nodes: dict[str, Any] = field(default_factory=dict)

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


def result_from_run(task_id: str, status: str, report: dict[str, Any], error: str,
                    batch_dir: BatchDir, partial: Path, worker: str, attempts: int = 1) -> JobResult:
    """Publish or discard an attempt's folder according to how its run finished.

    `status`/`report`/`error` are those of the executor's RunFinished (or RunReport.to_json()):
    done -> publish; failed/invalid -> failed with the node's message; interrupted -> dropped.
    """
    nodes = {nid: {k: n.get(k) for k in ("type", "status", "seconds")}
             for nid, n in (report.get("nodes") or {}).items()}
    seconds = float(report.get("seconds") or 0.0)
    if status == "done":
        outputs = batch_dir.publish(partial, task_id, report.get("outputs") or [])
        return JobResult(task_id, "done", outputs, seconds, "", attempts, worker, nodes)
    batch_dir.discard(partial)
    if status == "interrupted":
        return JobResult(task_id, "interrupted", [], seconds, error or "interrupted", attempts,
                         worker, nodes)
    err = report.get("error") or {}
    if isinstance(err, dict) and err.get("node_id"):
        error = f"node {err['node_id']!r} ({err.get('node_type')}) failed: {err.get('message')}"
    elif status == "invalid":
        problems = "; ".join(str(p.get("message", p)) for p in report.get("problems", []))
        error = f"invalid workflow: {problems or error}"
    return JobResult(task_id, "failed", [], seconds, error or f"run ended with status {status}",
                     attempts, worker, nodes)


def run_task_in_process(executor: Any, task: JobTask, batch_dir: BatchDir, worker: str,
                        interrupt: Any = None, attempts: int = 1) -> JobResult:
    """Run one task on an in-process Executor (a Ray actor's) and publish its folder."""
    from engine.document import workflow_from_json
    from engine.errors import WorkflowError

    partial = batch_dir.new_partial(task.id)
    try:
        workflow = workflow_from_json(task.workflow_json)
        report = executor.run(workflow, output_dir=partial, use_cache=task.use_cache,
                              interrupt=interrupt).to_json()
        status, error = report["status"], (report.get("error") or {}).get("message", "")
    except WorkflowError as exc:
        report = {"problems": [p.to_json() for p in exc.problems]}
        status, error = "invalid", str(exc)
    except Exception as exc:  # an engine bug must fail this job, not the actor
        batch_dir.discard(partial)
        return JobResult(task.id, "failed", error=f"{type(exc).__name__}: {exc}",
                         attempts=attempts, worker=worker)
    return result_from_run(task.id, status, report, error, batch_dir, partial, worker, attempts)


def host_label() -> str:
    return f"{socket.gethostname()} pid {os.getpid()}"
