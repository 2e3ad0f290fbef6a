"""Mouse wheel over a value widget scrolls the panel, not the value, unless the widget has focus.

Qt's combo boxes, spin boxes and sliders change their value on a wheel event even when the pointer
merely passes over them while the user scrolls the inspector (it silently set a node to bypass,
then mute). One application-wide event filter fixes that for every panel, dialog and the canvas's
inline editors:

- such a widget gets Qt.StrongFocus when it is polished, so a wheel never gives it focus;
- a wheel event reaching it while it does not have focus is ignored *and* filtered: the widget's
  handler does not run, and Qt passes the event on to the parent chain, where the scroll area
  (or the canvas) scrolls;
- once the user clicks or tabs into the widget, the wheel changes its value as usual.
"""

from __future__ import annotations

from PySide6.QtCore import QEvent, QObject, Qt
from PySide6.QtWidgets import (QAbstractSlider, QAbstractSpinBox, QApplication, QComboBox, QScrollBar,
                               QWidget)

GUARDED = (QComboBox, QAbstractSpinBox, QAbstractSlider)  # value widgets...


def _guarded(obj: QObject) -> bool:
    # ...but not scroll bars: a scroll area scrolls by handing the wheel to its scroll bar
    return isinstance(obj, GUARDED) and not isinstance(obj, QScrollBar)


class WheelGuard(QObject):
    """The filter; `install()` puts one on the application."""

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802
        kind = event.type()
        if kind == QEvent.Polish and _guarded(obj):
            obj.setFocusPolicy(Qt.StrongFocus)
        elif kind == QEvent.Wheel and _guarded(obj) and not _focused(obj):
            event.ignore()  # not accepted: QApplication hands it to the parent next
            return True  # and the widget itself never sees it
        return False


def _focused(widget: QWidget) -> bool:
    """The widget or its inner editor (a combo box's or spin box's line edit) has focus."""
    focus = QApplication.focusWidget()
    return widget.hasFocus() or (focus is not None and widget.isAncestorOf(focus))


def install(app: QApplication | None = None) -> WheelGuard | None:
    """Install the guard on the application once (later calls return the same one)."""
    app = app or QApplication.instance()
    if app is None:
        return None
    guard = getattr(app, "_reelgraph_wheel_guard", None)
    if guard is None:
        guard = WheelGuard(app)
        app.installEventFilter(guard)
        app._reelgraph_wheel_guard = guard  # noqa: SLF001 - one per application
    return guard
