"""The execution context handed to every node's `execute`.

It is the node's only window on the run: device and dtype policy, progress reporting and the
interrupt check, scratch and output folders, the model folders and the workflow being run (for
embedding in outputs). Output paths are confined to the output folder: a node cannot write
outside it, whatever a graph file says.
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from engine.errors import Interrupted, NodeError

_SAFE_PART = re.compile(r"[^A-Za-z0-9._ -]+")


class InterruptFlag:
    """A flag checked cooperatively; wraps anything with is_set() (threading or multiprocessing)."""

    def __init__(self, event: Any | None = None):
        self._event = event if event is not None else threading.Event()

    def set(self) -> None:
        self._event.set()

    def clear(self) -> None:
        self._event.clear()

    def is_set(self) -> bool:
        return bool(self._event.is_set())


def confine(root: Path, relative: str) -> Path:
    """`root/relative`, refusing absolute paths, drive letters and any '..' escape."""
    rel = str(relative).replace("\\", "/")
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    if rel.startswith("/") or (parts and ":" in parts[0]) or any(p == ".." for p in parts) or not parts:
        raise NodeError(f"output path {relative!r} must be a relative path inside the output folder")
    clean = [_SAFE_PART.sub("_", p) for p in parts]
    path = (root / Path(*clean)).resolve()
    root_resolved = root.resolve()
    if path != root_resolved and root_resolved not in path.parents:
        raise NodeError(f"output path {relative!r} escapes the output folder")
    return path


@dataclass
class ExecutionContext:
    node_id: str
    node_type: str
    run_id: str
    # a torch.device, or a zero-argument callable giving one: the executor passes a callable so
    # that nodes which never ask for the device (constants, text, files) never import torch
    device_source: Any
    output_dir: Path
    temp_dir: Path
    cache_dir: Path
    interrupt: InterruptFlag
    report_progress: Callable[[float, str, Any], None]
    # the workflow being run, as JSON (save nodes embed it), or a zero-argument callable giving it:
    # the executor builds it only if a node asks
    workflow_source: Any = field(default_factory=dict)
    model_paths: Any = None  # engine.models.paths.ModelPaths when available
    settings: dict[str, Any] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)
    log_sink: Callable[[str, str], None] | None = None  # (level, message) -> the run's log
    claims: list[Path] = field(default_factory=list)  # output names taken by unique_output_path
    approved_endpoints: tuple[str, ...] = ()  # addresses the user allowed this run to contact
    keep_out_of_cache: str = ""  # why this result must not be cached ("" = cache it)

    @property
    def device(self) -> Any:
        """The torch.device models run on (resolved on first use)."""
        if callable(self.device_source):
            self.device_source = self.device_source()
        return self.device_source

    @property
    def workflow_json(self) -> dict[str, Any]:
        if callable(self.workflow_source):
            self.workflow_source = self.workflow_source()
        return self.workflow_source

    def skip_cache(self, reason: str) -> None:
        """Do not cache this node's result (e.g. a fallback after a failed remote call: the next
        run should try again, not serve the fallback as if it were the answer)."""
        self.keep_out_of_cache = reason or "the node asked"

    def log(self, level: str, message: str) -> None:
        """Say something to the user: it reaches the CLI, the report, the studio's log and the
        batch manifest, tagged with this node. `level` is debug, info, warning or error."""
        if self.log_sink is not None:
            self.log_sink(level, message)

    def check_interrupt(self) -> None:
        """Raise `Interrupted` if a stop was requested. Long nodes call this at least once a step."""
        if self.interrupt.is_set():
            raise Interrupted(self.node_id)

    def progress(self, fraction: float, message: str = "", preview: Any = None) -> None:
        """Report progress within this node (0..1) and honour a pending interrupt."""
        self.check_interrupt()
        self.report_progress(max(0.0, min(1.0, float(fraction))), message, preview)

    def output_path(self, relative: str) -> Path:
        """A path for a new output file under the output folder; parent folders are created."""
        path = confine(self.output_dir, relative)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise NodeError(f"cannot create the output folder {path.parent}: "
                            f"{exc.strerror or exc}; choose another output folder") from None
        return path

    def unique_output_path(self, prefix: str, suffix: str) -> Path:
        """`prefix_00001.suffix` with the first counter not yet taken (ComfyUI's naming). The
        name is claimed atomically (an empty file created with O_EXCL), so two runs writing
        into one folder at once never pick the same name; the writer replaces the empty file.
        A claim the node never fills is removed if the node fails (`release_claims`)."""
        for counter in range(1, 1_000_000):
            path = self.output_path(f"{prefix}_{counter:05d}{suffix}")
            try:
                os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            except FileExistsError:
                continue
            except OSError as exc:
                raise NodeError(f"cannot create {path.name} in the output folder {path.parent}: "
                                f"{exc.strerror or exc}") from None
            self.claims.append(path)
            return path
        raise NodeError(f"too many outputs named {prefix!r}")

    def release_claims(self) -> None:
        """Remove the names this node claimed but left empty (it failed before writing)."""
        for path in self.claims:
            try:
                if path.stat().st_size == 0:
                    path.unlink()
            except OSError:
                pass
        self.claims.clear()

    def register_output(self, path: Path) -> None:
        """Record a file this node wrote, for the run report and the studio's preview."""
        self.files.append(Path(path))
