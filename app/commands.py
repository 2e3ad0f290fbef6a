"""Undo commands: every edit of the document is one of these, pushed on the window's QUndoStack.

Each command stores just enough to redo and undo itself through GraphModel's primitives, so undo
restores the document exactly (node ids, input values, link order, layout). Value edits made by
dragging a number merge into one command per gesture (`merge_key`), so one drag is one undo step.
"""

from __future__ import annotations

import copy
from typing import Any

from PySide6.QtGui import QUndoCommand

from engine.document import Link, NodeInstance
from app.graph_model import UNSET, GraphModel

_SET_INPUT_ID = 1001
_MOVE_ID = 1002


class AddNodesCommand(QUndoCommand):
    """Insert nodes (with their layout) and the links among/into them: add, paste, duplicate."""

    def __init__(self, model: GraphModel, nodes: list[tuple[NodeInstance, dict[str, Any]]],
                 links: list[Link] = (), text: str = "Add node"):
        super().__init__(text)
        self.model = model
        self.nodes = [(copy.deepcopy(n), copy.deepcopy(lay)) for n, lay in nodes]
        self.links = list(links)

    @property
    def node_ids(self) -> list[str]:
        return [n.id for n, _ in self.nodes]

    def redo(self) -> None:
        for node, layout in self.nodes:
            self.model.insert_node(copy.deepcopy(node), layout)
        for link in self.links:  # links end at new nodes only, so nothing is replaced
            self.model.add_link(link)

    def undo(self) -> None:
        for node, _ in reversed(self.nodes):
            self.model.delete_node(node.id)


class RemoveNodesCommand(QUndoCommand):
    def __init__(self, model: GraphModel, node_ids: list[str], text: str = "Delete"):
        super().__init__(text)
        self.model = model
        self.node_ids = [n for n in node_ids if n in model.workflow.nodes]
        self.saved: list[tuple[NodeInstance, dict[str, Any]]] = []
        self.saved_links: list[tuple[int, Link]] = []

    def redo(self) -> None:
        self.saved, self.saved_links = [], []
        # Record every affected link with its index before removing anything, so undo can put
        # links back in their original order.
        affected = {i: l for i, l in enumerate(self.model.workflow.links)
                    if l.from_node in self.node_ids or l.to_node in self.node_ids}
        self.saved_links = sorted(affected.items())
        for nid in self.node_ids:
            node, layout, _ = self.model.delete_node(nid)
            self.saved.append((node, layout))

    def undo(self) -> None:
        for node, layout in self.saved:
            self.model.insert_node(node, layout)
        for index, link in self.saved_links:
            if link not in self.model.workflow.links:
                self.model.add_link(link, index)


class ConnectCommand(QUndoCommand):
    """Link an output to an input, replacing whatever fed that input."""

    def __init__(self, model: GraphModel, link: Link, text: str = "Connect"):
        super().__init__(text)
        self.model = model
        self.link = link
        self.replaced: tuple[int, Link] | None = None

    def redo(self) -> None:
        prev = self.model.link_into(self.link.to_node, self.link.to_input)
        self.replaced = None
        if prev is not None:
            self.replaced = (self.model.remove_link(prev), prev)
        self.model.add_link(self.link)

    def undo(self) -> None:
        self.model.remove_link(self.link)
        if self.replaced is not None:
            index, prev = self.replaced
            self.model.add_link(prev, index)


class DisconnectCommand(QUndoCommand):
    def __init__(self, model: GraphModel, link: Link, text: str = "Disconnect"):
        super().__init__(text)
        self.model = model
        self.link = link
        self.index = 0

    def redo(self) -> None:
        self.index = self.model.remove_link(self.link)

    def undo(self) -> None:
        self.model.add_link(self.link, self.index)


class SetInputCommand(QUndoCommand):
    """Change one input's literal value. Commands with the same non-None merge_key merge."""

    def __init__(self, model: GraphModel, node_id: str, name: str, value: Any,
                 merge_key: object | None = None, text: str | None = None):
        super().__init__(text or f"Set {name}")
        self.model = model
        self.node_id, self.name = node_id, name
        inputs = model.node(node_id).inputs
        self.old = copy.deepcopy(inputs[name]) if name in inputs else UNSET
        self.new = value
        self.merge_key = merge_key

    def id(self) -> int:  # noqa: A003 - Qt's name
        return _SET_INPUT_ID

    def mergeWith(self, other: QUndoCommand) -> bool:  # noqa: N802 - Qt's name
        if not isinstance(other, SetInputCommand) or self.merge_key is None:
            return False
        if (other.merge_key, other.node_id, other.name) != (self.merge_key, self.node_id, self.name):
            return False
        self.new = other.new
        return True

    def redo(self) -> None:
        self.model.set_input(self.node_id, self.name, self.new)

    def undo(self) -> None:
        self.model.set_input(self.node_id, self.name, self.old)


class MoveNodesCommand(QUndoCommand):
    """Positions after a drag (already shown by the items); undo moves them back."""

    def __init__(self, model: GraphModel, moves: dict[str, tuple[tuple[float, float], tuple[float, float]]],
                 text: str = "Move"):
        super().__init__(text)
        self.model = model
        self.moves = dict(moves)

    def redo(self) -> None:
        for nid, (_, new) in self.moves.items():
            if nid in self.model.workflow.nodes:
                self.model.set_pos(nid, new)

    def undo(self) -> None:
        for nid, (old, _) in self.moves.items():
            if nid in self.model.workflow.nodes:
                self.model.set_pos(nid, old)


class SetModeCommand(QUndoCommand):
    def __init__(self, model: GraphModel, node_ids: list[str], mode: str, text: str | None = None):
        super().__init__(text or f"Set mode {mode}")
        self.model = model
        self.old = {nid: model.node(nid).mode for nid in node_ids}
        self.mode = mode

    def redo(self) -> None:
        for nid in self.old:
            self.model.set_mode(nid, self.mode)

    def undo(self) -> None:
        for nid, mode in self.old.items():
            self.model.set_mode(nid, mode)


class SetLayoutCommand(QUndoCommand):
    """One layout key (collapsed, size, color, randomize) on several nodes."""

    def __init__(self, model: GraphModel, key: str, values: dict[str, Any], text: str | None = None):
        """`values`: node id -> new value (UNSET removes the key)."""
        super().__init__(text or f"Change {key}")
        self.model, self.key = model, key
        self.old = {nid: copy.deepcopy(model.layout_of(nid).get(key, UNSET)) for nid in values}
        self.new = dict(values)

    def redo(self) -> None:
        for nid, value in self.new.items():
            self.model.set_layout(nid, self.key, value)

    def undo(self) -> None:
        for nid, value in self.old.items():
            self.model.set_layout(nid, self.key, value)


class SetTitleCommand(QUndoCommand):
    def __init__(self, model: GraphModel, node_id: str, title: str | None):
        super().__init__("Rename node")
        self.model, self.node_id = model, node_id
        self.old, self.new = model.node(node_id).title, title

    def redo(self) -> None:
        self.model.set_title(self.node_id, self.new)

    def undo(self) -> None:
        self.model.set_title(self.node_id, self.old)


class SetGroupsCommand(QUndoCommand):
    """Replace the group list (add, remove, rename, move or resize a frame)."""

    def __init__(self, model: GraphModel, groups: list[dict[str, Any]], text: str = "Edit group"):
        super().__init__(text)
        self.model = model
        self.old = copy.deepcopy(model.groups())
        self.new = copy.deepcopy(groups)

    def redo(self) -> None:
        self.model.set_groups(self.new)

    def undo(self) -> None:
        self.model.set_groups(self.old)


class SetLayoutListCommand(QUndoCommand):
    """Replace a top-level layout list: "notes" (canvas notes) or "reroutes" (wire dots)."""

    def __init__(self, model: GraphModel, key: str, value: list[Any], text: str):
        super().__init__(text)
        self.model, self.key = model, key
        self.old = copy.deepcopy(model.workflow.layout[key]) if key in model.workflow.layout else UNSET
        self.new = copy.deepcopy(value) if value else UNSET

    def redo(self) -> None:
        self.model.set_layout_list(self.key, self.new)

    def undo(self) -> None:
        self.model.set_layout_list(self.key, self.old)


class SetSubgraphsCommand(QUndoCommand):
    """Replace the workflow's subgraph definitions (collapse, expand, add from the library)."""

    def __init__(self, model: GraphModel, subgraphs: dict[str, Any], text: str = "Subgraphs"):
        super().__init__(text)
        self.model = model
        self.old = copy.deepcopy(model.workflow.subgraphs)
        self.new = copy.deepcopy(subgraphs)

    def redo(self) -> None:
        self.model.set_subgraphs(self.new)

    def undo(self) -> None:
        self.model.set_subgraphs(self.old)
