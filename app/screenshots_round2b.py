"""Screenshots of the issue-18 panels for docs/screenshots/ (run under a display, e.g. Xvfb):

    xvfb-run -a -s "-screen 0 1920x1200x24" .venv/bin/python -m app.screenshots_round2b

The default workflow mid-run (whole-clip latent preview on DiT Denoise and in the Preview dock,
step / elapsed / ETA in the status bar), after the run (caption on the Recaption node and in the
inspector, Queue & History and the gallery), "changed" marks after an edit, a Stop that lands
within one step, and a ComfyUI import with its report banner. Outputs go to a temporary folder.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from engine import bundle
from app.screenshots import _close_clean, _settle, _wait


def main() -> int:
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
    out = bundle.data_root() / "docs" / "screenshots"
    window.files.open(str(bundle.default_workflow()))
    _settle(app)
    window.runs.prestart()
    nodes = window.model.workflow.nodes
    denoise = next(nid for nid, n in nodes.items() if n.type == "DiTDenoise")
    recaption = next((nid for nid, n in nodes.items() if n.type == "Recaption"), None)

    # 1. mid-run: the latent clip plays, the status bar says step x/y, elapsed and ETA
    window.scene.clearSelection()
    window.scene.nodes[denoise].setSelected(True)
    window.run()
    _wait(app, lambda: len(window.run_display.frames.get(denoise, [])) > 0
          and window.runs.states[denoise].fraction > 0.3, 300)
    window.run_display.show_progress()
    _settle(app, 0.5)
    window.grab().save(str(out / "latent-preview-running.png"))
    _wait(app, lambda: not window.runs.busy, 300)

    # 2. after the run: caption on the node and in the inspector; history and gallery
    if recaption is not None:
        window.scene.clearSelection()
        window.scene.nodes[recaption].setSelected(True)
    window.history_dock.raise_()
    window.history.tabs.setCurrentIndex(2)
    _settle(app, 0.6)
    window.grab().save(str(out / "caption-and-gallery.png"))
    window.history.tabs.setCurrentIndex(1)
    _settle(app, 0.3)
    window.history_dock.grab().save(str(out / "history-panel.png"))

    # 3. an edit marks what will re-run
    seed_node = next(nid for nid, n in nodes.items() if "seed" in n.inputs and nid == denoise)
    window.editor.set_input(seed_node, "seed", int(nodes[seed_node].inputs["seed"]) + 1)
    window.scene.clearSelection()
    _settle(app, 0.4)
    window.view.grab().save(str(out / "stale-marks.png"))

    # 4. a ComfyUI workflow opens with its import report above the canvas
    comfy = bundle.data_root() / "tests" / "data" / "comfy" / "wan21_t2v_ui10.json"
    window.undo_stack.setClean()
    if comfy.exists() and window.files.open(str(comfy)):
        window.import_banner.details_button.setChecked(True)
        _settle(app, 0.6)
        window.grab().save(str(out / "comfy-import-banner.png"))
    return _close_clean(window, out)


if __name__ == "__main__":
    sys.exit(main())
