"""The engine's error types. Loading and validation raise only `WorkflowError`; running raises
`NodeExecutionError` (naming the node) or `Interrupted`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a workflow, located as precisely as possible."""

    code: str  # machine-readable kind, e.g. "unknown_input", "type_mismatch", "cycle"
    message: str
    node_id: str | None = None
    node_type: str | None = None
    input: str | None = None

    def __str__(self) -> str:
        where = []
        if self.node_id is not None:
            where.append(f"node {self.node_id!r}" + (f" ({self.node_type})" if self.node_type else ""))
        if self.input is not None:
            where.append(f"input {self.input!r}")
        prefix = ", ".join(where)
        return f"{prefix}: {self.message}" if prefix else self.message

    def to_json(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}


class ReelgraphError(Exception):
    """Base of every error the engine raises on purpose."""


class WorkflowError(ReelgraphError):
    """A workflow document that cannot be loaded or run; carries every problem found."""

    def __init__(self, problems: list[Problem] | Problem | str, source: str | None = None):
        if isinstance(problems, str):
            problems = [Problem("invalid", problems)]
        elif isinstance(problems, Problem):
            problems = [problems]
        self.problems: list[Problem] = list(problems)
        self.source = source
        head = f"{source}: " if source else ""
        lines = "\n".join(f"  - {p}" for p in self.problems)
        n = len(self.problems)
        super().__init__(f"{head}{n} problem{'s' if n != 1 else ''} in workflow:\n{lines}")


class NodeError(ReelgraphError):
    """Raised by node code for a user-facing problem (bad input, missing file): no traceback shown."""

    def __init__(self, message: str, input: str | None = None):
        self.input = input
        super().__init__(message)


class NodeExecutionError(ReelgraphError):
    """A node failed while running. Names the node; keeps the original traceback text."""

    def __init__(self, node_id: str, node_type: str, message: str, traceback_text: str = ""):
        self.node_id = node_id
        self.node_type = node_type
        self.message = message
        self.traceback_text = traceback_text
        super().__init__(f"node {node_id!r} ({node_type}) failed: {message}")


class Interrupted(ReelgraphError):
    """The run was interrupted on request; finished nodes stay cached."""

    def __init__(self, node_id: str | None = None):
        self.node_id = node_id
        super().__init__("run interrupted" + (f" in node {node_id!r}" if node_id else ""))
