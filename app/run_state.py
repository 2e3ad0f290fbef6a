"""What the studio knows about one node during and after a run (fed by run events).

Kept apart from the run controller so node items can paint it without importing the worker.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

STATES = ("idle", "queued", "running", "cached", "not_needed", "done", "failed", "skipped",
          "interrupted")


@dataclass
class NodeRunState:
    state: str = "idle"
    fraction: float = 0.0  # 0..1 within the node while running
    message: str = ""  # progress message, or the failure message
    traceback: str = ""
    seconds: float = 0.0
    files: list[str] = field(default_factory=list)
    started: float = 0.0  # time.monotonic() when the node started running
    stopping: bool = False  # a Stop was requested while it ran: it ends at its next step
    texts: dict[str, str] = field(default_factory=dict)  # its TEXT/STRING outputs (NodeOutputs)

    def elapsed(self, now: float | None = None) -> float:
        return max(0.0, (now or time.monotonic()) - self.started) if self.started else 0.0

    def eta(self, now: float | None = None) -> float | None:
        """Seconds left, extrapolated from the fraction done so far (None until 2 % is done)."""
        if self.state != "running" or self.fraction < 0.02 or not self.started:
            return None
        return self.elapsed(now) * (1.0 - self.fraction) / self.fraction

    def progress_text(self, now: float | None = None) -> str:
        """'step 9/20 · 0:41 · ETA 0:50' for the status bar and the inspector."""
        if self.state != "running":
            return ""
        if self.stopping:
            return "stopping after this step…"
        parts = [self.message or f"{int(self.fraction * 100)}%", clock(self.elapsed(now))]
        eta = self.eta(now)
        if eta is not None:
            parts.append(f"ETA {clock(eta)}")
        return " · ".join(parts)

    def badge(self) -> str:
        """Short text for the node's title bar."""
        if self.state == "running":
            if self.stopping:
                return "stopping"
            eta = self.eta()
            return f"{int(self.fraction * 100)}%" + (f" · {clock(eta)}" if eta is not None else "")
        if self.state == "done":
            return f"{self.seconds:.1f}s"
        if self.state == "not_needed":
            return "not needed"
        if self.state in ("cached", "queued", "failed", "skipped", "interrupted"):
            return self.state
        return ""


def clock(seconds: float) -> str:
    """0:07, 2:41, 1:02:03."""
    s = int(round(seconds))
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"
