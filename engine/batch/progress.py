"""Batch progress on the terminal and the closing summary.

On a terminal: one tqdm bar over jobs with done / failed / running counts and tqdm's ETA; failures
and crash retries are printed above it as they happen. Elsewhere (CI logs, pipes): one line per
finished job with the same counts and an ETA from the mean job rate so far.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from engine.batch.jobs import JobResult, JobTask


class BatchProgress:
    def __init__(self, stream: TextIO | None = None, enabled: bool = True, where: str = ""):
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.where = where  # "local (2 workers)", for the opening line
        self.bar: Any = None
        self.todo = 0
        self.done = self.failed = self.running = 0
        self.t0 = time.monotonic()

    def _write(self, line: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(line, file=self.stream)
        else:
            print(line, file=self.stream, flush=True)

    def begin(self, summary: Any, todo: list[JobTask]) -> None:
        self.todo, self.t0 = len(todo), time.monotonic()
        skipped = f", {len(summary.skipped)} already done" if summary.skipped else ""
        where = f" on {self.where}" if self.where else ""
        self._write(f"batch: {summary.total} job(s){skipped}, {len(todo)} to run{where}")
        if self.enabled and self.todo and self.stream.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=self.todo, unit="job", file=self.stream, dynamic_ncols=True)
            self._refresh()

    def started(self, task: JobTask, worker: str) -> None:
        self.running += 1
        self._refresh()

    def retrying(self, task: JobTask, worker: str, error: str, attempt: int) -> None:
        self.running -= 1
        self._write(f"job {task.id}: {worker} died ({error}); retrying, attempt {attempt}")
        self._refresh()

    def finished(self, result: JobResult) -> None:
        self.running -= 1
        if result.status == "done":
            self.done += 1
        elif result.status == "failed":
            self.failed += 1
            self._write(f"job {result.id} failed: {result.error}")
        if self.bar is not None:
            self.bar.update(1 if result.status in ("done", "failed") else 0)
            self._refresh()
        elif result.status in ("done", "failed"):
            self._write(f"[{self.done + self.failed}/{self.todo}] {result.id} {result.status} in "
                        f"{result.seconds:.2f} s ({result.worker}); {self._counts()}, eta {self._eta()}")

    def end(self, summary: Any) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def _counts(self) -> str:
        return f"done {self.done} · failed {self.failed} · running {self.running}"

    def _refresh(self) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(self._counts())

    def _eta(self) -> str:
        finished = self.done + self.failed
        if not finished:
            return "?"
        left = (time.monotonic() - self.t0) / finished * (self.todo - finished)
        return f"{int(left // 60)}m{int(left % 60):02d}s"


def summary_lines(summary: Any) -> list[str]:
    """The closing report: counts, throughput, then every failed or unfinished job."""
    ran = len(summary.done) + len(summary.failed)
    rate = f", {ran / summary.seconds * 60:.1f} jobs/min" if ran and summary.seconds > 0 else ""
    lines = [f"{summary.total} job(s): {len(summary.done) + len(summary.skipped)} done "
             f"({len(summary.skipped)} from earlier runs), {len(summary.failed)} failed, "
             f"{len(summary.not_run)} not run; {summary.seconds:.1f} s{rate}"
             + (f"; {summary.retries} crash retr{'y' if summary.retries == 1 else 'ies'}"
                if summary.retries else "")]
    changed = getattr(summary, "changed", [])
    if changed:
        lines.append(f"{len(changed)} job(s) ran again: the workflow changed since they were done")
    if summary.failed:
        lines.append("failed jobs:")
        lines += [f"  - {jid}: {error}" for jid, error in summary.failed.items()]
    if summary.not_run:
        lines.append(f"not run ({len(summary.not_run)}): run the same command again to finish them")
    lines.append(f"outputs and manifest: {summary.out_dir}")
    return lines
