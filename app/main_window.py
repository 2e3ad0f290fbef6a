"""The studio window: canvas in the centre, inspector / preview / log docks, menus, toolbar and a
status bar; it wires the document, the undo stack, files, autosave and runs together.

Invariants:
- One document per window; its GraphModel, QUndoStack and FileController live and die with it.
- The dirty marker ([*] in the title) is "undo stack not clean, or a restored/dropped document".
- Closing asks to save unsaved work; a normal close removes the recovery file, a crash leaves it.
- Runs read a JSON snapshot of the document; nothing about running changes the graph except the
  explicit, undoable seed controls (increment / decrement / randomize), applied only once a run
  passed validation and was queued.
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path
from typing import Any, Callable

import shiboken6
from PySide6.QtCore import QPointF, Qt, QTimer
from PySide6.QtGui import QCloseEvent, QUndoStack
from PySide6.QtWidgets import (QDockWidget, QLabel, QMainWindow, QMessageBox, QProgressBar,
                               QVBoxLayout, QWidget)

from engine.config import Settings, save_settings
from engine.errors import WorkflowError
from engine.graph_index import GraphIndex
from engine.subgraphs import flat_ids, owner_of
from engine.models.paths import model_paths_for
from engine.registry import NodeRegistry
from app import menus, wheel_guard
from app.autosave import Autosaver, RecoveryStore
from app.dialogs import Dialogs
from app.file_ops import FileController
from app.graph_model import GraphModel
from app.inspector import Inspector
from app.log_panel import LogPanel
from app.media_decode import thumbnail
from app.preview import PreviewPanel
from app.run_state import NodeRunState
from app.run_controller import RunController
from app.run_display import RunDisplay
from app.history_panel import HistoryPanel
from app.import_banner import ImportBanner
from app.scene import GraphScene
from app.studio_settings import SettingsDialog, StudioPrefs
from app.view import GraphView


def _default_client_factory(settings: Settings) -> Callable[[], Any]:
    def make() -> Any:
        from engine.worker import WorkerClient
        return WorkerClient(settings)
    return make


class MainWindow(QMainWindow):
    def __init__(self, registry: NodeRegistry, settings: Settings | None = None,
                 prefs: StudioPrefs | None = None, recovery: RecoveryStore | None = None,
                 client_factory: Callable[[], Any] | None = None, dialogs: Dialogs | None = None,
                 autosave_ms: int = 1500, persist_settings: bool = True):
        super().__init__()
        wheel_guard.install()  # also when a window is made without create_app (tests, scripts)
        self.registry = registry
        self.settings = settings or Settings()
        self.approved_endpoints: set[str] = set()  # addresses allowed for this session
        self.prefs = prefs or StudioPrefs()
        self.persist_settings = persist_settings
        self.dialogs = dialogs or Dialogs(self)
        self.model = GraphModel(registry)
        self.undo_stack = QUndoStack(self)
        self.scene = GraphScene(self.model, self.undo_stack)
        self.editor = self.scene.editor
        self.view = GraphView(self.scene, self.dialogs, self.model_names)
        self.import_banner = ImportBanner()
        central = QWidget()
        column = QVBoxLayout(central)
        column.setContentsMargins(0, 0, 0, 0)
        column.setSpacing(0)
        column.addWidget(self.import_banner)
        column.addWidget(self.view, 1)
        self.setCentralWidget(central)
        self.files = FileController(self.model, self.undo_stack, registry, self.dialogs, self.prefs)
        self.files.before_save = self._store_view
        self.runs = RunController(client_factory or _default_client_factory(self.settings),
                                  output_dir=self.settings.output_dir, parent=self)
        self.recovery = recovery or RecoveryStore()
        self.autosaver = Autosaver(self.recovery, self._snapshot, autosave_ms, parent=self)
        self.randomize_seeds = True
        self._imported = False
        self._build_docks()
        self._build_status_bar()
        self.actions = menus.build(self)
        self._connect()
        self.resize(1500, 900)
        self._update_title()

    # ---- construction -------------------------------------------------------------------------
    def _build_docks(self) -> None:
        self.inspector = Inspector(self.model, self.editor, self.model_names, self.dialogs.media_file)
        self.preview = PreviewPanel()
        self.log_panel = LogPanel()
        self.inspector_dock = self._dock("Inspector", self.inspector, Qt.RightDockWidgetArea)
        self.preview_dock = self._dock("Preview", self.preview, Qt.RightDockWidgetArea)
        self.log_dock = self._dock("Log", self.log_panel, Qt.BottomDockWidgetArea)
        self.history = HistoryPanel(self.runs, self.preview.show_files, self.open_run_graph)
        self.history_dock = self._dock("Queue · History", self.history, Qt.BottomDockWidgetArea)
        self.resizeDocks([self.inspector_dock, self.preview_dock], [420, 420], Qt.Vertical)
        self.resizeDocks([self.inspector_dock], [400], Qt.Horizontal)
        self.resizeDocks([self.log_dock], [150], Qt.Vertical)

    def _dock(self, title: str, widget, area) -> QDockWidget:
        dock = QDockWidget(title, self)
        dock.setObjectName(title.lower())
        dock.setWidget(widget)
        dock.setFeatures(QDockWidget.DockWidgetMovable | QDockWidget.DockWidgetFloatable
                         | QDockWidget.DockWidgetClosable)
        self.addDockWidget(area, dock)
        return dock

    def _build_status_bar(self) -> None:
        bar = self.statusBar()
        self.count_label = QLabel("")
        self.zoom_label = QLabel("100%")
        self.run_label = QLabel("idle")
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 1000)
        self.progress_bar.setFixedWidth(180)
        self.progress_bar.setTextVisible(False)
        for w in (self.run_label, self.progress_bar, self.count_label, self.zoom_label):
            bar.addPermanentWidget(w)

    def _connect(self) -> None:
        self.undo_stack.indexChanged.connect(self._on_edit)
        # bound methods, not lambdas: Qt drops them with the window, so a signal emitted while
        # the app tears down (Quit -> Discard) never reaches a deleted window
        self.undo_stack.cleanChanged.connect(self._update_title)
        self.files.path_changed.connect(self._update_title)
        self.files.document_loaded.connect(self._on_document_loaded)
        self.files.message.connect(self.show_message)
        self.files.import_report.connect(self.import_banner.show_report)
        self.files.import_report.connect(self._frame_import)
        self.files.document_loaded.connect(self.import_banner.hide)  # before a new report shows
        self.view.status_message.connect(self.show_message)
        self.view.zoom_changed.connect(lambda z: self.zoom_label.setText(f"{round(z * 100)}%"))
        self.view.files_dropped.connect(self._on_drop)
        self.view.run_to_requested.connect(lambda nid: self.run_to([nid]))
        self.scene.selectionChanged.connect(self._on_selection)
        self.runs.node_state_changed.connect(self._on_node_state)
        self.runs.log.connect(self.log_panel.append)
        self.runs.progress.connect(lambda f: self.progress_bar.setValue(int(f * 1000)))
        self.runs.run_started.connect(lambda _r: self._set_run_label())
        self.runs.run_finished.connect(self._on_run_finished)
        self.runs.queue_changed.connect(lambda _n: self._set_run_label())
        self.runs.files_ready.connect(self._on_files)
        self.run_display = RunDisplay(self)  # progress, ETA, latent clips, outputs, stale marks
        self.model.node_added.connect(lambda _n: self._update_counts())
        self.model.node_removed.connect(lambda _n: self._update_counts())
        self.model.link_added.connect(lambda _l: self._update_counts())
        self.model.link_removed.connect(lambda _l: self._update_counts())
        self.model.reset.connect(self._update_counts)

    # ---- document -----------------------------------------------------------------------------
    def _snapshot(self) -> tuple[dict, str | None, bool]:
        return self.model.workflow.to_json(), self.files.current_path, self.files.is_dirty()

    def _on_edit(self, _index: int = 0) -> None:
        self.autosaver.schedule()
        self._update_title()

    def _on_document_loaded(self) -> None:
        self.scene.clear_run_states()
        self.preview.clear()
        QTimer.singleShot(0, self._restore_view)
        self.view.setFocus()  # canvas shortcuts (X, C, F, Tab) work right away
        self.autosaver.schedule()
        self._update_title()

    def _restore_view(self) -> None:
        """Show the part of the canvas saved with the file, else frame everything."""
        view = self.model.workflow.layout.get("view")
        imported, self._imported = self._imported, False
        try:
            if imported:  # ComfyUI's saved offset assumes its own window: frame the graph instead
                raise KeyError("view")
            cx, cy = (float(v) for v in view["center"])
            zoom = float(view["zoom"])
        except (TypeError, KeyError, ValueError):
            self.view.frame_for_reading()
            return
        self.view.set_zoom(zoom)
        self.view.centerOn(QPointF(cx, cy))

    def _store_view(self) -> None:
        """Remember the visible area in layout["view"] (layout never affects a run); forget
        reroute dots of wires that are gone."""
        self.editor.prune_reroutes()
        center = self.view.visible_scene_rect().center()
        self.model.workflow.layout["view"] = {"center": [round(center.x()), round(center.y())],
                                              "zoom": round(self.view.zoom(), 3)}

    def _frame_import(self, _report=None) -> None:
        self._imported = True  # _restore_view (queued by document_loaded) frames it

    def _update_title(self, *_args) -> None:
        if not shiboken6.isValid(self):
            return
        self.setWindowTitle(f"{self.files.display_name()}[*] — Reelgraph")
        self.setWindowModified(self.files.is_dirty())

    def _update_counts(self, *_args) -> None:
        n, links = len(self.model.workflow.nodes), len(self.model.workflow.links)
        self.count_label.setText(f"{n} nodes · {links} links")

    def show_message(self, text: str) -> None:
        self.statusBar().showMessage(text, 6000)

    def load_workflow(self, workflow, path: str | None, dirty: bool = False) -> None:
        self.files.set_document(workflow, path, dirty)

    def open_run_graph(self, workflow_json: dict, title: str) -> None:
        """Re-open the exact graph a past run used, as a new unsaved copy."""
        from engine.document import workflow_from_json

        if not self.files.maybe_save():
            return
        self.files.set_document(workflow_from_json(workflow_json, allow_newer=True), None, dirty=True)
        self.files.copy_of = f"graph of {title}"
        self.files.path_changed.emit(None)
        self.show_message(f"Opened the graph of {title} as a copy")

    def model_names(self, kind: str) -> list[str]:
        return model_paths_for(self.settings).list(kind)

    def _on_drop(self, paths: list[str], scene_pos: QPointF) -> None:
        def add_media_node(node_type: str, input_name: str, path: str, pos: QPointF) -> None:
            node_id = self.editor.add_node(node_type, (pos.x(), pos.y()))
            self.editor.set_input(node_id, input_name, path)
        self.files.drop(paths, scene_pos, add_media_node)

    # ---- selection and previews ----------------------------------------------------------------
    def selected_node(self) -> str | None:
        ids = self.scene.selected_node_ids()
        return ids[0] if len(ids) == 1 else None

    def _on_selection(self) -> None:
        if not shiboken6.isValid(self.scene):
            return  # the scene emits while it is being destroyed with the window
        node_id = self.selected_node()
        self.inspector.show_node(node_id)
        if node_id is not None:
            self.inspector.set_run_state(self.runs.states.get(node_id, self.scene.nodes[node_id].run_state))
            self._show_preview(node_id)

    def _node_title(self, node_id: str) -> str:
        node, spec = self.model.node(node_id), self.model.spec(node_id)
        return node.title or (spec.title if spec else node.type)

    def _show_preview(self, node_id: str) -> None:
        files = self.runs.last_files.get(node_id, [])
        input_file = self.run_display.input_file(node_id)  # LoadImage / LoadVideo
        if not files and input_file:
            files = [input_file]
        texts = self.runs.states.get(node_id, NodeRunState()).texts
        if files:
            self.preview.show_files(self._node_title(node_id), files)
        elif texts:  # a text node (Recaption): its output, readable where pictures show
            self.preview.clear("\n\n".join(texts.values()))
        else:
            self.preview.clear("No image or video output yet — run the graph")

    def _on_files(self, node_id: str, files: list[str]) -> None:
        spec = self.model.spec(node_id) if node_id in self.model.workflow.nodes else None
        if spec is not None and spec.is_output:
            image = thumbnail(files[0]) if files else None
            self.scene.set_thumbnail(node_id, image)
        if self.selected_node() in (node_id, None):
            self.preview.show_files(self._node_title(node_id) if spec else node_id, files)

    def _on_node_state(self, node_id: str) -> None:
        state = self.runs.states.get(node_id)
        if state is None:
            return
        if node_id not in self.model.workflow.nodes:  # a node inside a subgraph: shown on it
            node_id = owner_of(node_id)
        self.scene.set_run_state(node_id, state)
        if node_id == self.inspector.node_id:
            self.inspector.set_run_state(state)

    # ---- runs ---------------------------------------------------------------------------------
    def run(self) -> None:
        self._queue([], "Run")

    def run_to(self, node_ids: list[str]) -> None:
        """Run only what the given nodes need (their upstream closure)."""
        ids = [n for n in node_ids if n in self.model.workflow.nodes]
        if ids:
            self._queue(ids, f"Run to {', '.join(ids)}")

    def run_selected(self) -> None:
        ids = self.scene.selected_node_ids()
        if ids:
            self.run_to(ids)
        else:
            self.show_message("Select the nodes to run up to")

    def _queue(self, targets: list[str], label: str) -> None:
        self.view.commit_editor()  # Ctrl+Enter while typing a prompt runs with that prompt
        self.inspector.commit_pending()
        snapshot = self.model.workflow.to_json()
        if not self.model.workflow.nodes:
            self.show_message("Nothing to run: the canvas is empty")
            return
        if not self._endpoints_approved():
            return
        if self._refused(targets or None, label):
            return  # nothing queued: seed controls stay unapplied
        if targets:  # the engine runs subgraphs flattened: name their inner nodes
            targets = flat_ids(self.model.workflow, targets)
            needed = GraphIndex(self.model.workflow.flattened()).upstream(targets)
            self.log_panel.append("info", f"{label}: {len(needed)} node(s) needed")
        self.runs.queue_run(snapshot, targets or None, label,
                            approved_endpoints=tuple(sorted(self.approved_endpoints)))
        self._set_run_label()
        # Only now that the run is queued: seeds step on for the next run (ComfyUI's "control
        # after generate"); the queued snapshot keeps the values it was queued with.
        if self.randomize_seeds and self.editor.apply_seed_controls(random.Random()):
            self.show_message("Queued; seeds with a control (increment, decrement, randomize) "
                              "changed for the next run")

    def _refused(self, targets: list[str] | None, label: str) -> bool:
        """Validate what the run needs, as the engine will (engine.planner.check_runnable); when
        something would stop it, show every problem on its node and in the log, and refuse."""
        from engine.planner import check_runnable

        try:
            flat = self.model.workflow.flattened()
            problems = check_runnable(flat, self.registry, flat_ids(self.model.workflow, targets)
                                      if targets else None)
        except WorkflowError as exc:
            problems = list(exc.problems)
        if not problems:
            return False
        for problem in problems:
            where = f"{problem.node_id}" + (f".{problem.input}" if problem.input else "")
            self.log_panel.append("error", f"{label} refused: {where + ': ' if problem.node_id else ''}"
                                           f"{problem.message}")
            if problem.node_id and problem.node_id not in self.model.workflow.nodes:
                # inside a subgraph: marked on the subgraph node, named in full in the log
                problem = dataclasses.replace(problem, node_id=owner_of(problem.node_id))
            if problem.node_id in self.model.workflow.nodes:
                state = NodeRunState(state="failed", message=(f"{problem.input}: " if problem.input else "")
                                     + problem.message)
                self.scene.set_run_state(problem.node_id, state)
                if problem.node_id == self.inspector.node_id:
                    self.inspector.set_run_state(state)
        self.runs.last_status = "invalid"  # what the engine calls a run refused before it ran
        self._set_run_label()
        first = problems[0]
        self.show_message(f"Not run: {len(problems)} problem{'s' if len(problems) != 1 else ''} — "
                          f"{first.node_id + ': ' if first.node_id else ''}{first.message} (see the Log)")
        return True

    def _endpoints_approved(self) -> bool:
        """Addresses the graph names that are not among the user's providers are contacted only
        once the user says so (for this session); they never get an API key."""
        from engine.providers import endpoints_needing_approval

        urls = endpoints_needing_approval(self.model.workflow, self.settings.to_json(),
                                          self.approved_endpoints)
        if not urls:
            return True
        listed = "\n".join(f"  {url}" for url in urls)
        if self.dialogs.confirm("Send your prompt to an unknown address?",
                                f"This workflow sends text to:\n{listed}\n\nThese are not among "
                                "your providers (Settings), so no API key is sent. Allow them for "
                                "this session?"):
            self.approved_endpoints.update(urls)
            return True
        self.show_message("Run cancelled: the workflow names an address you did not allow")
        return False

    def stop(self) -> None:
        self.runs.stop()

    def _set_run_label(self) -> None:
        waiting = len(self.runs.queue)
        if self.runs.busy:
            self.run_display.show_progress()
            if "stop" in self.actions:
                self.actions["stop"].setEnabled(True)
            return
        text = self.runs.last_status or "idle"
        if waiting:
            text += f" · {waiting} queued"
        self.run_label.setText(text)
        for name in ("stop",):
            if name in self.actions:
                self.actions[name].setEnabled(self.runs.busy)

    def _on_run_finished(self, run_id: str, status: str, error: str) -> None:
        self._set_run_label()
        if status == "crashed":
            box = QMessageBox(QMessageBox.Critical, "Worker crashed",
                              f"The worker process stopped unexpectedly:\n{error}\n\nYour graph is "
                              "unchanged. The next run starts a fresh worker.", QMessageBox.Ok, self)
            box.setModal(False)
            self._crash_box = box
            box.open()  # non-blocking: the canvas stays usable
        first_line = error.strip().splitlines()[0] if error.strip() else ""
        self.show_message(f"Run {status}" + (f": {first_line}" if first_line and status != "done" else ""))

    # ---- settings and closing -----------------------------------------------------------------
    def edit_settings(self) -> None:
        dialog = SettingsDialog(self.settings, self.dialogs, self)
        if dialog.exec():
            self.apply_settings(dialog.result_settings())
            self.show_message("Settings saved and applied")

    def apply_settings(self, settings: Settings) -> None:
        """Use new settings now: the running worker takes model roots, cache budgets and the
        device without a restart (node packs load there too; the palette lists them on the
        next start)."""
        self.settings = settings
        self.runs.output_dir = settings.output_dir
        self.runs.update_settings(settings)
        if self.persist_settings:
            save_settings(settings)

    def new_from_template(self) -> None:
        """File ▸ New from Template: choose an example or one of the user's templates in the
        browser; it opens as an unsaved copy."""
        from app.templates import list_templates

        entries = list_templates()
        path = self.dialogs.choose_template(entries, self.registry)
        if path:
            entry = next((e for e in entries if str(e.path) == str(path)), None)
            self.files.open_copy(path, entry.title if entry else None)

    def save_as_template(self) -> None:
        """File ▸ Save as Template: the graph (and a thumbnail) into the user's templates folder."""
        from app.templates import save_template, template_name, user_templates_dir

        current = self.model.workflow.meta.get("title") or Path(self.files.display_name()).stem
        text = self.dialogs.text("Save as template", "Template name:", str(current))
        name = template_name(text or "")
        if not name:
            return
        if (user_templates_dir() / f"{name}.json").exists() and not self.dialogs.confirm(
                "Replace template?", f"A template called {name} exists. Replace it?"):
            return
        self._store_view()
        try:
            path = save_template(self.scene, name)
        except OSError as exc:
            self.dialogs.error("Cannot save the template", str(exc))
            return
        self.show_message(f"Saved the template {name} ({path.parent}); File ▸ New from Template lists it")

    def export_canvas_image(self) -> None:
        path = self.dialogs.save_image_path(str(Path(self.files.current_path or "canvas").with_suffix(".png")))
        if path:
            from app.export import render_scene_png
            render_scene_png(self.scene, path)
            self.show_message(f"Exported {Path(path).name}")

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802
        if not self.files.maybe_save():
            event.ignore()
            return
        self.autosaver.finish()
        self.runs.close()
        self.preview.clear()
        event.accept()
