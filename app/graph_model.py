"""The studio's live view of one graph document: the engine's `Workflow` plus change signals.

The canvas, inspector and minimap never mutate the `Workflow` directly: every edit is an undo
command (app.commands) that calls one primitive method here, and each primitive emits exactly the
signal(s) describing what changed. Views subscribe to those signals (ryvencore's observer split),
so undo, redo, paste and file loads all redraw through the same path.

Invariants:
- The `Workflow` object is the single source of truth; items hold only a node id.
- Layout edits (position, size, collapse, colour, groups) go to `workflow.layout` only and never
  touch `inputs` or `links`, so they cannot affect execution or cache keys.
- `delete_node` returns everything needed to restore the node exactly (instance, layout, links
  with their list positions).
"""

from __future__ import annotations

import copy
from typing import Any

from PySide6.QtCore import QObject, Signal

from engine.document import Link, NodeInstance, Workflow
from engine.registry import NodeRegistry
from engine.schema import NodeSpec

class _Unset:
    """Marks "no stored value" (an input or layout key to remove); survives deepcopy as itself."""

    def __repr__(self) -> str:
        return "UNSET"

    def __copy__(self) -> "_Unset":
        return self

    def __deepcopy__(self, memo: dict) -> "_Unset":
        return self


UNSET = _Unset()


class GraphModel(QObject):
    node_added = Signal(str)
    node_removed = Signal(str)
    node_changed = Signal(str)  # inputs, mode, title or a layout flag changed: repaint
    node_geometry_changed = Signal(str)  # collapsed / size changed: re-layout
    node_moved = Signal(str)
    link_added = Signal(object)  # Link
    link_removed = Signal(object)  # Link
    groups_changed = Signal()
    notes_changed = Signal()  # layout["notes"]: text notes on the canvas (app.annotations)
    reroutes_changed = Signal()  # layout["reroutes"]: dots a wire passes through
    subgraphs_changed = Signal()  # the workflow's subgraph definitions
    reset = Signal()  # the whole document was replaced

    def __init__(self, registry: NodeRegistry, workflow: Workflow | None = None):
        super().__init__()
        self.registry = registry
        self.workflow = workflow if workflow is not None else Workflow()
        self._instance_specs: dict[str, NodeSpec | None] = {}  # subgraph id -> its instances' spec
        self.reset.connect(self._instance_specs.clear)
        self.subgraphs_changed.connect(self._instance_specs.clear)

    # ---- queries ------------------------------------------------------------------------------
    def spec(self, node_id: str) -> NodeSpec | None:
        """The node's type spec; a subgraph instance gets one made from its definition."""
        node = self.workflow.nodes.get(node_id)
        if node is None:
            return None
        if node.subgraph is not None:
            if node.subgraph not in self._instance_specs:
                from engine.subgraphs import instance_spec
                self._instance_specs[node.subgraph] = instance_spec(self.workflow, node.subgraph,
                                                                    self.registry)
            return self._instance_specs[node.subgraph]
        return self.registry.spec(node.type)

    def layout_list(self, key: str) -> list[Any]:
        """A list kept at the top of the layout ("notes", "reroutes"); [] when absent or bad."""
        value = self.workflow.layout.get(key)
        return value if isinstance(value, list) else []

    def node(self, node_id: str) -> NodeInstance:
        return self.workflow.nodes[node_id]

    def layout_of(self, node_id: str) -> dict[str, Any]:
        """The node's layout entry (read-only use; edits go through set_layout)."""
        nodes = self.workflow.layout.get("nodes")
        entry = nodes.get(node_id) if isinstance(nodes, dict) else None
        return entry if isinstance(entry, dict) else {}

    def pos_of(self, node_id: str) -> tuple[float, float]:
        pos = self.layout_of(node_id).get("pos")
        try:
            return float(pos[0]), float(pos[1])
        except (TypeError, ValueError, IndexError):
            return 0.0, 0.0

    def groups(self) -> list[dict[str, Any]]:
        groups = self.workflow.layout.get("groups")
        return groups if isinstance(groups, list) else []

    def input_value(self, node_id: str, name: str) -> Any:
        """Stored value, else the spec default."""
        node = self.workflow.nodes[node_id]
        if name in node.inputs:
            return node.inputs[name]
        spec = self.spec(node_id)
        ispec = spec.input(name) if spec else None
        return ispec.default if ispec else None

    def link_into(self, node_id: str, input_name: str) -> Link | None:
        for link in self.workflow.links:
            if link.to_node == node_id and link.to_input == input_name:
                return link
        return None

    def links_of(self, node_id: str) -> list[Link]:
        return [l for l in self.workflow.links if node_id in (l.from_node, l.to_node)]

    # ---- primitives (called by undo commands only) ----------------------------------------------
    def load(self, workflow: Workflow) -> None:
        self.workflow = workflow
        self.reset.emit()

    def insert_node(self, node: NodeInstance, layout: dict[str, Any] | None = None) -> None:
        self.workflow.nodes[node.id] = node
        if layout is not None:
            self._layout_nodes()[node.id] = copy.deepcopy(layout)
        self.node_added.emit(node.id)

    def delete_node(self, node_id: str) -> tuple[NodeInstance, dict[str, Any], list[tuple[int, Link]]]:
        node = self.workflow.nodes[node_id]
        layout = copy.deepcopy(self.layout_of(node_id))
        links = [(i, l) for i, l in enumerate(self.workflow.links)
                 if node_id in (l.from_node, l.to_node)]
        for _, link in reversed(links):
            self.remove_link(link)
        del self.workflow.nodes[node_id]
        self._layout_nodes().pop(node_id, None)
        self.node_removed.emit(node_id)
        return node, layout, links

    def add_link(self, link: Link, index: int | None = None) -> None:
        if index is None or index > len(self.workflow.links):
            self.workflow.links.append(link)
        else:
            self.workflow.links.insert(index, link)
        self.link_added.emit(link)
        self.node_changed.emit(link.to_node)  # the input's widget greys out

    def remove_link(self, link: Link) -> int:
        index = self.workflow.links.index(link)
        del self.workflow.links[index]
        self.link_removed.emit(link)
        if link.to_node in self.workflow.nodes:
            self.node_changed.emit(link.to_node)
        return index

    def set_input(self, node_id: str, name: str, value: Any) -> None:
        inputs = self.workflow.nodes[node_id].inputs
        if value is UNSET:
            inputs.pop(name, None)
        else:
            inputs[name] = copy.deepcopy(value)
        self.node_changed.emit(node_id)

    def set_mode(self, node_id: str, mode: str) -> None:
        self.workflow.nodes[node_id].mode = mode
        self.node_changed.emit(node_id)

    def set_title(self, node_id: str, title: str | None) -> None:
        self.workflow.nodes[node_id].title = title or None
        self.node_changed.emit(node_id)

    def set_pos(self, node_id: str, pos: tuple[float, float]) -> None:
        self.layout_entry(node_id)["pos"] = [round(float(pos[0]), 1), round(float(pos[1]), 1)]
        self.node_moved.emit(node_id)

    def set_layout(self, node_id: str, key: str, value: Any) -> None:
        """Set (or with UNSET remove) a layout key such as "collapsed", "size", "color"."""
        entry = self.layout_entry(node_id)
        if value is UNSET:
            entry.pop(key, None)
        else:
            entry[key] = copy.deepcopy(value)
        if key in ("collapsed", "size"):
            self.node_geometry_changed.emit(node_id)
        else:
            self.node_changed.emit(node_id)

    def set_groups(self, groups: list[dict[str, Any]]) -> None:
        self.workflow.layout["groups"] = copy.deepcopy(groups)
        self.groups_changed.emit()

    def set_layout_list(self, key: str, value: list[Any] | _Unset) -> None:
        """Replace (or with UNSET remove) layout["notes"] or layout["reroutes"]."""
        if value is UNSET:
            self.workflow.layout.pop(key, None)
        else:
            self.workflow.layout[key] = copy.deepcopy(value)
        {"notes": self.notes_changed, "reroutes": self.reroutes_changed}[key].emit()

    def set_subgraphs(self, subgraphs: dict[str, Any]) -> None:
        self.workflow.subgraphs = copy.deepcopy(subgraphs)
        self.subgraphs_changed.emit()

    # ---- helpers ------------------------------------------------------------------------------
    def _layout_nodes(self) -> dict[str, Any]:
        nodes = self.workflow.layout.get("nodes")
        if not isinstance(nodes, dict):
            nodes = self.workflow.layout["nodes"] = {}
        return nodes

    def layout_entry(self, node_id: str) -> dict[str, Any]:
        """The node's mutable layout entry, created if missing. Only for live previews during a
        gesture (a resize drag); the gesture's end restores it and pushes an undo command."""
        nodes = self._layout_nodes()
        entry = nodes.get(node_id)
        if not isinstance(entry, dict):
            entry = nodes[node_id] = {}
        return entry
