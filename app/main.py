"""Starting the studio: `run_studio(argv)` is what `python main.py` (no subcommand) calls.

Order of what opens: a workflow named on the command line; else, if a previous session crashed
with unsaved work, the offer to restore it; else workflows/text_to_video.json (the default demo
graph) when it exists; else an empty canvas.
"""

from __future__ import annotations

import argparse
import sys
import time

from PySide6.QtCore import QTimer
from PySide6.QtGui import QPixmapCache
from PySide6.QtWidgets import QApplication

from engine import bundle


def create_app(argv: list[str] | None = None) -> QApplication:
    """The QApplication with the studio theme and the pixmap cache STYLE.md measured (256 MB)."""
    from app import theme

    app = QApplication.instance() or QApplication(list(argv or ["reelgraph"]))
    app.setApplicationName("Reelgraph")
    app.setOrganizationName("Reelgraph")
    QPixmapCache.setCacheLimit(262144)  # KB: item caching thrashes with Qt's 10 MB default
    theme.apply_theme(app)
    app.setFont(theme.body_font())
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
    if default.exists() and window.files.open(str(default)):
        return "default"
    window.load_workflow(Workflow(), None)
    return "empty"


def run_studio(argv: list[str] | None = None) -> int:
    """Open the studio window; returns the process exit code when it closes."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="reelgraph", description="Reelgraph studio")
    parser.add_argument("workflow", nargs="?", help="workflow file to open")
    parser.add_argument("--no-worker-prestart", action="store_true",
                        help="start the worker process on the first run instead of at launch")
    args = parser.parse_args(argv)

    app = create_app(["reelgraph"])
    from engine.config import load_settings
    from engine.registry import default_registry
    from app.main_window import MainWindow
    from app.studio_settings import StudioPrefs

    settings = load_settings()
    registry = default_registry(settings.node_packs)
    window = MainWindow(registry, settings, StudioPrefs.load())
    for error in registry.pack_errors:
        window.log_panel.append("warning", f"node pack: {error}")
    window.show()
    open_initial_document(window, args.workflow)
    if not args.no_worker_prestart:
        QTimer.singleShot(500, window.runs.prestart)
    return app.exec()
