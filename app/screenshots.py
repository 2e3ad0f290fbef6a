"""Screenshots of the real studio for docs/screenshots/ (run it under a display, e.g. Xvfb):

    xvfb-run -s "-screen 0 1920x1200x24" .venv/bin/python -m app.screenshots [--workflow W]

Opens the studio exactly as `python main.py` does, runs the workflow in the worker, selects the
output node so the preview dock shows its result, and saves the window; then the node palette
filtered by a dropped wire, and a wire refused with its reason. Outputs go to a temporary folder.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from PySide6.QtCore import QPointF
from PySide6.QtWidgets import QApplication

from engine import bundle


def _wait(app: QApplication, predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        app.processEvents()
        time.sleep(0.02)
    return True


def _settle(app: QApplication, seconds: float = 0.4) -> None:
    _wait(app, lambda: False, seconds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Take screenshots of the studio")
    default = bundle.default_workflow()
    parser.add_argument("--workflow", default=str(default if default.exists() else
                                                  bundle.workflows_dir() / "gradient_blend.json"))
    # docs/ exists in a checkout only (the wheel does not ship it): else write to ./screenshots.
    docs = bundle.data_root() / "docs"
    parser.add_argument("--out", default=str(docs / "screenshots" if docs.is_dir() else "screenshots"))
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--name", default="studio", help="file name of the main screenshot")
    parser.add_argument("--tidy", action="store_true",
                        help="Edit > Tidy Up before running (for files whose nodes overlap)")
    args = parser.parse_args(argv)

    from engine.config import load_settings
    from engine.registry import default_registry
    from app.autosave import RecoveryStore
    from app.main import create_app
    from app.main_window import MainWindow
    from app.studio_settings import StudioPrefs

    app = create_app(["reelgraph"])
    settings = load_settings()
    tmp = Path(tempfile.mkdtemp(prefix="reelgraph-shots-"))
    settings.output_dir = str(tmp / "output")
    window = MainWindow(default_registry(settings.node_packs), settings, StudioPrefs(path=None),
                        RecoveryStore(tmp / "recovery"), persist_settings=False)
    window.resize(1680, 1000)
    window.show()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not window.files.open(args.workflow):
        print(f"cannot open {args.workflow}", file=sys.stderr)
        return 1
    _settle(app)
    if args.tidy:
        window.view.tidy_up()
        window.view.frame_all()
        _settle(app)

    window.run()
    if not _wait(app, lambda: not window.runs.busy, args.timeout):
        print("the run did not finish in time", file=sys.stderr)
        return 1
    print(f"run {window.runs.last_status}")
    with_files = [nid for nid in window.model.workflow.nodes if window.runs.last_files.get(nid)]
    if with_files:
        window.scene.clearSelection()
        window.scene.nodes[with_files[-1]].setSelected(True)
    _settle(app, 0.3)
    window.view.frame_all()  # thumbnails made output nodes taller
    _settle(app, 0.8)
    window.grab().save(str(out / f"{args.name}.png"))

    # The palette offered for a wire dropped on empty canvas.
    view, scene = window.view, window.scene
    source = next((item for item in scene.nodes.values() if item.output_slots), None)
    if source is not None:
        slot = source.output_slots[0]
        start = source.socket_scene_pos(slot.name, True)
        view.open_palette_for_wire(start + QPointF(180, 30), source.node_id, slot)
        _settle(app)
        view.grab().save(str(out / "palette-for-wire.png"))
        view.palette.hide()

        # A wire refused with its reason.
        from app.link_drag import LinkDrag
        from app.socket_item import check_link
        target = next(((item, s) for item in scene.nodes.values() if item is not source
                       for s in item.input_slots if not s.widget and not check_link(slot, s)[0]), None)
        if target is not None:
            item, s = target
            drag = LinkDrag(view, source.node_id, slot)
            drag.move(item.socket_scene_pos(s.name, False))
            _settle(app)
            view.grab().save(str(out / "link-refused.png"))
            drag.cancel()
    return _close_clean(window, out)


def _close_clean(window, out: Path) -> int:
    """Close without the unsaved-changes question (the screenshots edited the graph)."""
    window.files._force_dirty = False
    window.undo_stack.setClean()
    window.close()
    print(f"screenshots in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
