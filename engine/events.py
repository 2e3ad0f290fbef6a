"""Run events: the one stream that the CLI progress bar, the studio and tests all consume.

Events are small picklable dataclasses so a worker process can send them over a pipe unchanged.
Per node the order is: queued -> (cached | running, progress*, done | failed). A run opens with
`RunStarted` and always closes with exactly one `RunFinished`, whatever happened.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable


@dataclass
class Event:
    run_id: str

    @property
    def kind(self) -> str:
        return type(self).__name__

    def to_json(self) -> dict[str, Any]:
        out = {"event": self.kind}
        out.update({k: v for k, v in asdict(self).items() if k != "preview"})
        return out


@dataclass
class RunStarted(Event):
    node_ids: list[str] = field(default_factory=list)  # planned nodes, in execution order


@dataclass
class NodeQueued(Event):
    node_id: str = ""
    node_type: str = ""


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
    level: str = "info"
    message: str = ""
    node_id: str | None = None


@dataclass
class RunFinished(Event):
    status: str = "done"  # done | failed | interrupted | crashed
    report: dict[str, Any] = field(default_factory=dict)
    error: str = ""


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
