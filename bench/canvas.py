"""Canvas benchmark: time to open a 500-node workflow and to repaint the full view.

    .venv/bin/python bench/canvas.py [--nodes 500] [--repeats 5]

Prints medians. Targets (from the issue): open < 2 s, full repaint < 50 ms. "Open" is the studio's
whole path: parse the file, build every item, frame all, and paint the first frame. Repaints are
measured at three zooms: everything framed (level-of-detail rectangles), 0.5 (full detail, about a
hundred nodes visible) and 1.0; "first" is the repaint right after a zoom change (item caches
rebuilt), "cached" a repaint with nothing changed (what panning over a still graph costs).
Runs offscreen; never part of the test suite.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Node types that exist in the built-in registry, in a pipeline-like chain with links.
CHAIN = [("ImageGradient", "image", None), ("ImageBlend", "image", "image_a"),
         ("ImageBlend", "image", "image_a"), ("SaveImage", None, "images")]


def make_workflow(n_nodes: int):
    from engine.document import Workflow

    wf = Workflow()
    prev = None
    for i in range(n_nodes):
        type_name, out, inp = CHAIN[i % len(CHAIN)]
        node = wf.add_node(type_name, node_id=f"n{i}", pos=((i % 40) * 300.0, (i // 40) * 360.0))
        if type_name == "ImageGradient":
            node.inputs.update(width=256, height=256, color_a="#101820", color_b="#f2aa4c",
                               direction="radial")
        if prev is not None and inp is not None:
            wf.connect(prev[0], prev[1], node.id, inp)
        prev = (node.id, out) if out else None
    return wf


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    from app.main import create_app
    from app.main_window import MainWindow
    from app.autosave import RecoveryStore
    from app.studio_settings import StudioPrefs
    from engine.config import Settings
    from engine.registry import default_registry

    app = create_app()
    registry = default_registry()
    tmp = Path(tempfile.mkdtemp(prefix="reelgraph-bench-"))
    path = tmp / "big.json"
    make_workflow(args.nodes).save(path)

    window = MainWindow(registry, Settings(output_dir=str(tmp / "out")), StudioPrefs(path=None),
                        RecoveryStore(tmp / "recovery"), persist_settings=False)
    window.resize(1600, 1000)
    window.show()
    app.processEvents()
    view = window.view

    open_times = []
    for _ in range(args.repeats):
        window.files.set_document(make_workflow(0), None)
        app.processEvents()
        t0 = time.perf_counter()
        window.files.open(str(path))
        view.frame_all()
        view.viewport().repaint()
        app.processEvents()
        open_times.append(time.perf_counter() - t0)
    n_items = len(window.scene.nodes)
    n_links = len(window.scene.links)

    def repaint_times(zoom: float | None) -> tuple[float, float]:
        firsts, cached = [], []
        for _ in range(args.repeats):
            view.set_zoom(0.999 * (zoom or 1.0)) if zoom else view.frame_all()
            app.processEvents()
            if zoom:
                view.set_zoom(zoom)  # a zoom change invalidates the device-coordinate caches
            else:
                view.frame_all()
            t0 = time.perf_counter()
            view.viewport().repaint()
            firsts.append(time.perf_counter() - t0)
            for _ in range(3):
                view.viewport().update()
                t0 = time.perf_counter()
                view.viewport().repaint()
                cached.append(time.perf_counter() - t0)
        return statistics.median(firsts), statistics.median(cached)

    print(f"canvas benchmark: {n_items} nodes, {n_links} links, viewport "
          f"{view.viewport().width()}x{view.viewport().height()}, Qt platform "
          f"{app.platformName()}, {args.repeats} repeats")
    print(f"open 500-node workflow (parse + build + frame + first paint): "
          f"median {statistics.median(open_times) * 1000:.0f} ms  (target < 2000 ms)")
    for label, zoom in (("frame all", None), ("zoom 0.5", 0.5), ("zoom 1.0", 1.0)):
        view.centerOn(window.scene.nodes_bounding_rect().center())
        first, cached = repaint_times(zoom)
        visible = sum(1 for item in window.scene.nodes.values()
                      if view.visible_scene_rect().intersects(item.sceneBoundingRect()))
        print(f"full repaint, {label:9s} (zoom {view.zoom():.2f}, {visible:3d} nodes visible): "
              f"first {first * 1000:6.1f} ms, cached {cached * 1000:6.1f} ms  (target < 50 ms)")
    window.files._force_dirty = False
    window.undo_stack.setClean()
    window.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
