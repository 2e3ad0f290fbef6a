"""Run events: the one stream that the CLI progress bar, the studio and tests all consume.

Events are small picklable dataclasses so a worker process can send them over a pipe unchanged.
A run opens with `RunStarted`, which carries the whole plan (every node of the run's scope and
what it will do: executed, cached, not_needed, bypassed), and always closes with exactly one
`RunFinished` carrying the typed `RunReport`, whatever happened. In between, per node that does
something: `NodeCached`, or `NodeStarted`, `NodeProgress`*, then `NodeDone` or `NodeFailed`
(a worker adds `NodeOutputs` after NodeDone/NodeCached: a display summary of the values);
`NodeSkipped` for a target behind a muted node; `LogMessage` for what nodes and the cache say.
Nodes that are not needed get no event of their own: the plan in `RunStarted` says it once.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from engine.run_api import LogLevel, RunReport, RunStatus


@dataclass
class Event:
    run_id: str

    @property
    def kind(self) -> str:
        return type(self).__name__

    def to_json(self) -> dict[str, Any]:
        out = {"event": self.kind}
        out.update({k: v for k, v in asdict(self).items() if k not in ("preview", "image")})
        return out


@dataclass
class RunStarted(Event):
    node_ids: list[str] = field(default_factory=list)  # nodes that will run or be read, in order
    plan: dict[str, str] = field(default_factory=dict)  # every scope node -> planned NodeStatus value


@dataclass
class NodeCached(Event):
    node_id: str = ""
    node_type: str = ""
    overall: float = 0.0


@dataclass
class NodeStarted(Event):
    node_id: str = ""
    node_type: str = ""
    overall: float = 0.0


@dataclass
class NodeProgress(Event):
    node_id: str = ""
    fraction: float = 0.0  # 0..1 within the node
    overall: float = 0.0  # 0..1 over the run
    message: str = ""
    preview: Any = None  # optional latent preview: uint8 (H, W, 3) array or float (1, H, W, 3) tensor


@dataclass
class NodeDone(Event):
    node_id: str = ""
    node_type: str = ""
    seconds: float = 0.0
    overall: float = 0.0
    files: list[str] = field(default_factory=list)


@dataclass
class NodeOutputs(Event):
    """What a node produced, summarised for display (the studio's node text and thumbnails).

    Sent by the worker right after a node's NodeDone or NodeCached: `texts` holds its TEXT/STRING
    outputs (each clipped to 4,000 characters), `image` a small uint8 (H, W, 3) picture of its
    first IMAGE/VIDEO output (first frame, at most 256 px on its long side), or None."""
    node_id: str = ""
    texts: dict[str, str] = field(default_factory=dict)
    image: Any = None


@dataclass
class NodeFailed(Event):
    node_id: str = ""
    node_type: str = ""
    message: str = ""
    traceback: str = ""


@dataclass
class NodeSkipped(Event):
    node_id: str = ""
    node_type: str = ""
    reason: str = ""


@dataclass
class LogMessage(Event):
    level: LogLevel = LogLevel.INFO
    message: str = ""
    node_id: str | None = None


@dataclass
class RunFinished(Event):
    status: RunStatus = RunStatus.DONE
    report: RunReport | None = None  # None only when a supervisor closes a run it never heard of
    error: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"event": self.kind, "run_id": self.run_id, "status": self.status.value,
                "error": self.error, "report": self.report.to_json() if self.report else None}


EventSink = Callable[[Event], None]


def null_sink(event: Event) -> None:
    """An event sink that drops everything."""


class ProgressThrottle:
    """Lets through at most `hz` progress events per second per node, always the first and last."""

    def __init__(self, hz: float = 20.0):
        self.interval = 1.0 / hz
        self._last: dict[str, float] = {}

    def allow(self, node_id: str, fraction: float, force: bool = False) -> bool:
        now = time.monotonic()
        last = self._last.get(node_id)
        if force or last is None or fraction >= 1.0 or now - last >= self.interval:
            self._last[node_id] = now
            return True
        return False
