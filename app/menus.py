"""Menus, toolbar and shortcuts of the studio window (ComfyUI / Blender habits where they agree).

`build(window)` creates every QAction once, puts it in the menus and the toolbar, and returns them
by name so tests and other code can trigger them (`window.actions["run"].trigger()`).
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QMenu

if TYPE_CHECKING:
    from app.main_window import MainWindow


def _action(window: "MainWindow", actions: dict, name: str, text: str, slot, shortcut=None,
            tip: str = "", canvas: bool = False) -> QAction:
    """`canvas`: the shortcut works only while the canvas has focus, so single keys (X, C, F)
    and Delete / Ctrl+C never act on nodes while the log or the inspector is focused."""
    action = QAction(text, window)
    if shortcut is not None:
        if isinstance(shortcut, (list, tuple)):
            action.setShortcuts([QKeySequence(s) for s in shortcut])
        else:
            action.setShortcut(QKeySequence(shortcut))
    if tip:
        action.setStatusTip(tip)
        action.setToolTip(tip)
    action.triggered.connect(lambda _checked=False: slot())
    if canvas:
        action.setShortcutContext(Qt.WidgetWithChildrenShortcut)
        window.view.addAction(action)
    else:
        window.addAction(action)  # shortcuts work while any child has focus
    actions[name] = action
    return action


def build(window: "MainWindow") -> dict[str, QAction]:
    a: dict[str, QAction] = {}
    w, view, editor, files = window, window.view, window.editor, window.files
    selected = window.scene.selected_node_ids

    # File
    _action(w, a, "new", "&New", files.new, QKeySequence.New)
    _action(w, a, "new_from_template", "New from &Template…", window.new_from_template, "Ctrl+Shift+N",
            "Start from an example or one of your templates (opens a copy)")
    _action(w, a, "open", "&Open…", files.open, QKeySequence.Open,
            "Open a workflow, or the workflow embedded in an output image or video")
    _action(w, a, "save", "&Save", files.save, QKeySequence.Save)
    _action(w, a, "save_as", "Save &As…", files.save_as, QKeySequence.SaveAs)
    _action(w, a, "save_template", "Save as Te&mplate…", window.save_as_template)
    _action(w, a, "export_image", "Export Canvas Image…", window.export_canvas_image)
    _action(w, a, "settings", "Settings…", window.edit_settings, "Ctrl+,")
    _action(w, a, "quit", "&Quit", window.close, QKeySequence.Quit)
    # Edit
    undo = window.undo_stack.createUndoAction(window, "&Undo")
    undo.setShortcut(QKeySequence.Undo)
    redo = window.undo_stack.createRedoAction(window, "&Redo")
    redo.setShortcuts([QKeySequence.Redo, QKeySequence("Ctrl+Y")])
    window.addAction(undo)
    window.addAction(redo)
    a["undo"], a["redo"] = undo, redo
    _action(w, a, "cut", "Cu&t", view.cut_selection, QKeySequence.Cut, canvas=True)
    _action(w, a, "copy", "&Copy", view.copy_selection, QKeySequence.Copy, canvas=True)
    _action(w, a, "paste", "&Paste", view.paste, QKeySequence.Paste, canvas=True)
    _action(w, a, "paste_links", "Paste with Input Links", partial(view.paste, None, True), "Ctrl+Shift+V", canvas=True)
    _action(w, a, "duplicate", "&Duplicate", view.duplicate_selection, ["Ctrl+D", "Shift+D"], canvas=True)
    _action(w, a, "delete", "De&lete", view.delete_selection, [QKeySequence.Delete, "Backspace", "X"], canvas=True)
    _action(w, a, "select_all", "Select &All", lambda: [i.setSelected(True) for i in window.scene.nodes.values()],
            QKeySequence.SelectAll, canvas=True)
    _action(w, a, "group", "&Group Selected", view.group_selection, "Ctrl+G", canvas=True)
    _action(w, a, "tidy", "&Tidy Up (selection or all)", view.tidy_up, "Ctrl+Shift+L", canvas=True)
    _action(w, a, "add_note", "Add &Note", lambda: view.add_note_at(view.visible_scene_rect().center()),
            "Shift+N", "A Markdown note on the canvas (never affects a run)", canvas=True)
    _action(w, a, "collapse_subgraph", "Collapse to &Subgraph", view.collapse_selection, "Ctrl+Shift+G",
            "Fold the selected nodes into one node with the inputs and outputs its wires need", canvas=True)
    _action(w, a, "expand_subgraph", "E&xpand Subgraph", view.expand_selection, "Ctrl+Alt+G", canvas=True)
    _action(w, a, "save_subgraph", "Save Subgraph to &Library…",
            lambda: [view.save_subgraph(n) for n in selected()[:1]
                     if window.model.node(n).subgraph is not None])
    _action(w, a, "bypass", "&Bypass", lambda: editor.toggle_mode(selected(), "bypass"), "Ctrl+B", canvas=True)
    _action(w, a, "mute", "&Mute", lambda: editor.toggle_mode(selected(), "mute"), "Ctrl+M", canvas=True)
    _action(w, a, "collapse", "Collapse / Expand", lambda: editor.toggle_collapsed(selected()), ["C", "Alt+C"], canvas=True)
    _action(w, a, "rename", "Rename Node", lambda: [editor.rename_node(n) for n in selected()[:1]], "F2", canvas=True)
    # View
    _action(w, a, "frame_selection", "&Frame Selection", view.frame_selection, ["F", "."], canvas=True)
    _action(w, a, "frame_all", "Frame &All", view.frame_all, "Home", canvas=True)
    _action(w, a, "zoom_in", "Zoom &In", lambda: view.zoom_at(1.25), ["Ctrl+=", "Ctrl++"], canvas=True)
    _action(w, a, "zoom_out", "Zoom &Out", lambda: view.zoom_at(0.8), "Ctrl+-", canvas=True)
    _action(w, a, "zoom_reset", "Actual Size", lambda: view.set_zoom(1.0), "Ctrl+0", canvas=True)
    minimap = _action(w, a, "minimap", "Show &Overview", lambda: view.minimap.setVisible(a["minimap"].isChecked()))
    minimap.setCheckable(True)
    minimap.setChecked(True)
    # Run
    _action(w, a, "run", "▶ &Run", window.run, ["Ctrl+Return", "Ctrl+Enter"],
            "Run the graph in the worker process (Ctrl+Enter); press again to queue another run")
    _action(w, a, "run_selected", "Run to &Selected", window.run_selected, "Ctrl+Shift+Return",
            "Run only what the selected nodes need")
    _action(w, a, "stop", "■ &Stop", window.stop, ["Ctrl+.", "Ctrl+Shift+C"],
            "Stop the current run and clear the queue")
    a["stop"].setEnabled(False)
    _action(w, a, "clear_queue", "Clear &Queue", window.runs.clear_queue)
    rnd = _action(w, a, "randomize", "Apply Seed Controls After Queueing",
                  lambda: setattr(window, "randomize_seeds", a["randomize"].isChecked()))
    rnd.setCheckable(True)
    rnd.setChecked(True)

    bar = window.menuBar()
    file_menu = bar.addMenu("&File")
    for name in ("new", "new_from_template", "open"):
        file_menu.addAction(a[name])
    window.recent_menu = file_menu.addMenu("Open &Recent")
    window.recent_menu.aboutToShow.connect(lambda: _fill_recent(window))
    for name in ("save", "save_as", "save_template", None, "export_image", None, "settings", None, "quit"):
        file_menu.addSeparator() if name is None else file_menu.addAction(a[name])
    edit = bar.addMenu("&Edit")
    for name in ("undo", "redo", None, "cut", "copy", "paste", "paste_links", "duplicate", "delete",
                 None, "select_all", "group", "tidy", "add_note", None, "collapse_subgraph",
                 "expand_subgraph", "save_subgraph", None, "bypass", "mute", "collapse", "rename"):
        edit.addSeparator() if name is None else edit.addAction(a[name])
    view_menu = bar.addMenu("&View")
    for name in ("frame_selection", "frame_all", None, "zoom_in", "zoom_out", "zoom_reset", None, "minimap"):
        view_menu.addSeparator() if name is None else view_menu.addAction(a[name])
    view_menu.addSeparator()
    for dock in (window.inspector_dock, window.preview_dock, window.log_dock):
        view_menu.addAction(dock.toggleViewAction())
    run_menu = bar.addMenu("&Run")
    for name in ("run", "run_selected", "stop", "clear_queue", None, "randomize"):
        run_menu.addSeparator() if name is None else run_menu.addAction(a[name])

    tools = window.addToolBar("Run")
    tools.setObjectName("run-toolbar")
    tools.setMovable(False)
    for name in ("run", "run_selected", "stop"):
        tools.addAction(a[name])
    tools.addSeparator()
    for name in ("undo", "redo", None, "frame_all"):
        tools.addSeparator() if name is None else tools.addAction(a[name])
    return a


def _fill_recent(window: "MainWindow") -> None:
    menu: QMenu = window.recent_menu
    menu.clear()
    for path in window.prefs.recent_files:
        menu.addAction(path, partial(window.files.open, path))
    if not window.prefs.recent_files:
        menu.addAction("(none)").setEnabled(False)
