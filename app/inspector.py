"""The inspector dock: everything about the selected node — title, type, description, mode, every
input with a real Qt editor (or where its link comes from), outputs, and its last run state.

Edits go through GraphEditor (undoable, same commands as the canvas widgets). When the document
changes under it (undo, a canvas drag), values are re-synced in place without rebuilding the form,
so a field being typed in keeps its focus.
"""

from __future__ import annotations

from typing import Any, Callable

from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QHBoxLayout, QLabel,
                               QLineEdit, QPlainTextEdit, QPushButton, QScrollArea, QSpinBox,
                               QVBoxLayout, QWidget)

from engine.schema import InputSpec
from engine.sockets import SocketType
from app import seed_control
from app.editing import GraphEditor
from app.input_visibility import hidden_inputs
from app.graph_model import GraphModel
from app.run_state import NodeRunState
from app.widget_paint import widget_kind

INT32 = 2**31 - 1


class _CommitTextEdit(QPlainTextEdit):
    """Multi-line editor that commits when it loses focus (one undo step per edit session)."""

    def __init__(self, on_commit: Callable[[str], None]):
        super().__init__()
        self._on_commit = on_commit
        self.setMinimumHeight(90)

    def focusOutEvent(self, event) -> None:  # noqa: N802
        self.commit()
        super().focusOutEvent(event)

    def commit(self) -> None:
        self._on_commit(self.toPlainText())


class Inspector(QWidget):
    def __init__(self, model: GraphModel, editor: GraphEditor,
                 model_names: Callable[[str], list[str]], pick_file: Callable[[str], str | None]):
        super().__init__()
        self.model, self.editor = model, editor
        self._model_names, self._pick_file = model_names, pick_file
        self.node_id: str | None = None
        self.editors: dict[str, tuple[QWidget, Callable[[Any], None]]] = {}
        self.run_state = NodeRunState()
        self._scroll = QScrollArea()
        self._scroll.setWidgetResizable(True)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(self._scroll)
        model.node_changed.connect(self._on_changed)
        model.node_removed.connect(self._on_removed)
        model.link_added.connect(lambda link: self._on_link(link))
        model.link_removed.connect(lambda link: self._on_link(link))
        model.reset.connect(lambda: self.show_node(None))
        self.show_node(None)

    # ---- building -----------------------------------------------------------------------------
    def show_node(self, node_id: str | None) -> None:
        self.node_id = node_id if node_id in self.model.workflow.nodes else None
        self.editors = {}
        self._hidden: set[str] = set()
        self.seed_controls: dict[str, QComboBox] = {}  # seed input -> its control after each run
        body = QWidget()
        layout = QVBoxLayout(body)
        layout.setContentsMargins(10, 8, 10, 8)
        if self.node_id is None:
            hint = QLabel("Select a node to see and edit all of its inputs.")
            hint.setWordWrap(True)
            layout.addWidget(hint)
            layout.addStretch(1)
            self._scroll.setWidget(body)
            return
        node, spec = self.model.node(self.node_id), self.model.spec(self.node_id)
        self.title_edit = QLineEdit(node.title or (spec.title if spec else node.type))
        self.title_edit.editingFinished.connect(
            lambda: self.editor.set_title(self.node_id, self.title_edit.text()) if self.node_id else None)
        layout.addWidget(self.title_edit)
        kind = QLabel(f"{node.type} · {spec.category}" if spec else f"{node.type} · missing node type")
        kind.setStyleSheet("color: #8d9098;")
        layout.addWidget(kind)
        desc = QLabel(" ".join(spec.description.split()) if spec else "This node type is not installed. Its settings are "
                      "kept and saved back unchanged; install the node pack that provides it.")
        desc.setWordWrap(True)
        desc.setStyleSheet("color: #b8bbc2; margin-bottom: 6px;")
        layout.addWidget(desc)
        self.mode_box = QComboBox()
        self.mode_box.addItems(["normal", "bypass", "mute"])
        self.mode_box.setCurrentText(node.mode)
        self.mode_box.currentTextChanged.connect(self._mode_chosen)
        form = QFormLayout()
        form.setLabelAlignment(Qt.AlignRight)
        form.addRow("mode", self.mode_box)
        layout.addLayout(form)
        inputs = QFormLayout()
        inputs.setLabelAlignment(Qt.AlignRight)
        if spec is not None:
            hidden = self._hidden = self._hidden_now()
            for ispec in spec.inputs:
                if ispec.name in hidden:
                    continue  # belongs to another mode (e.g. another Recaption backend)
                inputs.addRow(ispec.name + ("" if ispec.optional or ispec.has_widget else " *"),
                              self._input_row(ispec))
        else:
            for name, value in node.inputs.items():
                label = QLabel(repr(value) if not isinstance(value, str) else value)
                label.setWordWrap(True)
                inputs.addRow(name, label)
        layout.addWidget(_section("Inputs"))
        layout.addLayout(inputs)
        if spec is not None and spec.outputs:
            layout.addWidget(_section("Outputs"))
            for out in spec.outputs:
                layout.addWidget(QLabel(f"{out.name}: {out.type.value}"))
        self.output_text = QPlainTextEdit()  # what the node produced as text (a caption)
        self.output_text.setReadOnly(True)
        self.output_text.setMaximumHeight(160)
        self.output_section = _section("Output text")
        layout.addWidget(self.output_section)
        layout.addWidget(self.output_text)
        self.state_label = QLabel("")
        self.state_label.setWordWrap(True)
        self.state_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        layout.addWidget(_section("Last run"))
        layout.addWidget(self.state_label)
        layout.addStretch(1)
        self._scroll.setWidget(body)
        self.set_run_state(self.run_state)
        self._sync()

    def _input_row(self, ispec: InputSpec) -> QWidget:
        name, node_id = ispec.name, self.node_id
        if not ispec.has_widget:
            label = QLabel("")
            self.editors[name] = (label, lambda _v, l=label: l.setText(self._link_text(name, True)))
            return label
        kind = widget_kind(ispec)
        set_value = lambda v, n=name: self.editor.set_input(node_id, n, v)  # noqa: E731
        if kind in ("number", "seed"):
            w = self._number_editor(ispec, set_value)
            if kind == "seed":
                row = QWidget()
                h = QHBoxLayout(row)
                h.setContentsMargins(0, 0, 0, 0)
                h.addWidget(w, 1)
                box = QComboBox()
                box.addItems(list(seed_control.MODES))
                box.setToolTip("What happens to this seed after each queued run (a run refused for "
                               "problems changes nothing)")
                box.currentTextChanged.connect(
                    lambda mode, n=name: self.editor.set_seed_mode(node_id, n, mode))
                h.addWidget(QLabel("after run"))
                h.addWidget(box)
                self.seed_controls[name] = box
                return row
            return w
        if kind == "toggle":
            w = QCheckBox()
            w.toggled.connect(lambda on: set_value(bool(on)))
            self.editors[name] = (w, lambda v, w=w: w.setChecked(bool(v)))
            return w
        if kind in ("choice", "model"):
            w = QComboBox()
            options = list(ispec.choices or ()) if kind == "choice" else self._model_names(ispec.file_kind or "")
            w.addItems(options)
            w.setEditable(kind == "model")
            w.activated.connect(lambda _i, w=w: set_value(w.currentText()))
            if kind == "model":
                w.lineEdit().editingFinished.connect(lambda w=w: set_value(w.currentText()))

            def show(v, w=w):
                if v is not None and w.findText(str(v)) < 0:
                    w.addItem(str(v))
                w.setCurrentText("" if v is None else str(v))
            self.editors[name] = (w, show)
            return w
        if kind == "file":
            row = QWidget()
            h = QHBoxLayout(row)
            h.setContentsMargins(0, 0, 0, 0)
            line = QLineEdit()
            line.editingFinished.connect(lambda: set_value(line.text()))
            browse = QPushButton("…")
            browse.setFixedWidth(30)
            browse.clicked.connect(lambda: self._browse(line, set_value))
            h.addWidget(line, 1)
            h.addWidget(browse)
            self.editors[name] = (line, lambda v, w=line: w.setText("" if v is None else str(v)))
            return row
        if kind == "multiline":
            w = _CommitTextEdit(lambda text: set_value(text))
            self.editors[name] = (w, lambda v, w=w: w.setPlainText("" if v is None else str(v)))
            return w
        w = QLineEdit()
        w.editingFinished.connect(lambda w=w: set_value(w.text()))
        self.editors[name] = (w, lambda v, w=w: w.setText("" if v is None else str(v)))
        return w

    def _number_editor(self, ispec: InputSpec, set_value: Callable[[Any], None]) -> QWidget:
        lo = ispec.min if ispec.min is not None else -1e15
        hi = ispec.max if ispec.max is not None else 1e15
        if ispec.type == SocketType.INT and -INT32 <= lo and hi <= INT32:
            w = QSpinBox()
            w.setRange(int(lo), int(hi))
            w.setSingleStep(int(ispec.step or 1))
            w.editingFinished.connect(lambda: set_value(int(w.value())))
        else:  # doubles hold integers exactly up to 2**53: enough for seeds and frame counts
            w = QDoubleSpinBox()
            w.setRange(float(max(lo, -2**53)), float(min(hi, 2**53)))
            is_int = ispec.type == SocketType.INT
            w.setDecimals(0 if is_int else 4)
            w.setSingleStep(float(ispec.step or (1 if is_int else 0.01)))
            w.editingFinished.connect(lambda: set_value(int(w.value()) if is_int else float(w.value())))
        w.setKeyboardTracking(False)
        self.editors[ispec.name] = (w, lambda v, w=w: w.setValue(v) if isinstance(v, (int, float)) else None)
        return w

    def _browse(self, line: QLineEdit, set_value: Callable[[Any], None]) -> None:
        path = self._pick_file(line.text())
        if path:
            line.setText(path)
            set_value(path)

    def _link_text(self, name: str, link_only: bool) -> str:
        link = self.model.link_into(self.node_id, name) if self.node_id else None
        if link is not None:
            return f"⟵ {link.from_node}.{link.from_output}"
        return "(not connected)" if link_only else ""

    def commit_pending(self) -> None:
        """Commit the field being typed in (a run or save must see what is on screen)."""
        focused = self.focusWidget()
        if isinstance(focused, _CommitTextEdit):
            focused.commit()
        elif isinstance(focused, (QLineEdit, QSpinBox, QDoubleSpinBox)) and self.isAncestorOf(focused):
            focused.editingFinished.emit()

    # ---- syncing ------------------------------------------------------------------------------
    def _sync(self) -> None:
        if self.node_id is None:
            return
        focused = self.focusWidget()
        for name, (widget, show) in self.editors.items():
            linked = self.model.link_into(self.node_id, name) is not None
            if isinstance(widget, QLabel):
                show(None)
                continue
            widget.setEnabled(not linked)
            widget.setToolTip(self._link_text(name, False) if linked else "")
            if focused is not None and (widget is focused or widget.isAncestorOf(focused)):
                continue  # do not overwrite what the user is typing
            widget.blockSignals(True)
            show(self.model.input_value(self.node_id, name))
            widget.blockSignals(False)
        entry = self.model.layout_of(self.node_id)
        for name, box in self.seed_controls.items():
            box.blockSignals(True)
            box.setCurrentText(seed_control.mode_of(entry, name))
            box.blockSignals(False)
        node = self.model.node(self.node_id)
        self.mode_box.blockSignals(True)
        self.mode_box.setCurrentText(node.mode)
        self.mode_box.blockSignals(False)

    def _mode_chosen(self, mode: str) -> None:
        if self.node_id is not None and self.model.node(self.node_id).mode != mode:
            self.editor.toggle_mode([self.node_id], mode)

    def _on_changed(self, node_id: str) -> None:
        if node_id == self.node_id:
            if self._hidden_now() != self._hidden:  # a mode choice changed which inputs apply
                QTimer.singleShot(0, lambda: self.show_node(self.node_id))  # not inside its signal
            self._sync()

    def _hidden_now(self) -> set[str]:
        if self.node_id is None:
            return set()
        return hidden_inputs(self.model.spec(self.node_id), self.model.node(self.node_id).inputs,
                             set(self.model.workflow.links_into(self.node_id)))

    def _on_removed(self, node_id: str) -> None:
        if node_id == self.node_id:
            self.show_node(None)

    def _on_link(self, link) -> None:
        if self.node_id in (link.to_node, link.from_node):
            self._sync()

    def set_run_state(self, state: NodeRunState) -> None:
        self.run_state = state
        if self.node_id is None or not hasattr(self, "state_label"):
            return
        text = {"idle": "not run yet", "not_needed": "not needed: every node that reads it was "
                "served from the cache"}.get(state.state, state.state)
        if state.state == "done":
            text += f" in {state.seconds:.2f} s"
        if state.message:
            text += f"\n{state.message}"
        if state.files:
            text += "\n" + "\n".join(state.files)
        if state.traceback:
            text += f"\n\n{state.traceback}"
        self.state_label.setText(text)
        texts = state.texts
        shown = "\n\n".join(texts.values()) if len(texts) == 1 else "\n\n".join(
            f"{name}:\n{value}" for name, value in texts.items())
        if self.output_text.toPlainText() != shown:
            self.output_text.setPlainText(shown)
        self.output_text.setVisible(bool(texts))
        self.output_section.setVisible(bool(texts))


def _section(text: str) -> QLabel:
    label = QLabel(text.upper())
    label.setStyleSheet("color: #8d9098; font-size: 10px; font-weight: bold; margin-top: 8px;")
    return label
