"""Running a batch: validate every job up front, skip the jobs already done, hand the rest to a
backend (local pool or Ray), record each finished job in the manifest, and summarise.

Invariants:
- Nothing runs unless every job's overrides apply and its workflow validates; the problems are
  reported together, one line each, naming the job and where it came from.
- Only "done" and "failed" attempts are recorded; a job interrupted by Ctrl+C, or never started,
  leaves no record and runs on the next invocation, as does a failed one. A done job is skipped
  while its record, overrides and files all still match.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from engine.batch.jobs import Backend, JobResult, JobStatus, JobTask, StopSignal
from engine.batch.manifest import BatchDir, JobRecord, utc_now
from engine.batch.matrix import BatchError, Job
from engine.document import Workflow
from engine.errors import Problem, WorkflowError
from engine.overrides import apply_overrides
from engine.registry import NodeRegistry
from engine.planner import check_runnable
from engine.signature import workflow_signature


def prepare_tasks(workflow: Workflow, jobs: Sequence[Job], registry: NodeRegistry, *,
                  use_cache: bool = True, approved_endpoints: tuple[str, ...] = ()) -> list[JobTask]:
    """Apply and validate every job's overrides. Raises BatchError with one line per problem;
    a problem shared by every job (a broken workflow) is listed once."""
    tasks: list[JobTask] = []
    failing: list[tuple[Job, list[str]]] = []
    for job in jobs:
        wf, problems = workflow, []
        for override in job.overrides:  # one at a time, so a bad one does not hide the others
            try:
                wf = apply_overrides(wf, [override], registry)
            except WorkflowError as exc:
                problems += exc.problems
        problems += check_runnable(wf, registry) if wf.nodes else [
            Problem("no_output", "the workflow is empty; add nodes and an output node to run")]
        if problems:
            failing.append((job, [str(p) for p in problems]))
        else:
            tasks.append(JobTask(job.id, job.overrides, wf.to_json(), use_cache,
                                 workflow_signature(wf), approved_endpoints))
    if failing:
        shared = set(failing[0][1]).intersection(*(p for _, p in failing)) \
            if len(failing) == len(jobs) > 1 else set()
        lines = [f"every job: {p}" for p in failing[0][1] if p in shared]
        for job, problems in failing:
            lines += [f"job {job.id!r} ({job.source}): {p}" for p in problems if p not in shared]
        raise BatchError(lines)
    return tasks


def pending_tasks(tasks: Sequence[JobTask], out_dir: str | Path) -> list[JobTask]:
    """The tasks a batch into `out_dir` would run now (those not done on this workflow)."""
    batch_dir = BatchDir(out_dir)
    records = batch_dir.records()
    return [t for t in tasks
            if not batch_dir.is_done(records.get(t.id), t.overrides, t.workflow_signature)]


@dataclass
class BatchSummary:
    out_dir: Path
    total: int
    skipped: list[str] = field(default_factory=list)  # already done before this invocation
    changed: list[str] = field(default_factory=list)  # done before, on an older workflow: run again
    done: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # id -> error
    not_run: list[str] = field(default_factory=list)  # interrupted, or never started after a stop
    retries: int = 0  # crash retries used
    seconds: float = 0.0
    results: dict[str, JobResult] = field(default_factory=dict, repr=False)

    @property
    def exit_code(self) -> int:
        """0 when every job is done (now or before), 1 otherwise."""
        return 0 if not self.failed and not self.not_run else 1

    def to_json(self) -> dict[str, Any]:
        return {"out_dir": str(self.out_dir), "total": self.total, "skipped": self.skipped,
                "changed": self.changed,
                "done": self.done, "failed": self.failed, "not_run": self.not_run,
                "retries": self.retries, "seconds": round(self.seconds, 3)}


class _Recorder:
    """The backend's JobListener: writes the manifest, keeps the summary, drives the progress."""

    def __init__(self, batch_dir: BatchDir, summary: BatchSummary, progress: Any,
                 tasks: Sequence[JobTask]):
        self.batch_dir, self.summary, self.progress = batch_dir, summary, progress
        self.tasks = {t.id: t for t in tasks}

    def started(self, task: JobTask, worker: str) -> None:
        if self.progress is not None:
            self.progress.started(task, worker)

    def retrying(self, task: JobTask, worker: str, error: str, attempt: int) -> None:
        self.summary.retries += 1
        if self.progress is not None:
            self.progress.retrying(task, worker, error, attempt)

    def finished(self, result: JobResult) -> None:
        self.summary.results[result.id] = result
        if result.status in (JobStatus.DONE, JobStatus.FAILED):
            self.batch_dir.record(JobRecord(
                id=result.id, overrides=list(self.tasks[result.id].overrides),
                status=result.status.value, outputs=result.outputs,
                seconds=round(result.seconds, 4), error=result.error, attempts=result.attempts,
                worker=result.worker, finished_at=utc_now(), nodes=result.nodes, log=result.log,
                workflow=self.tasks[result.id].workflow_signature))
        if result.status is JobStatus.DONE:
            self.summary.done.append(result.id)
        elif result.status is JobStatus.FAILED:
            self.summary.failed[result.id] = result.error
        else:
            self.summary.not_run.append(result.id)
        if self.progress is not None:
            self.progress.finished(result)


def run_batch(tasks: Sequence[JobTask], out_dir: str | Path, backend: Backend, *,
              progress: Any = None, stop: StopSignal | None = None) -> BatchSummary:
    """Run the tasks not yet done in `out_dir` on `backend`. The backend stays open (the caller
    owns it), so several batches can share warm workers. `progress`, when given, gets
    `begin(summary, todo)`, `started`, `retrying`, `finished` and `end(summary)` calls."""
    batch_dir = BatchDir(out_dir)
    stop = stop or StopSignal()
    summary = BatchSummary(batch_dir.root, total=len(tasks))
    started = time.perf_counter()
    with batch_dir.lock():
        batch_dir.clear_partials()  # attempts a killed batch left behind
        foreign = batch_dir.foreign_folders(t.id for t in tasks)
        if foreign:
            raise BatchError([f"{batch_dir.job_dir(jid)} exists but no batch wrote it (the "
                              "manifest has no record of it); move it away or choose another "
                              "--out" for jid in foreign])
        records = batch_dir.records()
        todo = []
        todo_ids = {t.id for t in pending_tasks(tasks, out_dir)}
        for task in tasks:
            record = records.get(task.id)
            if task.id not in todo_ids:
                summary.skipped.append(task.id)
                continue
            if batch_dir.is_done(record, task.overrides, record.workflow if record else ""):
                summary.changed.append(task.id)  # the graph was edited since it was done
            todo.append(task)
        recorder = _Recorder(batch_dir, summary, progress, tasks)
        if progress is not None:
            progress.begin(summary, todo)
        try:
            backend.execute(todo, batch_dir, recorder, stop)
        finally:
            batch_dir.clear_partials()
            finished = set(summary.results)
            summary.not_run += [t.id for t in todo if t.id not in finished]
            summary.seconds = time.perf_counter() - started
            if progress is not None:
                progress.end(summary)
    return summary
