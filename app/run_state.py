"""What the studio knows about one node during and after a run (fed by run events).

Kept apart from the run controller so node items can paint it without importing the worker.
"""

from __future__ import annotations

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

    def badge(self) -> str:
        """Short text for the node's title bar."""
        if self.state == "running":
            return f"{int(self.fraction * 100)}%"
        if self.state == "done":
            return f"{self.seconds:.1f}s"
        if self.state == "not_needed":
            return "not needed"
        if self.state in ("cached", "queued", "failed", "skipped", "interrupted"):
            return self.state
        return ""
