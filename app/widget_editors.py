"""Interaction with painted inline widgets: drag numbers, click arrows, toggle, pick from menus,
open a real text editor or a file dialog only while editing.

Every change is an undo command through GraphEditor.set_input; a number drag is one command per
gesture (merge key). The controller needs an `EditorHost` (the view) for anything that shows a Qt
widget: inline text editors, popup menus, file dialogs, and the model-folder listing.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Protocol

from PySide6.QtCore import QPointF, QRectF, Qt

from engine.schema import InputSpec
from engine.sockets import SocketType
from app.widget_paint import ARROW_W, DICE_W, WidgetSlot, format_value

PX_PER_STEP = 6.0  # scene units of horizontal drag per step
DRAG_THRESHOLD = 3.0


class EditorHost(Protocol):
    def show_text_editor(self, scene_rect: QRectF, text: str, multiline: bool,
                         on_commit: Callable[[str], None]) -> None: ...
    def popup_choices(self, choices: list[str], current: Any, scene_pos: QPointF,
                      on_choose: Callable[[str], None], empty_hint: str = "") -> None: ...
    def pick_media_file(self, current: str) -> str | None: ...
    def model_names(self, kind: str) -> list[str]: ...
    def show_status(self, text: str) -> None: ...


def number_step(spec: InputSpec, fine: bool = False) -> float:
    """Step per drag increment: the spec's step, else 1 for INT, else a hundredth of the range."""
    if spec.step:
        step = float(spec.step)
    elif spec.type == SocketType.INT:
        step = 1.0
    elif spec.min is not None and spec.max is not None and 0 < spec.max - spec.min <= 1e6:
        step = 10 ** math.floor(math.log10((spec.max - spec.min) / 100))
    else:
        step = 0.01
    if fine and spec.type == SocketType.FLOAT:
        step /= 10
    return step


def clamp_number(spec: InputSpec, value: float) -> int | float:
    if spec.min is not None:
        value = max(float(spec.min), value)
    if spec.max is not None:
        value = min(float(spec.max), value)
    if spec.type == SocketType.INT:
        return int(round(value))
    step = spec.step or 0.0
    if step:  # snap to the step grid so drags do not accumulate 0.30000000000000004
        decimals = max(0, -int(math.floor(math.log10(step)))) + 1
        return round(value, decimals)
    return round(value, 6)


def parse_number(spec: InputSpec, text: str) -> int | float | None:
    text = text.strip().replace(",", ".")
    try:
        value = float(text)
    except ValueError:
        return None
    if not math.isfinite(value):
        return None
    return clamp_number(spec, value)


class WidgetController:
    def __init__(self, editor, host: EditorHost):
        self.editor = editor
        self.host = host
        self.active_item = None
        self._slot: WidgetSlot | None = None
        self._start_x = 0.0
        self._start_value: Any = None
        self._moved = False
        self._gesture: object | None = None

    def _value(self, item, slot: WidgetSlot) -> Any:
        return item.model.input_value(item.node_id, slot.name)

    # ---- mouse gesture --------------------------------------------------------------------------
    def press(self, item, slot: WidgetSlot, event) -> None:
        if item.model.link_into(item.node_id, slot.name) is not None or slot.spec is None:
            return  # a linked input's value is ignored by the run: nothing to edit
        local = event.pos()
        kind = slot.kind
        if kind in ("number", "seed"):
            if kind == "seed" and local.x() >= slot.rect.right() - DICE_W:
                mode = self.editor.cycle_seed_mode(item.node_id, slot.name)
                self.host.show_status(f"{slot.name} after each run: {mode}")
                return
            self.active_item, self._slot = item, slot
            self._start_x = event.scenePos().x()
            self._start_value = self._value(item, slot)
            self._moved = False
            self._gesture = object()
        elif kind == "toggle":
            self.editor.set_input(item.node_id, slot.name, not bool(self._value(item, slot)))
        elif kind == "choice":
            self._popup(item, slot, list(slot.spec.choices or ()), event.scenePos())
        elif kind == "model":
            names = self.host.model_names(slot.spec.file_kind or "")
            self._popup(item, slot, names, event.scenePos(),
                        empty_hint=f"no models in the {slot.spec.file_kind} folders — "
                                   "add a model root in Settings")
        elif kind == "file":
            path = self.host.pick_media_file(str(self._value(item, slot) or ""))
            if path:
                self.editor.set_input(item.node_id, slot.name, path)
        else:
            self.open_editor(item, slot)

    def move(self, event) -> None:
        item, slot = self.active_item, self._slot
        if item is None or slot is None or not isinstance(self._start_value, (int, float)):
            return
        dx = event.scenePos().x() - self._start_x
        if not self._moved and abs(dx) < DRAG_THRESHOLD:
            return
        self._moved = True
        fine = bool(event.modifiers() & Qt.ShiftModifier)
        step = number_step(slot.spec, fine)
        steps = int(dx / PX_PER_STEP)
        value = clamp_number(slot.spec, float(self._start_value) + steps * step)
        if value != self._value(item, slot):
            self.editor.set_input(item.node_id, slot.name, value, merge_key=self._gesture)

    def release(self, event) -> None:
        item, slot = self.active_item, self._slot
        self.active_item, self._slot = None, None
        if item is None or slot is None or self._moved:
            return
        x = item.mapFromScene(event.scenePos()).x()
        right = slot.rect.right() - (DICE_W if slot.kind == "seed" else 0)
        value = self._value(item, slot)
        if isinstance(value, (int, float)) and x <= slot.rect.left() + ARROW_W:
            self.editor.set_input(item.node_id, slot.name,
                                  clamp_number(slot.spec, float(value) - number_step(slot.spec)))
        elif isinstance(value, (int, float)) and x >= right - ARROW_W:
            self.editor.set_input(item.node_id, slot.name,
                                  clamp_number(slot.spec, float(value) + number_step(slot.spec)))
        else:
            self.open_editor(item, slot)

    # ---- editors ------------------------------------------------------------------------------
    def open_editor(self, item, slot: WidgetSlot) -> None:
        """A real text editor over the widget (numbers, text, multiline)."""
        if slot.spec is None or item.model.link_into(item.node_id, slot.name) is not None:
            return
        if slot.kind in ("choice", "model", "file", "toggle"):
            return
        value = self._value(item, slot)
        scene_rect = item.mapRectToScene(slot.rect)
        node_id, name, spec = item.node_id, slot.name, slot.spec
        if slot.kind in ("number", "seed"):
            def commit_number(text: str) -> None:
                parsed = parse_number(spec, text)
                if parsed is None:
                    self.host.show_status(f"{name}: {text!r} is not a number")
                else:
                    self.editor.set_input(node_id, name, parsed)
            self.host.show_text_editor(scene_rect, format_value(spec, value), False, commit_number)
        else:
            self.host.show_text_editor(scene_rect, "" if value is None else str(value),
                                       slot.kind == "multiline",
                                       lambda text: self.editor.set_input(node_id, name, text))

    def _popup(self, item, slot: WidgetSlot, choices: list[str], scene_pos: QPointF,
               empty_hint: str = "") -> None:
        node_id, name = item.node_id, slot.name
        self.host.popup_choices(choices, self._value(item, slot), scene_pos,
                                lambda choice: self.editor.set_input(node_id, name, choice), empty_hint)
