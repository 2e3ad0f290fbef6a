"""The studio's look: a dark theme in the spirit of ComfyUI and Blender's node editor.

One place for every colour, size and font the canvas paints with, so items never hard-code them.
Socket colours follow ComfyUI's conventions where a type exists there (LATENT pink, CONDITIONING
orange, VAE red, IMAGE blue) so artists read a graph at a glance. Category colours come from a
fixed table with a stable hash fallback: a node pack's new category always gets the same colour.
"""

from __future__ import annotations

import zlib

from PySide6.QtGui import QColor, QFont, QPalette
from PySide6.QtWidgets import QApplication

# ---- canvas -----------------------------------------------------------------------------------
CANVAS_BG = QColor("#1b1c1f")
GRID_MINOR = QColor("#23252a")
GRID_MAJOR = QColor("#2c2f35")
GRID_STEP = 20  # scene units between minor lines; every 5th is major

NODE_BG = QColor("#2a2c31")
NODE_BG_PLACEHOLDER = QColor("#2a2a2a")
NODE_BORDER = QColor("#121316")
NODE_SELECTED = QColor("#f0f0f0")
NODE_TEXT = QColor("#dcdde0")
NODE_TEXT_DIM = QColor("#8d9098")
NODE_TITLE_TEXT = QColor("#f4f4f6")
WIDGET_BG = QColor("#1f2024")
WIDGET_BG_HOVER = QColor("#26282d")
WIDGET_FILL = QColor("#3b4a66")
WIDGET_TEXT = QColor("#d5d7db")
WIDGET_LINKED = QColor("#5c5f66")
BYPASS_TINT = QColor(160, 60, 200, 90)
MUTE_TINT = QColor(20, 20, 22, 150)
GROUP_DEFAULT = QColor("#3f5f7f")
LINK_DRAG_OK = QColor("#e6e6e6")
LINK_DRAG_BAD = QColor("#e05252")

STATE_COLORS = {
    "queued": QColor("#7a7f8a"),
    "running": QColor("#3fa7ff"),
    "cached": QColor("#8bc34a"),
    "not_needed": QColor("#5f7f4a"),  # a dimmer "cached": its consumers were cached
    "done": QColor("#4caf50"),
    "failed": QColor("#ef5350"),
    "skipped": QColor("#5c5f66"),
    "interrupted": QColor("#ffb300"),
}
STALE_COLOR = QColor("#e0a040")  # inputs changed since the node last ran

# ---- geometry (scene units) -------------------------------------------------------------------
NODE_WIDTH = 240
TITLE_H = 26
ROW_H = 22
WIDGET_H = 20
MULTILINE_ROWS = 4
PAD = 8
SOCKET_R = 5.5
CORNER = 6
THUMB_H = 140
LOD_DETAIL = 0.4  # below this zoom nodes paint as plain rectangles (STYLE.md: measured)

SOCKET_COLORS = {
    "TEXT": "#9ccc65", "STRING": "#9ccc65", "CONDITIONING": "#ffa931", "LATENT": "#ff9cf9",
    "IMAGE": "#64b5f6", "VIDEO": "#4dd0e1", "MASK": "#81c784", "DIT": "#b39ddb", "VAE": "#ff6e6e",
    "TEXT_ENCODER": "#ffd500", "INTERPOLATOR": "#f48fb1", "LLM": "#ce93d8", "INT": "#29b6f6",
    "FLOAT": "#26a69a", "BOOL": "#90a4ae", "TENSOR": "#a1887f", "ANY": "#bdbdbd",
    "CLIP_VISION": "#a8dadc", "CLIP_VISION_OUTPUT": "#ad7452",
}
# Sockets that carry a loaded model: drawn as diamonds (data sockets are circles), a shape cue
# that does not rely on colour alone.
MODEL_SOCKETS = frozenset({"DIT", "VAE", "TEXT_ENCODER", "INTERPOLATOR", "LLM", "CLIP_VISION"})

CATEGORY_COLORS = {
    "loaders": "#6a4c93", "models": "#6a4c93", "text": "#3d7a4a", "conditioning": "#8a5a1e",
    "latent": "#8e3f7a", "sampling": "#3a5f9e", "vae": "#9a3b3b", "video": "#2f7f86",
    "image": "#2f5f8f", "io": "#555c66", "output": "#4f6b2f", "interpolation": "#86507a",
    "utils": "#4a4f58", "basic": "#4a4f58", "debug": "#6b4a3a", "primitives": "#4a5a4f",
}
_FALLBACK_HUES = (20, 45, 90, 160, 200, 230, 260, 300, 330)


def socket_color(type_name: str) -> QColor:
    return QColor(SOCKET_COLORS.get(type_name, "#bdbdbd"))


def category_color(category: str) -> QColor:
    """Title colour of a category: the table entry of its first path part, or a stable hue."""
    key = (category or "").split("/")[0].strip().lower()
    if key in CATEGORY_COLORS:
        return QColor(CATEGORY_COLORS[key])
    hue = _FALLBACK_HUES[zlib.crc32(key.encode()) % len(_FALLBACK_HUES)]
    return QColor.fromHsv(hue, 120, 130)


def title_font() -> QFont:
    font = QFont("DejaVu Sans")
    font.setPixelSize(13)
    font.setBold(True)
    return font


def body_font() -> QFont:
    font = QFont("DejaVu Sans")
    font.setPixelSize(11)
    return font


def small_font() -> QFont:
    font = QFont("DejaVu Sans")
    font.setPixelSize(10)
    return font


# ---- widgets (docks, menus) ---------------------------------------------------------------------
STYLESHEET = """
QMainWindow, QDialog { background: #202125; }
QDockWidget { color: #d0d2d6; }
QDockWidget::title { background: #26282c; padding: 4px 8px; border-bottom: 1px solid #151618; }
QMenuBar { background: #232428; color: #d0d2d6; }
QMenuBar::item:selected { background: #3a3d44; }
QMenu { background: #26282c; color: #d8d9dc; border: 1px solid #3a3d44; }
QMenu::item:selected { background: #3b5b8a; }
QMenu::separator { height: 1px; background: #3a3d44; margin: 3px 6px; }
QStatusBar { background: #232428; color: #a9acb2; }
QToolBar { background: #232428; border: none; spacing: 4px; }
QLineEdit, QPlainTextEdit, QSpinBox, QDoubleSpinBox, QComboBox, QListWidget, QTextEdit {
    background: #1b1c1f; color: #dcdde0; border: 1px solid #3a3d44; border-radius: 3px;
    selection-background-color: #3b5b8a; }
QListWidget::item { padding: 3px; }
QListWidget::item:selected { background: #3b5b8a; }
QPushButton, QToolButton { background: #33363c; color: #dcdde0; border: 1px solid #44474e;
    border-radius: 3px; padding: 3px 8px; }
QPushButton:hover, QToolButton:hover { background: #3d4047; }
QPushButton:checked, QToolButton:checked { background: #3b5b8a; }
QLabel { color: #c8cacf; }
QProgressBar { background: #1b1c1f; border: 1px solid #3a3d44; border-radius: 3px; color: #dcdde0;
    text-align: center; max-height: 14px; }
QProgressBar::chunk { background: #3fa7ff; }
QSlider::groove:horizontal { height: 4px; background: #3a3d44; }
QSlider::handle:horizontal { background: #9ab; width: 10px; margin: -4px 0; border-radius: 5px; }
QToolTip { background: #2a2c31; color: #e0e0e0; border: 1px solid #44474e; }
"""


def apply_theme(app: QApplication) -> None:
    """Dark Fusion palette plus the stylesheet above."""
    app.setStyle("Fusion")
    pal = QPalette()
    pal.setColor(QPalette.Window, QColor("#202125"))
    pal.setColor(QPalette.WindowText, QColor("#d0d2d6"))
    pal.setColor(QPalette.Base, QColor("#1b1c1f"))
    pal.setColor(QPalette.AlternateBase, QColor("#25272b"))
    pal.setColor(QPalette.Text, QColor("#dcdde0"))
    pal.setColor(QPalette.Button, QColor("#33363c"))
    pal.setColor(QPalette.ButtonText, QColor("#dcdde0"))
    pal.setColor(QPalette.Highlight, QColor("#3b5b8a"))
    pal.setColor(QPalette.HighlightedText, QColor("#ffffff"))
    pal.setColor(QPalette.ToolTipBase, QColor("#2a2c31"))
    pal.setColor(QPalette.ToolTipText, QColor("#e0e0e0"))
    pal.setColor(QPalette.PlaceholderText, QColor("#6d7078"))
    app.setPalette(pal)
    app.setStyleSheet(STYLESHEET)
