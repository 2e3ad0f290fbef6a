"""The import report: what each ComfyUI node became, and everything that did not carry over.

Every line names the ComfyUI node (id and type) it is about. `placeholder` lines are the nodes
kept as inert placeholders (the CLI exits 1 when there is any); `warning` lines are values or
links that changed meaning or were left out; `info` lines say how the graph was rewritten.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

LEVELS = ("placeholder", "warning", "info")


@dataclass(frozen=True)
class Entry:
    level: str
    comfy_id: str | None
    comfy_type: str | None
    message: str
    node_id: str | None = None  # the Reelgraph node it concerns, when there is one

    def __str__(self) -> str:
        where = f"#{self.comfy_id} {self.comfy_type}" if self.comfy_id else (self.comfy_type or "graph")
        target = f" -> {self.node_id}" if self.node_id else ""
        return f"{self.level}: {where}{target}: {self.message}"

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in (("level", self.level), ("comfy_id", self.comfy_id),
                                  ("comfy_type", self.comfy_type), ("message", self.message),
                                  ("node_id", self.node_id)) if v is not None}


@dataclass
class ImportReport:
    source: str = ""
    origin: str = ""  # where the workflow was found: "json file", "PNG text chunk 'workflow'", ...
    format: str = ""  # "ui 0.4", "ui 1.0", "api"
    mapped: dict[str, list[str]] = field(default_factory=dict)  # comfy id -> Reelgraph node ids
    entries: list[Entry] = field(default_factory=list)

    def add(self, level: str, comfy_id: str | None, comfy_type: str | None, message: str,
            node_id: str | None = None) -> None:
        entry = Entry(level, comfy_id, comfy_type, message, node_id)
        if entry not in self.entries:  # one rewrite may notice the same thing from two sides
            self.entries.append(entry)

    @property
    def placeholders(self) -> list[Entry]:
        return [e for e in self.entries if e.level == "placeholder"]

    @property
    def warnings(self) -> list[Entry]:
        return [e for e in self.entries if e.level == "warning"]

    def summary(self) -> str:
        return (f"{self.source}: ComfyUI {self.format} workflow ({self.origin}); "
                f"{len(self.mapped)} node(s) mapped, {len(self.placeholders)} placeholder(s), "
                f"{len(self.warnings)} warning(s)")

    def summary_line(self) -> str:
        """One line for a banner: how the import went, without the file name."""
        if self.placeholders:
            head = f"Imported from ComfyUI with {len(self.placeholders)} placeholder node(s)"
        else:
            head = "Imported from ComfyUI: every node mapped"
        return (f"{head} ({self.format or 'workflow'}; {len(self.mapped)} node(s), "
                f"{len(self.warnings)} warning(s))")

    def lines(self, levels: tuple[str, ...] = LEVELS) -> list[str]:
        """The report's entries, placeholders first, then warnings, then info: one line each,
        for a banner's details or a tooltip."""
        order = {lvl: i for i, lvl in enumerate(LEVELS)}
        return [str(e) for e in sorted(self.entries, key=lambda e: order.get(e.level, 9))
                if e.level in levels]

    def to_text(self) -> str:
        return "\n".join([self.summary(), *(f"  {line}" for line in self.lines())])

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "origin": self.origin, "format": self.format,
                "mapped": self.mapped, "entries": [e.to_json() for e in self.entries]}
