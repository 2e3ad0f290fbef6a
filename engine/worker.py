"""A worker process that owns an executor, its loaded models and its cache.

The studio and the batch runner talk to it through `WorkerClient`; nothing else in Reelgraph starts
processes. The child is *spawned* (never forked: CUDA cannot survive a fork). Runs are sent over a
pipe and executed one after another; every event the executor emits is streamed back unchanged.

Invariants for the caller:
- `poll_events` never hangs on a dead worker: when the process dies, every run it still owed is
  closed with `RunFinished(status=crashed)` naming the exit code.
- `interrupt` is cooperative (checked between nodes and inside long nodes); `stop` escalates to a
  kill and a fresh worker when the run does not end within the grace period.
- A killed or crashed worker is replaced on the next `submit`; the caller's data is never touched.
"""

from __future__ import annotations

import functools
import multiprocessing as mp
import os
import time
import traceback
import uuid
from dataclasses import replace
from typing import Any, Callable

from engine.events import Event, LogMessage, NodeOutputs, RunFinished
from engine.run_api import CachePolicy, LogLevel, RunError, RunReport, RunRequest, RunStatus

_SPAWN = mp.get_context("spawn")


def _worker_main(conn: Any, interrupt_event: Any, settings_json: dict[str, Any],
                 env: dict[str, str]) -> None:
    """Entry point of the child process."""
    os.environ.update(env)
    from engine.config import Settings
    from engine.context import InterruptFlag
    from engine.errors import WorkflowError
    from engine.runtime import make_executor, reconfigure

    settings = Settings.from_json(settings_json)
    executor = make_executor(settings)
    interrupt = InterruptFlag(interrupt_event)
    send = conn.send
    for error in executor.registry.pack_errors:
        send(LogMessage("", level=LogLevel.WARNING, message=f"node pack: {error}"))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return  # the caller went away
        cmd = msg.get("cmd")
        if cmd == "shutdown":
            return
        if cmd == "settings":  # the studio's settings changed: apply them, keep what still fits
            new = Settings.from_json(msg["settings"])
            executor = reconfigure(executor, settings, new)
            settings = new
            continue
        if cmd != "run":
            continue
        request: RunRequest = msg["request"]
        interrupt.clear()
        executor.output_observer = functools.partial(_send_summary, send)
        try:
            executor.run(request, on_event=send, interrupt=interrupt)
        except WorkflowError:
            pass  # the executor already closed the run with status "invalid"
        except Exception as exc:  # an engine bug: report it, keep serving
            message = f"{type(exc).__name__}: {exc}"
            report = RunReport(request.run_id or "", RunStatus.FAILED,
                               error=RunError(message, traceback=traceback.format_exc()))
            send(RunFinished(request.run_id or "", RunStatus.FAILED, report, message))


def _send_summary(send: Callable[[Event], None], run_id: str, node_id: str,
                  outputs: dict[str, Any]) -> None:
    """After a node's NodeDone/NodeCached: what the studio shows of its outputs (texts, a picture)."""
    summary = summarise_outputs(run_id, node_id, outputs)
    if summary is not None:
        send(summary)


def summarise_outputs(run_id: str, node_id: str, outputs: dict[str, Any]) -> NodeOutputs | None:
    """Texts and a first picture of a node's output values (None when there is nothing to show)."""
    texts: dict[str, str] = {}
    image = None
    for name, value in outputs.items():
        if isinstance(value, str):
            texts[name] = value if len(value) <= 4000 else value[:3999] + "…"
        elif image is None:
            image = _first_picture(value)
    if not texts and image is None:
        return None
    return NodeOutputs(run_id, node_id, texts, image)


def _first_picture(value: Any) -> Any:
    """uint8 (H, W, 3) numpy of an IMAGE tensor (B, H, W, 3) or a Video's first frame."""
    frames = getattr(value, "frames", value)  # engine.values.Video, or an IMAGE tensor
    if not hasattr(frames, "detach") or frames.dim() not in (3, 4) or frames.shape[-1] != 3:
        return None
    import torch

    frame = (frames[0] if frames.dim() == 4 else frames).detach().float().cpu()  # (H, W, 3)
    h, w = frame.shape[:2]
    scale = 256 / max(h, w)
    if scale < 1:
        frame = torch.nn.functional.interpolate(frame.permute(2, 0, 1)[None], scale_factor=scale,
                                                mode="area")[0].permute(1, 2, 0)
    return (frame.clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()


class WorkerClient:
    """The caller's handle on one worker process (started lazily, restarted when needed)."""

    def __init__(self, settings: Any = None, env: dict[str, str] | None = None):
        from engine.config import Settings

        if settings is None:
            settings = Settings()
        elif isinstance(settings, dict):
            settings = Settings.from_json(settings)
        self.settings = settings
        self.env = dict(env or {})
        self._process: Any = None
        self._conn: Any = None
        self._interrupt: Any = None
        self._pending: list[str] = []  # runs sent and not yet finished, in order
        self._backlog: list[Event] = []  # events read while waiting for something else

    # ---- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        if self.is_alive():
            return
        parent, child = _SPAWN.Pipe(duplex=True)
        self._interrupt = _SPAWN.Event()
        self._process = _SPAWN.Process(
            target=_worker_main, args=(child, self._interrupt, self.settings.to_json(), self.env),
            name="reelgraph-worker", daemon=True)
        self._process.start()
        child.close()
        self._conn = parent

    def is_alive(self) -> bool:
        return self._process is not None and self._process.is_alive()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def kill(self) -> None:
        """Kill the process at once; runs it owed are closed as crashed on the next poll."""
        if self._process is not None and self._process.is_alive():
            self._process.kill()
            self._process.join(5)

    def restart(self) -> None:
        self.kill()
        self._reap(status=RunStatus.INTERRUPTED, reason="worker restarted")
        self.start()

    def close(self) -> None:
        if self.is_alive():
            try:
                self._conn.send({"cmd": "shutdown"})
            except (OSError, BrokenPipeError):
                pass
            self._process.join(3)
        self.kill()
        if self._conn is not None:
            self._conn.close()
        self._process = None

    # ---- runs ------------------------------------------------------------------------------
    def submit(self, request: RunRequest | dict[str, Any], *, targets: list[str] | None = None,
               use_cache: bool = True, output_dir: str | None = None) -> str:
        """Queue a run (a RunRequest, or a workflow's JSON plus the same fields as keywords);
        returns its id. Events for it arrive through poll_events."""
        if not isinstance(request, RunRequest):
            request = RunRequest(request, tuple(targets) if targets is not None else None,
                                 cache=CachePolicy.USE if use_cache else CachePolicy.OFF,
                                 output_dir=output_dir)
        if not self.is_alive():
            self._reap(status=RunStatus.CRASHED, reason="worker process died")
            self.start()
        run_id = request.run_id or uuid.uuid4().hex[:12]
        self._conn.send({"cmd": "run", "request": replace(request, run_id=run_id)})
        self._pending.append(run_id)
        return run_id

    def update_settings(self, settings: Any) -> None:
        """Apply new settings (model roots, cache budgets, device) to the running worker without
        restarting it; a worker started later gets them anyway."""
        from engine.config import Settings

        self.settings = Settings.from_json(settings) if isinstance(settings, dict) else settings
        if self.is_alive():
            try:
                self._conn.send({"cmd": "settings", "settings": self.settings.to_json()})
            except (OSError, BrokenPipeError):
                pass  # it died: the next submit restarts it with these settings

    def interrupt(self) -> None:
        if self._interrupt is not None:
            self._interrupt.set()

    def poll_events(self, timeout: float = 0.0) -> list[Event]:
        """Events available now (waiting up to `timeout` seconds for the first one)."""
        events, self._backlog = self._backlog, []
        if self._conn is None:
            return events
        deadline = time.monotonic() + timeout
        try:
            while True:
                wait = 0.0 if events else max(0.0, min(deadline - time.monotonic(), 0.2))
                if self._conn.poll(wait):
                    event = self._conn.recv()
                    events.append(event)
                    if isinstance(event, RunFinished) and event.run_id in self._pending:
                        self._pending.remove(event.run_id)
                elif events or not self.is_alive() or time.monotonic() >= deadline:
                    break
        except (EOFError, OSError):
            pass
        if not self.is_alive() and self._pending:
            events.extend(self._reap_events(RunStatus.CRASHED, self._exit_reason()))
        return events

    def wait(self, run_id: str, on_event: Callable[[Event], None] | None = None,
             timeout: float | None = None) -> RunFinished:
        """Block until `run_id` finishes, passing every event to `on_event`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            for event in self.poll_events(0.5):
                if on_event is not None:
                    on_event(event)
                if isinstance(event, RunFinished) and event.run_id == run_id:
                    return event
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"run {run_id} did not finish within {timeout} s")

    def run(self, request: RunRequest | dict[str, Any],
            on_event: Callable[[Event], None] | None = None, **kwargs: Any) -> RunFinished:
        return self.wait(self.submit(request, **kwargs), on_event)

    def stop(self, grace: float = 3.0) -> list[Event]:
        """Interrupt; if the current run has not finished within `grace` s, kill and restart.
        Returns the events read meanwhile (ending with the run's RunFinished)."""
        if not self._pending:
            return []
        current = self._pending[0]
        self.interrupt()
        deadline = time.monotonic() + grace
        collected: list[Event] = []
        while time.monotonic() < deadline:
            collected.extend(self.poll_events(0.1))
            if any(isinstance(e, RunFinished) and e.run_id == current for e in collected):
                return collected
        self.kill()
        collected.extend(self._reap_events(RunStatus.INTERRUPTED,
                                           f"worker did not stop within {grace:g} s; restarted"))
        self.start()
        return collected

    # ---- internals -------------------------------------------------------------------------
    def _exit_reason(self) -> str:
        code = self._process.exitcode if self._process is not None else None
        if code is not None and code < 0:
            return f"worker process was killed by signal {-code}"
        return f"worker process exited unexpectedly (exit code {code})"

    def _reap_events(self, status: RunStatus, reason: str) -> list[Event]:
        events: list[Event] = [RunFinished(run_id, status, RunReport.crashed(run_id, reason, status),
                                           reason) for run_id in self._pending]
        self._pending.clear()
        return events

    def _reap(self, status: RunStatus, reason: str) -> None:
        self._backlog.extend(self._reap_events(status, reason))

    def __enter__(self) -> "WorkerClient":
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
