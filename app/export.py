"""Rendering a workflow's canvas to a PNG without a window (`main.py export-image`, File menu).

The scene is built exactly as the studio builds it and rendered with QGraphicsScene.render at
zoom 1 (capped at MAX_SIDE pixels per side, scaled down beyond), on the canvas background.
Works without a display: when no QApplication exists one is created on the offscreen platform.
"""

from __future__ import annotations

import os
from pathlib import Path

from PySide6.QtCore import QRectF, Qt
from PySide6.QtGui import QGuiApplication, QImage, QPainter, QUndoStack

MAX_SIDE = 8000
MARGIN = 40.0


def _ensure_app():
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance()
    if app is None:
        if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
            os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
        app = QApplication(["reelgraph-export"])
    return app


def render_scene_png(scene, out_png: str | Path, scale: float = 1.0) -> QImage:
    """Render every node and group of a GraphScene into `out_png`; returns the image."""
    image = render_scene_image(scene, scale)
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not image.save(str(out), "PNG"):
        raise OSError(f"could not write {out}")
    return image


def render_scene_image(scene, scale: float = 1.0, max_side: int = MAX_SIDE) -> QImage:
    """Every node and group of a GraphScene as an image (at most `max_side` pixels per side)."""
    from app import theme

    rect = scene.nodes_bounding_rect()
    if rect.isNull():
        rect = QRectF(0, 0, 400, 300)
    rect = rect.adjusted(-MARGIN, -MARGIN, MARGIN, MARGIN)
    scale = min(scale, max_side / max(rect.width(), 1), max_side / max(rect.height(), 1))
    image = QImage(max(1, int(rect.width() * scale)), max(1, int(rect.height() * scale)),
                   QImage.Format_ARGB32_Premultiplied)
    image.fill(theme.CANVAS_BG)
    painter = QPainter(image)
    painter.setRenderHints(QPainter.Antialiasing | QPainter.TextAntialiasing | QPainter.SmoothPixmapTransform)
    scene.clearSelection()
    scene.render(painter, QRectF(0, 0, image.width(), image.height()), rect, Qt.KeepAspectRatio)
    painter.end()
    return image


def export_image(workflow_path: str | Path, out_png: str | Path) -> None:
    """Render the canvas of a workflow file to a PNG. Raises WorkflowError for a bad file and
    OSError when the PNG cannot be written."""
    _ensure_app()
    from engine.config import load_settings
    from engine.document import load_workflow
    from engine.registry import default_registry
    from app import theme
    from app.graph_model import GraphModel
    from app.scene import GraphScene

    settings = load_settings()
    registry = default_registry(settings.node_packs)
    workflow = load_workflow(workflow_path, allow_newer=True)
    QGuiApplication.instance().setFont(theme.body_font())
    scene = GraphScene(GraphModel(registry, workflow), QUndoStack())
    render_scene_png(scene, out_png)
