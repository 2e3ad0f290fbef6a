"""The one run vocabulary: `RunRequest` -> `Plan` -> `RunReport`.

The CLI, the worker process, the local batch pool, Ray actors and the studio all speak these types;
none of them re-derives a status from strings or digs fields out of dicts. Everything here is a
plain dataclass or a `str` enum, so it pickles across a process pipe unchanged and writes to JSON
as the documented report (`RunReport.to_json`, read back by `RunReport.from_json`).

Statuses:
- run: done | failed | interrupted | invalid (refused before anything ran) | crashed (the worker
  process died; only a front end that supervises a worker says this).
- node: executed | cached (result read from the cache) | not_needed (result is cached and every
  node that would read it is cached too, so it was neither read nor run: a loader behind cached
  consumers never touches its file) | bypassed | skipped (behind a muted node) | failed |
  interrupted | pending (planned, not reached because the run stopped first).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Iterable

from engine.errors import Problem


class NamedEnum(str, Enum):
    """A str enum that prints as its value (what files, events and messages show)."""

    def __str__(self) -> str:
        return self.value


class RunStatus(NamedEnum):
    DONE = "done"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    INVALID = "invalid"
    CRASHED = "crashed"


class NodeStatus(NamedEnum):
    EXECUTED = "executed"
    CACHED = "cached"
    NOT_NEEDED = "not_needed"
    BYPASSED = "bypassed"
    SKIPPED = "skipped"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    PENDING = "pending"


class CachePolicy(NamedEnum):
    USE = "use"  # read and write the cache
    OFF = "off"  # execute every needed node; read and write nothing (`--no-cache`)


class LogLevel(NamedEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


@dataclass(frozen=True)
class RunRequest:
    """What to run. `workflow` is a Workflow or its JSON form (what crosses a process pipe);
    `overrides` are `NODE.INPUT=VALUE` strings applied before planning."""

    workflow: Any
    targets: tuple[str, ...] | None = None
    overrides: tuple[str, ...] = ()
    cache: CachePolicy = CachePolicy.USE
    output_dir: str | None = None
    run_id: str | None = None
    source: str | None = None  # the file it came from, for messages
    # addresses the graph names that the user approved for this run (engine.providers)
    approved_endpoints: tuple[str, ...] = ()

    @property
    def use_cache(self) -> bool:
        return self.cache is CachePolicy.USE


@dataclass(frozen=True)
class LogEntry:
    level: LogLevel
    message: str
    node_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"level": self.level.value, "message": self.message}
        if self.node_id is not None:
            out["node_id"] = self.node_id
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "LogEntry":
        return cls(LogLevel(data.get("level", "info")), str(data.get("message", "")),
                   data.get("node_id"))

    def __str__(self) -> str:
        where = f"{self.node_id}: " if self.node_id else ""
        return f"{self.level.value}: {where}{self.message}"


@dataclass(frozen=True)
class RunError:
    """Why a run did not finish: the node at fault (when there is one) and its message."""

    message: str
    node_id: str | None = None
    node_type: str | None = None
    traceback: str = ""

    def __str__(self) -> str:
        if self.node_id:
            return f"node {self.node_id!r} ({self.node_type}) failed: {self.message}"
        return self.message

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"message": self.message}
        if self.node_id is not None:
            out.update(node_id=self.node_id, node_type=self.node_type)
        if self.traceback:
            out["traceback"] = self.traceback
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "RunError":
        return cls(str(data.get("message", "")), data.get("node_id"), data.get("node_type"),
                   str(data.get("traceback", "")))


@dataclass(frozen=True)
class NodeRecord:
    """What happened to one node of the run's scope (immutable: on a 100,000-node graph the
    records of nodes that did nothing are shared, one per node type and status)."""

    node_type: str
    status: NodeStatus
    seconds: float = 0.0
    files: tuple[str, ...] = ()
    reason: str = ""  # why skipped, or the failure message

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.node_type, "status": self.status.value,
                               "seconds": round(self.seconds, 6)}
        if self.files:
            out["files"] = list(self.files)
        if self.reason:
            out["reason"] = self.reason
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "NodeRecord":
        return cls(str(data.get("type", "")), NodeStatus(data.get("status", "pending")),
                   float(data.get("seconds") or 0.0), tuple(data.get("files") or ()),
                   str(data.get("reason", "")))


@dataclass
class RunReport:
    """The outcome of a run. `values` holds the targets' outputs for in-process callers; it is
    never pickled into events or written to JSON (use `detached()` before sending)."""

    run_id: str
    status: RunStatus = RunStatus.DONE
    nodes: dict[str, NodeRecord] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)
    seconds: float = 0.0
    error: RunError | None = None
    problems: list[Problem] = field(default_factory=list)  # why the run was invalid
    log: list[LogEntry] = field(default_factory=list)
    values: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False, compare=False)

    # ---- queries ---------------------------------------------------------------------------
    @property
    def ok(self) -> bool:
        return self.status is RunStatus.DONE

    def with_status(self, status: NodeStatus) -> list[str]:
        return [nid for nid, rec in self.nodes.items() if rec.status is status]

    def counts(self) -> dict[NodeStatus, int]:
        out: dict[NodeStatus, int] = {}
        for rec in self.nodes.values():
            out[rec.status] = out.get(rec.status, 0) + 1
        return out

    def summary(self) -> str:
        """One line for a terminal: "done in 1.20 s: 3 executed, 2 cached, 4 not needed"."""
        counts = self.counts()
        parts = [f"{counts[s]} {s.value.replace('_', ' ')}" for s in NodeStatus if counts.get(s)]
        return f"{self.status.value} in {self.seconds:.2f} s: {', '.join(parts) or 'nothing to do'}"

    def detached(self) -> "RunReport":
        """A copy without `values` (tensors stay in this process)."""
        return RunReport(self.run_id, self.status, self.nodes, self.outputs, self.seconds,
                         self.error, self.problems, self.log)

    # ---- JSON ------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"run_id": self.run_id, "status": self.status.value,
                               "seconds": round(self.seconds, 4),
                               "nodes": {nid: rec.to_json() for nid, rec in self.nodes.items()},
                               "outputs": list(self.outputs)}
        if self.error is not None:
            out["error"] = self.error.to_json()
        if self.problems:
            out["problems"] = [p.to_json() for p in self.problems]
        if self.log:
            out["log"] = [entry.to_json() for entry in self.log]
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "RunReport":
        error = data.get("error")
        return cls(
            run_id=str(data.get("run_id", "")), status=RunStatus(data.get("status", "done")),
            nodes={nid: NodeRecord.from_json(rec) for nid, rec in (data.get("nodes") or {}).items()},
            outputs=list(data.get("outputs") or []), seconds=float(data.get("seconds") or 0.0),
            error=RunError.from_json(error) if isinstance(error, dict) else None,
            problems=[Problem(**p) for p in data.get("problems") or []],
            log=[LogEntry.from_json(e) for e in data.get("log") or []])

    @classmethod
    def refused(cls, run_id: str, problems: Iterable[Problem], message: str = "") -> "RunReport":
        """The report of a run that was invalid: nothing ran."""
        problems = list(problems)
        text = message or "; ".join(str(p) for p in problems) or "invalid workflow"
        return cls(run_id, RunStatus.INVALID, error=RunError(text), problems=problems)

    @classmethod
    def crashed(cls, run_id: str, message: str, status: RunStatus = RunStatus.CRASHED) -> "RunReport":
        """The report a supervisor writes when the process running it died or was killed."""
        return cls(run_id, status, error=RunError(message))


__all__ = ["CachePolicy", "LogEntry", "LogLevel", "NodeRecord", "NodeStatus", "RunError",
           "RunReport", "RunRequest", "RunStatus"]
