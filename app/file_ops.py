"""Files of the studio: New, Open, Save, Save As, Recent, dropped files, and the questions around
them (unsaved changes, newer format versions, missing node types).

Invariants:
- The user's file is written only by an explicit Save / Save As (atomic, engine Workflow.save).
- A file from a newer format version opens only after the user agrees, and keeps every unknown
  part on save (the engine keeps unknown fields; the version number is kept too).
- Nodes of unknown types load as greyed placeholders with their inputs; nothing is dropped.
- Dropping an output image/video that embeds a workflow opens that workflow as a new, unsaved
  document; dropping plain media adds a LoadImage/LoadVideo node for it.
- File ▸ Open of an output image/video opens the workflow embedded in it the same way: a
  Reelgraph one as it is, a ComfyUI one through engine.comfy's importer; a file that carries none
  gets a message box, never a decoding error.
- Templates and examples open as copies (no path: Save asks where). An example opened by path is
  never overwritten either: Save on it asks for a new path (app.templates.is_protected).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from PySide6.QtCore import QObject, QPointF, Signal
from PySide6.QtGui import QUndoStack

from engine.document import Workflow, load_workflow, workflow_from_json
from engine.errors import WorkflowError
from engine.registry import NodeRegistry
from app.dialogs import DROPPABLE_MEDIA, Dialogs
from app.graph_model import GraphModel
from app.studio_settings import StudioPrefs
from app.templates import is_protected, template_name

VIDEO_DROP = {".mp4", ".webm", ".mov", ".mkv", ".gif"}


class FileController(QObject):
    path_changed = Signal(object)  # str | None
    document_loaded = Signal()
    message = Signal(str)
    import_report = Signal(object)  # engine.comfy ImportReport of a file just imported

    def __init__(self, model: GraphModel, undo_stack: QUndoStack, registry: NodeRegistry,
                 dialogs: Dialogs, prefs: StudioPrefs):
        super().__init__()
        self.model, self.stack, self.registry = model, undo_stack, registry
        self.dialogs, self.prefs = dialogs, prefs
        self.current_path: str | None = None
        self.copy_of: str | None = None  # the template's title while an unsaved copy is open
        self._force_dirty = False  # a restored or dropped document differs from any file
        self.before_save: Callable[[], None] | None = None  # e.g. remember the view in the layout
        undo_stack.cleanChanged.connect(self._clean_changed)  # bound: dropped with this object

    def _clean_changed(self, _clean: bool) -> None:
        self.path_changed.emit(self.current_path)

    # ---- state --------------------------------------------------------------------------------
    def is_dirty(self) -> bool:
        return self._force_dirty or not self.stack.isClean()

    def display_name(self) -> str:
        if self.current_path:
            return Path(self.current_path).name
        return f"{self.copy_of} (copy)" if self.copy_of else "Untitled"

    # ---- reading ------------------------------------------------------------------------------
    def read(self, path: str) -> Workflow | None:
        """Load a workflow file, asking before opening a newer format; errors are shown, not raised."""
        try:
            return load_workflow(path)
        except WorkflowError as exc:
            if any(p.code == "newer_version" for p in exc.problems):
                problem = next(p for p in exc.problems if p.code == "newer_version")
                if self.dialogs.confirm("Newer file format",
                                        f"{Path(path).name} was {problem.message}\n\nOpen it anyway?"):
                    try:
                        return load_workflow(path, allow_newer=True)
                    except WorkflowError as again:
                        exc = again
                else:
                    return None
            self.dialogs.error("Cannot open workflow", str(exc))
            return None

    def set_document(self, workflow: Workflow, path: str | None, dirty: bool = False) -> None:
        self.model.load(workflow)
        self.stack.clear()
        self.stack.setClean()
        self.current_path = str(Path(path).resolve()) if path else None
        self.copy_of = None
        self._force_dirty = dirty
        self.path_changed.emit(self.current_path)
        self.document_loaded.emit()
        missing = sorted({n.type for n in workflow.nodes.values() if n.type not in self.registry})
        if missing:
            self.dialogs.warning(
                "Missing node types",
                "This workflow uses node types that are not installed:\n  " + "\n  ".join(missing)
                + "\n\nThey are shown greyed with their settings. Nothing is lost: saving writes them "
                  "back unchanged. Install the node pack that provides them to run them.")

    # ---- verbs --------------------------------------------------------------------------------
    def new(self) -> bool:
        if not self.maybe_save():
            return False
        self.set_document(Workflow(), None)
        return True

    def open(self, path: str | None = None) -> bool:
        """Open a workflow file, or the workflow embedded in an output image or video (or a
        ComfyUI workflow, imported). Asks to save unsaved changes first."""
        if not self.maybe_save():
            return False
        path = path or self.dialogs.open_workflow_path(str(Path(self.current_path).parent)
                                                       if self.current_path else "")
        if not path:
            return False
        if is_media(path):
            return self._open_media(path, asked=True)
        if self._comfy_workflow(path, confirmed=True):  # a ComfyUI workflow .json: import it
            return True
        workflow = self.read(path)
        if workflow is None:
            return False
        self.set_document(workflow, path)
        self.prefs.add_recent(path)
        self.message.emit(f"Opened {Path(path).name}")
        return True

    def open_copy(self, path: str, title: str | None = None) -> bool:
        """Open a template or example as an unsaved copy: no path, so Save asks where."""
        if not self.maybe_save():
            return False
        workflow = self.read(path)
        if workflow is None:
            return False
        self.set_document(workflow, None)
        self.copy_of = title or Path(path).stem
        self.path_changed.emit(None)
        self.message.emit(f"Opened a copy of {self.copy_of}; Save asks where to keep it")
        return True

    def save(self) -> bool:
        if self.current_path is None:
            return self.save_as()
        if is_protected(self.current_path):
            self.message.emit(f"{Path(self.current_path).name} is an example that ships with "
                              "Reelgraph: save your version under a new name")
            return self.save_as()
        return self._write(self.current_path)

    def save_as(self) -> bool:
        if self.current_path and not is_protected(self.current_path):
            start = self.current_path
        else:  # a copy or an example: suggest its name in the user's home, not workflows/
            stem = Path(self.current_path).stem if self.current_path else (
                template_name(self.copy_of) if self.copy_of else "untitled")
            start = str(Path.home() / f"{stem or 'untitled'}.json")
        path = self.dialogs.save_workflow_path(start)
        return self._write(path) if path else False

    def _write(self, path: str) -> bool:
        if self.before_save is not None:
            self.before_save()
        try:
            self.model.workflow.save(path)
        except OSError as exc:
            self.dialogs.error("Cannot save", f"Could not write {path}:\n{exc}")
            return False
        self.current_path = str(Path(path).resolve())
        self._force_dirty = False
        self.stack.setClean()
        self.prefs.add_recent(path)
        self.path_changed.emit(self.current_path)
        self.message.emit(f"Saved {Path(path).name}")
        return True

    def maybe_save(self) -> bool:
        """True when it is fine to replace the document (saved, discarded, or nothing to save)."""
        if not self.is_dirty():
            return True
        answer = self.dialogs.save_discard_cancel(
            f"Save changes to {self.display_name()} before closing it?")
        if answer == "save":
            return self.save()
        return answer == "discard"

    # ---- drops --------------------------------------------------------------------------------
    def drop(self, paths: list[str], scene_pos: QPointF, add_media_node=None) -> bool:
        """Handle files dropped on the canvas. `add_media_node(type, input, path, pos)` adds a
        loader node for plain media. Returns True when something was done."""
        for path in paths:
            suffix = Path(path).suffix.lower()
            if suffix == ".json":
                return self.open(path)
            if suffix in DROPPABLE_MEDIA:
                if self._open_media(path, asked=False):
                    return True
                if add_media_node is not None:
                    is_video = suffix in VIDEO_DROP
                    node_type, input_name = ("LoadVideo", "video") if is_video else ("LoadImage", "image")
                    if node_type in self.registry:
                        add_media_node(node_type, input_name, path, scene_pos)
                        self.message.emit(f"{Path(path).name} holds no workflow; added a {node_type} node")
                        return True
                self.message.emit(f"{Path(path).name} holds no Reelgraph workflow")
        return False

    def _open_media(self, path: str, asked: bool) -> bool:
        """Open the workflow embedded in an output file as a new, unsaved document. `asked`: the
        user chose this file to open (File ▸ Open), so a file without a workflow gets a message
        box; a dropped one does not (the drop then adds a loader node instead), and it was
        already asked about unsaved changes. True when the file was dealt with."""
        name = Path(path).name
        embedded = self._embedded_workflow(path)
        if embedded is not None:
            if not asked and not self.maybe_save():
                return True  # handled: the user kept the current document
            self.set_document(embedded, None, dirty=True)
            self.message.emit(f"Opened the workflow embedded in {name}")
            return True
        if self._comfy_workflow(path, confirmed=asked):
            return True
        if asked:
            self.dialogs.warning("No workflow in this file",
                                 f"{name} carries no Reelgraph or ComfyUI workflow, so there is no "
                                 "graph to open.\n\nOutputs of Reelgraph (and of ComfyUI) embed "
                                 "the graph that made them; this file was made elsewhere or its "
                                 "metadata was stripped. To use it as an input, drop it on the "
                                 "canvas: that adds a LoadImage or LoadVideo node.")
        return False

    def _comfy_workflow(self, path: str, confirmed: bool = False) -> bool:
        """Import the ComfyUI workflow a file carries (engine.comfy), as a new unsaved document.
        False when the file carries none; problems of the import are shown, not raised.
        `confirmed`: unsaved changes were already dealt with."""
        name = Path(path).name
        try:
            from engine.comfy import ComfyImportError, import_comfy_file, looks_like_comfy_file
        except ImportError:  # an engine without the importer: say how else to get the graph
            return False
        if not looks_like_comfy_file(path):
            return False
        if not confirmed and not self.maybe_save():
            return True
        try:
            result = import_comfy_file(path, self.registry)
        except ComfyImportError as exc:
            self.dialogs.error("Cannot import the ComfyUI workflow", f"{name}: {exc}")
            return True
        self.set_document(result.workflow, None, dirty=True)
        self.copy_of = f"{Path(path).stem} (from ComfyUI)"
        self.path_changed.emit(None)
        report = result.report
        self.import_report.emit(report)  # a banner above the canvas (app.import_banner)
        self.message.emit(f"Imported the ComfyUI workflow in {name}: {report.summary()}"
                          if hasattr(report, "summary") else f"Imported the ComfyUI workflow in {name}")
        return True

    def _embedded_workflow(self, path: str) -> Workflow | None:
        try:
            from engine.media import extract_workflow
            data: dict[str, Any] | None = extract_workflow(path)
        except Exception as exc:  # a damaged file: report it, keep the canvas
            self.message.emit(f"Cannot read {Path(path).name}: {exc}")
            return None
        if data is None:
            return None
        try:
            return workflow_from_json(data, source=path, allow_newer=True)
        except WorkflowError as exc:
            self.dialogs.error("Cannot open the embedded workflow", str(exc))
            return None


def is_media(path: str) -> bool:
    """An image or video (by name, or by its first bytes for a misnamed file): not a JSON file."""
    if Path(path).suffix.lower() in DROPPABLE_MEDIA:
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError:
        return False
    return (head.startswith(b"\x89PNG") or head[:4] == b"RIFF" or head[4:8] == b"ftyp"
            or head.startswith(b"\x1aE\xdf\xa3") or head[:3] == b"GIF")
