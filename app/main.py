"""Starting the studio: `run_studio()` is what `python main.py` (no subcommand) calls.

Order of what opens: a workflow named on the command line; else, if a previous session crashed
with unsaved work, the offer to restore it; else workflows/text_to_video.json (the default demo
graph) when it exists; else an empty canvas.
"""

from __future__ import annotations

import time

from PySide6.QtCore import QTimer
from PySide6.QtGui import QPixmapCache
from PySide6.QtWidgets import QApplication

from engine import bundle


def create_app(argv: list[str] | None = None) -> QApplication:
    """The QApplication with the studio theme and the pixmap cache STYLE.md measured (256 MB)."""
    from app import theme, wheel_guard

    app = QApplication.instance() or QApplication(list(argv or ["reelgraph"]))
    app.setApplicationName("Reelgraph")
    app.setOrganizationName("Reelgraph")
    QPixmapCache.setCacheLimit(262144)  # KB: item caching thrashes with Qt's 10 MB default
    theme.apply_theme(app)
    app.setFont(theme.body_font())
    wheel_guard.install(app)  # the wheel scrolls panels, not the value under the pointer
    return app


def open_initial_document(window, workflow_path: str | None) -> str:
    """Load what the studio should show first; returns a short description of what was loaded."""
    from engine.document import Workflow, workflow_from_json
    from engine.errors import WorkflowError

    if workflow_path:
        return "file" if window.files.open(workflow_path) else "empty"
    orphans = window.recovery.orphans()
    if orphans:
        path, record = orphans[0]
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(record.get("saved_at", 0)))
        source = record.get("source") or "an untitled workflow"
        restore = window.dialogs.confirm(
            "Restore unsaved work?",
            f"Reelgraph did not close normally. Unsaved changes to {source} from {when} were "
            "recovered.\n\nRestore them? (Your file on disk has not been changed.)")
        window.recovery.remove([p for p, _ in orphans])
        if restore:
            try:
                workflow = workflow_from_json(record["workflow"], allow_newer=True)
                window.load_workflow(workflow, record.get("source"), dirty=True)
                return "recovered"
            except WorkflowError as exc:
                window.dialogs.error("Cannot restore", str(exc))
    default = bundle.default_workflow()
    if default.exists() and window.files.open_copy(str(default)):  # a copy: Save never overwrites it
        return "default"
    window.load_workflow(Workflow(), None)
    return "empty"


def run_studio(workflow: str | None = None, prestart_worker: bool = True) -> int:
    """Open the studio window (on `workflow` when given); returns the process exit code when it
    closes. Its command line is parsed by main.py with every other command.

    First, without touching Qt, check that Qt's display plugin finds its system libraries
    (app.qt_preflight: installs them when root, else names the one command); 3 when it cannot."""
    from app import qt_preflight

    code = qt_preflight.ensure()
    if code:
        return code
    app = create_app(["reelgraph"])
    from engine.config import load_settings
    from engine.registry import default_registry
    from app.main_window import MainWindow
    from app.studio_settings import StudioPrefs

    problems: list[str] = []
    settings = load_settings(problems=problems)
    registry = default_registry(settings.node_packs)
    window = MainWindow(registry, settings, StudioPrefs.load())
    for error in registry.pack_errors:
        window.log_panel.append("warning", f"node pack: {error}")
    for problem in problems:
        window.log_panel.append("warning", problem)
    window.show()
    open_initial_document(window, workflow)
    if prestart_worker:
        QTimer.singleShot(500, window.runs.prestart)
    return app.exec()
