"""Runs from the studio: a queue of document snapshots sent one at a time to the worker process,
with its events turned into per-node states, log lines, previews and output files.

Invariants:
- The controller only reads the document (a JSON snapshot taken when the run is queued); nothing a
  run does — failing, being stopped, the worker crashing — can change or lose the graph.
- Stop is cooperative (interrupt): nodes end at their next step or chunk, and the worker keeps its
  loaded models. Only if it has not ended after max(grace, 1.5 x the longest step seen + 1 s) is
  the worker killed and restarted (a timer escalates, never a sleep); a second Stop forces that
  at once.
- Events are polled from a QTimer in the GUI thread, only while a run is in flight.
- Output files of a node are remembered across runs (`last_files`) so a cached output node still
  previews its latest files.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from PySide6.QtCore import QObject, QTimer, Signal
from PySide6.QtGui import QImage

from engine import events as ev
from engine.run_api import RunRequest
from app.run_state import NodeRunState


@dataclass
class QueuedRun:
    workflow: dict[str, Any]
    targets: list[str] | None = None
    label: str = "Run"
    queued_at: float = field(default_factory=time.time)
    approved_endpoints: tuple[str, ...] = ()


@dataclass
class RunRecord:
    """One finished run of this session (the History panel and the output gallery)."""
    run: QueuedRun
    run_id: str
    status: str
    seconds: float
    files: list[str]
    finished_at: float = field(default_factory=time.time)


def preview_to_frames(array: Any) -> list[QImage]:
    """A preview clip (T, H, W, 3) — or one picture — as owned QImages (empty if malformed)."""
    if hasattr(array, "detach"):
        array = array.detach().cpu().numpy()
    if not isinstance(array, np.ndarray):
        return []
    while array.ndim > 4 and array.shape[0] == 1:
        array = array[0]
    if array.ndim == 4:
        frames = [preview_to_qimage(frame) for frame in array]
        return [f for f in frames if f is not None]
    image = preview_to_qimage(array)
    return [image] if image is not None else []


def preview_to_qimage(array: Any) -> QImage | None:
    """A preview picture as an owned QImage, or None if malformed.

    Accepts what nodes send: numpy or torch, (H, W, 3) or with leading batch dims of 1
    ((1, H, W, 3) from DiTDenoise), uint8 or float in [0, 1].
    """
    if hasattr(array, "detach"):  # a torch tensor, without importing torch here
        array = array.detach().cpu().numpy()
    if not isinstance(array, np.ndarray):
        return None
    while array.ndim > 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 3 or array.shape[2] != 3 or array.size == 0:
        return None
    if array.dtype != np.uint8:
        array = (np.clip(array.astype(np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    arr = np.ascontiguousarray(array)
    h, w, _ = arr.shape
    return QImage(arr.data, w, h, 3 * w, QImage.Format_RGB888).copy()  # copy: arr is freed


class RunController(QObject):
    node_state_changed = Signal(str)  # node id; read states[node_id]
    run_started = Signal(str)  # run id
    run_finished = Signal(str, str, str)  # run id, status, error
    log = Signal(str, str)  # level, message
    progress = Signal(float)  # overall 0..1
    queue_changed = Signal(int)  # runs waiting behind the current one
    preview_ready = Signal(str, object)  # node id, list[QImage] (the latent preview's frames)
    files_ready = Signal(str, list)  # node id, output file paths
    outputs_ready = Signal(str, object)  # node id, (texts dict, QImage or None)
    history_changed = Signal()  # a run finished: read history

    def __init__(self, client_factory: Callable[[], Any], output_dir: str | None = None,
                 poll_ms: int = 40, parent: QObject | None = None):
        super().__init__(parent)
        self._client_factory = client_factory
        self._client: Any = None
        self._settings: Any = None  # settings changed since the client factory was made
        self.output_dir = output_dir
        self.queue: list[QueuedRun] = []
        self.current: str | None = None
        self.current_run: QueuedRun | None = None
        self.states: dict[str, NodeRunState] = {}
        self.last_files: dict[str, list[str]] = {}
        self.history: list[RunRecord] = []  # finished runs of this session, oldest first
        self.last_status = ""
        self._stop_requested_for: str | None = None
        self._last_progress_at: float = 0.0  # when the running node last reported
        self.longest_step: float = 0.0  # longest gap between progress reports in this run (s)
        self._timer = QTimer(self)
        self._timer.setInterval(poll_ms)
        self._timer.timeout.connect(self.poll)
        self._escalate = QTimer(self)
        self._escalate.setSingleShot(True)
        self._escalate.timeout.connect(self._kill_if_still_running)

    # ---- worker -------------------------------------------------------------------------------
    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = self._client_factory()
            if self._settings is not None and hasattr(self._client, "update_settings"):
                self._client.update_settings(self._settings)
        return self._client

    def update_settings(self, settings: Any) -> None:
        """Hand new settings to the worker (a running one applies them before its next run)."""
        self._settings = settings
        if self._client is not None and hasattr(self._client, "update_settings"):
            self._client.update_settings(settings)

    def prestart(self) -> None:
        """Spawn the worker now so the first run does not wait for it to import torch."""
        try:
            self.client.start()
        except Exception as exc:  # a broken environment must not stop the studio from opening
            self.log.emit("error", f"could not start the worker: {exc}")

    def close(self) -> None:
        """Stop polling and end the worker; a run in flight is killed rather than waited for,
        so closing the window never hangs on a long node."""
        self._timer.stop()
        self._escalate.stop()
        if self._client is not None:
            if self.busy:
                self._client.kill()
            self._client.close()
            self._client = None
        self.queue.clear()
        self.current = None

    @property
    def busy(self) -> bool:
        return self.current is not None

    # ---- queue --------------------------------------------------------------------------------
    def queue_run(self, workflow_json: dict[str, Any], targets: list[str] | None = None,
                  label: str = "Run", approved_endpoints: tuple[str, ...] = ()) -> None:
        self.queue.append(QueuedRun(workflow_json, targets, label,
                                    approved_endpoints=approved_endpoints))
        self.queue_changed.emit(len(self.queue))
        if not self.busy:
            self._submit_next()

    def cancel_queued(self, index: int) -> None:
        """Drop one waiting run (the running one is stopped with `stop`)."""
        if 0 <= index < len(self.queue):
            del self.queue[index]
            self.queue_changed.emit(len(self.queue))

    def move_queued(self, index: int, delta: int) -> int:
        """Move a waiting run up (-1) or down (+1); returns its new index."""
        target = max(0, min(len(self.queue) - 1, index + delta))
        if 0 <= index < len(self.queue) and target != index:
            self.queue.insert(target, self.queue.pop(index))
            self.queue_changed.emit(len(self.queue))
        return target

    def clear_queue(self) -> int:
        n = len(self.queue)
        self.queue.clear()
        self.queue_changed.emit(0)
        return n

    def stop(self, grace: float = 3.0) -> None:
        """Interrupt the current run and drop the queue. The running node ends at its next step
        (or VAE chunk) and the worker keeps its models; the worker is killed and restarted only
        if the run has not ended after max(grace, 1.5 x the longest step seen + 1 s). A second
        Stop while one is pending kills at once."""
        dropped = self.clear_queue()
        if dropped:
            self.log.emit("info", f"dropped {dropped} queued run{'s' if dropped != 1 else ''}")
        if self.current is None:
            return
        if self._stop_requested_for == self.current:
            self.log.emit("warning", "forced stop: killing the worker (models will reload)")
            self._escalate.stop()
            self.client.restart()
            return
        wait = grace if self.longest_step <= 0 else max(grace, 1.5 * self.longest_step + 1.0)
        self.log.emit("info", f"stopping after the current step (waiting up to {wait:.0f} s; "
                              "Stop again to kill the worker at once)")
        self._stop_requested_for = self.current
        for nid, state in self.states.items():
            if state.state == "running":
                self._set(nid, stopping=True)
        self.client.interrupt()
        self._escalate.start(int(wait * 1000))

    def _kill_if_still_running(self) -> None:
        if self.current is not None and self.current == self._stop_requested_for:
            self.log.emit("warning", "the worker did not stop in time; killing and restarting it")
            self.client.restart()  # the run is then closed as interrupted on the next poll

    def _submit_next(self) -> None:
        if not self.queue:
            return
        run = self.queue.pop(0)
        self.queue_changed.emit(len(self.queue))
        try:
            self.current = self.client.submit(RunRequest(
                run.workflow, tuple(run.targets) if run.targets else None,
                output_dir=self.output_dir, approved_endpoints=run.approved_endpoints))
        except Exception as exc:  # cannot spawn or reach the worker
            self.current = None
            self.log.emit("error", f"cannot start the run: {exc}")
            self.run_finished.emit("", "crashed", str(exc))
            return
        self.current_run = run
        self.last_status = "running"
        self._timer.start()

    # ---- events -------------------------------------------------------------------------------
    def poll(self) -> None:
        if self._client is None:
            return
        for event in self._client.poll_events(0.0):
            self.handle(event)

    def _set(self, node_id: str, **changes: Any) -> None:
        state = self.states.setdefault(node_id, NodeRunState())
        for key, value in changes.items():
            setattr(state, key, value)
        self.node_state_changed.emit(node_id)

    def handle(self, event: ev.Event) -> None:
        if event.run_id and event.run_id != self.current and not isinstance(event, ev.LogMessage):
            return  # a late event from a run already closed
        if isinstance(event, ev.RunStarted):
            self.longest_step = 0.0
            for nid in list(self.states):
                texts = self.states[nid].texts  # kept until the node produces new ones
                self.states[nid] = NodeRunState(texts=texts)
                self.node_state_changed.emit(nid)
            plan = event.plan or {nid: "executed" for nid in event.node_ids}
            for nid, action in plan.items():
                self._set(nid, state="not_needed" if action == "not_needed" else "queued")
            self.run_started.emit(event.run_id)
            idle = sum(1 for action in plan.values() if action == "not_needed")
            count = len(event.node_ids)
            self.log.emit("info", f"{self.current_run.label if self.current_run else 'run'} started: "
                                  f"{count} node{'s' if count != 1 else ''}"
                                  + (f" ({idle} not needed: their results' readers are cached)"
                                     if idle else ""))
        elif isinstance(event, ev.NodeCached):
            self._set(event.node_id, state="cached", fraction=1.0)
            self.progress.emit(event.overall)
        elif isinstance(event, ev.NodeStarted):
            self._last_progress_at = time.monotonic()
            self._set(event.node_id, state="running", fraction=0.0, message="",
                      started=self._last_progress_at,
                      stopping=self._stop_requested_for == event.run_id)
            self.progress.emit(event.overall)
        elif isinstance(event, ev.NodeProgress):
            now = time.monotonic()
            self.longest_step = max(self.longest_step, now - self._last_progress_at)
            self._last_progress_at = now
            self._set(event.node_id, state="running", fraction=event.fraction, message=event.message)
            self.progress.emit(event.overall)
            if event.preview is not None:
                frames = preview_to_frames(event.preview)
                if frames:
                    self.preview_ready.emit(event.node_id, frames)
        elif isinstance(event, ev.NodeOutputs):
            self._set(event.node_id, texts=dict(event.texts))
            image = preview_to_qimage(event.image) if event.image is not None else None
            self.outputs_ready.emit(event.node_id, (dict(event.texts), image))
        elif isinstance(event, ev.NodeDone):
            self._set(event.node_id, state="done", fraction=1.0, seconds=event.seconds,
                      files=list(event.files), message="")
            self.progress.emit(event.overall)
            if event.files:
                self.last_files[event.node_id] = list(event.files)
                self.files_ready.emit(event.node_id, list(event.files))
        elif isinstance(event, ev.NodeFailed):
            self._set(event.node_id, state="failed", message=event.message, traceback=event.traceback)
            self.log.emit("error", f"{event.node_id} ({event.node_type}) failed: {event.message}"
                          + (f"\n{event.traceback}" if event.traceback else ""))
        elif isinstance(event, ev.NodeSkipped):
            self._set(event.node_id, state="skipped", message=event.reason)
        elif isinstance(event, ev.LogMessage):
            prefix = f"{event.node_id}: " if event.node_id else ""
            self.log.emit(str(event.level), prefix + event.message)
        elif isinstance(event, ev.RunFinished):
            self._finish(event)

    def _finish(self, event: ev.RunFinished) -> None:
        status = str(event.status)
        report = event.report
        leftover = "interrupted" if status in ("interrupted", "crashed") else "idle"
        for nid, state in self.states.items():
            if state.state == "running":
                message = "worker crashed" if status == "crashed" else "stopped"
                self._set(nid, state="failed" if status == "crashed" else "interrupted",
                          message=message, stopping=False)
            elif state.state == "queued":
                self._set(nid, state=leftover if leftover != "idle" else "idle")
        for nid, record in (report.nodes.items() if report is not None else ()):
            # the report has the last word on nodes no event told about (a failed bypass, a
            # run cut short by an engine error)
            if record.status.value == "failed" and self.states.get(nid, NodeRunState()).state != "failed":
                self._set(nid, state="failed", message=record.reason)
        for problem in report.problems if report is not None else []:
            if problem.node_id:
                where = f"{problem.input}: " if problem.input else ""
                self._set(problem.node_id, state="failed", message=where + problem.message)
        level = {"done": "info", "interrupted": "warning"}.get(status, "error")
        text = f"run {status}" + (f": {event.error}" if event.error else "")
        if status == "done" and report is not None:
            text += f" in {report.seconds:.1f} s"
        self.log.emit(level, text)
        if self.current_run is not None:
            files = list(report.outputs) if report is not None else []
            self.history.append(RunRecord(self.current_run, event.run_id, status,
                                          report.seconds if report is not None else 0.0, files))
            self.history_changed.emit()
        self.current, self.current_run = None, None
        self._stop_requested_for = None
        self._escalate.stop()
        self.last_status = status
        self.progress.emit(1.0 if status == "done" else 0.0)
        self.run_finished.emit(event.run_id, status, event.error)
        if self.queue:
            self._submit_next()
        else:
            self._timer.stop()
