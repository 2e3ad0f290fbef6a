"""Edit operations of the canvas, each one undoable: the verbs behind menus, shortcuts and gestures.

`GraphEditor` turns an intention ("connect these sockets", "paste here", "bypass the selection")
into undo commands on the stack. It checks what the engine would refuse (socket types, cycles)
before pushing, and returns the reason so the canvas can show it. It holds no Qt widgets: prompts
for text go through `text_prompt`, which the view supplies.
"""

from __future__ import annotations

import random
from typing import Any, Callable

from PySide6.QtCore import QRectF
from PySide6.QtGui import QUndoStack

from engine.document import Link, NodeInstance, Workflow
from engine.graph_index import GraphIndex
from engine.sockets import can_connect
from app import seed_control
from app.clipboard import fragment_origin, fresh_id, make_fragment, remap_fragment
from app.annotation_edits import AnnotationEditsMixin
from app.subgraph_edits import SubgraphEditsMixin
from app.commands import (AddNodesCommand, ConnectCommand, DisconnectCommand,
                          RemoveNodesCommand,
                          SetGroupsCommand, SetInputCommand, SetLayoutCommand, SetModeCommand,
                          SetTitleCommand)
from app.graph_model import UNSET, GraphModel

TextPrompt = Callable[[str, str, Callable[[str], None]], None]  # (what, current, on_done)
SEED_MAX = 2**32 - 1


class GraphEditor(AnnotationEditsMixin, SubgraphEditsMixin):
    def __init__(self, model: GraphModel, undo_stack: QUndoStack):
        self.model = model
        self.stack = undo_stack
        self.text_prompt: TextPrompt | None = None

    @property
    def workflow(self) -> Workflow:
        return self.model.workflow

    # ---- nodes --------------------------------------------------------------------------------
    def new_node(self, type_name: str, pos: tuple[float, float]) -> tuple[NodeInstance, dict]:
        """A node of `type_name` with every widget input set to its default (files stay explicit
        and reproducible), not yet in the document."""
        spec = self.model.registry.spec(type_name)
        if spec is None:
            raise KeyError(f"unknown node type {type_name!r}")
        inputs = {i.name: i.default for i in spec.inputs if i.has_widget and i.default is not None}
        node_id = fresh_id(spec.name, set(self.workflow.nodes))
        return NodeInstance(node_id, spec.name, inputs), {"pos": [round(pos[0]), round(pos[1])]}

    def add_node(self, type_name: str, pos: tuple[float, float]) -> str:
        node, layout = self.new_node(type_name, pos)
        spec = self.model.registry.spec(type_name)
        self.stack.push(AddNodesCommand(self.model, [(node, layout)], text=f"Add {spec.title}"))
        return node.id

    def add_node_connected(self, type_name: str, pos: tuple[float, float], node_id: str,
                           socket: str, from_output: bool) -> str | None:
        """Add a node and wire its first compatible socket to (node_id, socket): the result of
        dropping a wire on empty canvas and picking from the filtered palette."""
        node, layout = self.new_node(type_name, pos)
        spec = self.model.registry.spec(type_name)
        other = self.model.spec(node_id)
        if other is None:
            return None
        link = None
        if from_output:
            out = other.output(socket)
            for ispec in spec.inputs:
                if out is not None and can_connect(out.type, ispec.type)[0]:
                    link = Link(node_id, socket, node.id, ispec.name)
                    break
        else:
            inp = other.input(socket)
            for ospec in spec.outputs:
                if inp is not None and can_connect(ospec.type, inp.type)[0]:
                    link = Link(node.id, ospec.name, node_id, socket)
                    break
        self.stack.beginMacro(f"Add {spec.title}")
        self.stack.push(AddNodesCommand(self.model, [(node, layout)]))
        if link is not None:
            self.stack.push(ConnectCommand(self.model, link))
        self.stack.endMacro()
        return node.id

    def delete(self, node_ids: list[str], links: list[Link] = ()) -> None:
        links = [l for l in links if l in self.workflow.links and
                 l.from_node not in node_ids and l.to_node not in node_ids]
        if not node_ids and not links:
            return
        self.stack.beginMacro("Delete")
        for link in links:
            self.stack.push(DisconnectCommand(self.model, link))
        if node_ids:
            self.stack.push(RemoveNodesCommand(self.model, list(node_ids)))
        self.stack.endMacro()

    # ---- links --------------------------------------------------------------------------------
    def check_connect(self, from_node: str, from_output: str, to_node: str, to_input: str) -> tuple[bool, str]:
        """Whether the link is allowed, with the reason shown on the canvas when not."""
        if from_node == to_node:
            return False, "a node cannot feed itself"
        src, dst = self.model.spec(from_node), self.model.spec(to_node)
        if src is not None and dst is not None:
            out, inp = src.output(from_output), dst.input(to_input)
            if out is None or inp is None:
                return False, "unknown socket"
            ok, why = can_connect(out.type, inp.type)
            if not ok:
                return False, why
        if from_node in self._downstream(to_node):
            return False, "would create a cycle"
        return True, ""

    def connect(self, from_node: str, from_output: str, to_node: str, to_input: str) -> tuple[bool, str]:
        ok, why = self.check_connect(from_node, from_output, to_node, to_input)
        if ok:
            link = Link(from_node, from_output, to_node, to_input)
            if link not in self.workflow.links:
                self.stack.push(ConnectCommand(self.model, link))
        return ok, why

    def disconnect(self, link: Link) -> None:
        if link in self.workflow.links:
            self.stack.push(DisconnectCommand(self.model, link))

    def _downstream(self, node_id: str) -> set[str]:
        return GraphIndex(self.workflow).downstream([node_id])

    # ---- values -------------------------------------------------------------------------------
    def set_input(self, node_id: str, name: str, value: Any, merge_key: object | None = None) -> None:
        if self.model.node(node_id).inputs.get(name, UNSET) == value and merge_key is None:
            return
        self.stack.push(SetInputCommand(self.model, node_id, name, value, merge_key))

    # ---- seed controls (app.seed_control) ---------------------------------------------------------
    def seed_mode(self, node_id: str, input_name: str) -> str:
        return seed_control.mode_of(self.model.layout_of(node_id), input_name)

    def set_seed_mode(self, node_id: str, input_name: str, mode: str) -> None:
        """Set what happens to a seed input after each queued run (one undo step)."""
        if mode not in seed_control.MODES or self.seed_mode(node_id, input_name) == mode:
            return
        entry = self.model.layout_of(node_id)
        controls, randomize = seed_control.layout_values(entry, input_name, mode)
        self.stack.beginMacro(f"Seed control: {mode}")
        for key, value in (("seed_control", controls), ("randomize", randomize)):
            if entry.get(key, UNSET) != (UNSET if value is None else value):
                self.stack.push(SetLayoutCommand(self.model, key, {node_id: UNSET if value is None else value}))
        self.stack.endMacro()

    def cycle_seed_mode(self, node_id: str, input_name: str) -> str:
        """The canvas control: fixed -> randomize -> increment -> decrement -> fixed."""
        mode = seed_control.next_mode(self.seed_mode(node_id, input_name))
        self.set_seed_mode(node_id, input_name, mode)
        return mode

    def toggle_randomize(self, node_id: str, input_name: str) -> None:
        """Randomize on, or back to fixed."""
        on = self.seed_mode(node_id, input_name) == "randomize"
        self.set_seed_mode(node_id, input_name, "fixed" if on else "randomize")

    def apply_seed_controls(self, rng: random.Random | None = None) -> int:
        """Apply every seed input's control (increment, decrement, randomize) once, as one undo
        step; called after a run was queued. Linked seeds are left alone. Returns how many changed."""
        rng = rng or random.Random()
        changes = []
        for nid in self.workflow.nodes:
            spec = self.model.spec(nid)
            if spec is None:
                continue
            entry = self.model.layout_of(nid)
            names = set(entry.get("seed_control") or ()) | set(entry.get("randomize") or ())
            for name in sorted(names):
                ispec = spec.input(name)
                if ispec is None or self.model.link_into(nid, name) is not None:
                    continue
                lo, hi = seed_control.bounds(ispec)
                value = seed_control.next_value(seed_control.mode_of(entry, name),
                                                self.model.input_value(nid, name), lo, hi, rng)
                if value is not None:
                    changes.append((nid, name, value))
        if changes:
            self.stack.beginMacro("Seed controls after run")
            for nid, name, value in changes:
                self.stack.push(SetInputCommand(self.model, nid, name, value))
            self.stack.endMacro()
        return len(changes)

    randomize_seeds = apply_seed_controls  # the name earlier callers use

    # ---- modes, collapse, titles ----------------------------------------------------------------
    def toggle_mode(self, node_ids: list[str], mode: str) -> None:
        """Set `mode` on the nodes, or back to normal when all of them already have it."""
        ids = [n for n in node_ids if n in self.workflow.nodes]
        if not ids:
            return
        target = "normal" if all(self.model.node(n).mode == mode for n in ids) else mode
        label = {"bypass": "Bypass", "mute": "Mute", "normal": "Enable"}[target]
        self.stack.push(SetModeCommand(self.model, ids, target, label))

    def toggle_collapsed(self, node_ids: list[str]) -> None:
        ids = [n for n in node_ids if n in self.workflow.nodes]
        if not ids:
            return
        collapse = not all(self.model.layout_of(n).get("collapsed") for n in ids)
        self.stack.push(SetLayoutCommand(self.model, "collapsed",
                                         {n: True if collapse else UNSET for n in ids},
                                         "Collapse" if collapse else "Expand"))

    def set_color(self, node_ids: list[str], color: str | None) -> None:
        """Title colour of the nodes (layout only); None returns to the category colour."""
        ids = [n for n in node_ids if n in self.workflow.nodes]
        if ids:
            self.stack.push(SetLayoutCommand(self.model, "color", {n: color or UNSET for n in ids},
                                             "Node colour"))

    def set_title(self, node_id: str, title: str) -> None:
        spec = self.model.spec(node_id)
        title = title.strip()
        if spec is not None and title == spec.title:
            title = ""
        if (self.model.node(node_id).title or "") != title:
            self.stack.push(SetTitleCommand(self.model, node_id, title or None))

    def rename_node(self, node_id: str) -> None:
        if self.text_prompt is None:
            return
        node, spec = self.model.node(node_id), self.model.spec(node_id)
        current = node.title or (spec.title if spec else node.type)
        self.text_prompt(f"node:{node_id}", current, lambda text: self.set_title(node_id, text))

    # ---- copy, paste, duplicate -------------------------------------------------------------------
    def fragment(self, node_ids: list[str]) -> dict[str, Any]:
        return make_fragment(self.workflow, node_ids)

    def paste(self, fragment: Workflow, at: tuple[float, float] | None = None,
              keep_input_links: bool = False, text: str = "Paste") -> list[str]:
        """Insert a fragment with its top-left at `at` (or offset by 30 from where it was)."""
        if not fragment.nodes:
            return []
        ox, oy = fragment_origin(fragment)
        offset = (at[0] - ox, at[1] - oy) if at is not None else (30.0, 30.0)
        nodes, links = remap_fragment(fragment, self.workflow, offset, keep_input_links)
        self.stack.push(AddNodesCommand(self.model, nodes, links, text))
        return [n.id for n, _ in nodes]

    def duplicate(self, node_ids: list[str]) -> list[str]:
        from engine.document import workflow_from_json
        frag = workflow_from_json(self.fragment(node_ids))
        return self.paste(frag, None, keep_input_links=True, text="Duplicate")

    # ---- groups -------------------------------------------------------------------------------
    def group_nodes(self, rect: QRectF, title: str = "Group", color: str = "") -> int:
        groups = list(self.model.groups())
        pad, head = 20.0, 40.0
        groups.append({"title": title, "color": color or "#3f5f7f",
                       "rect": [round(rect.x() - pad), round(rect.y() - head),
                                round(rect.width() + 2 * pad), round(rect.height() + head + pad)]})
        self.stack.push(SetGroupsCommand(self.model, groups, "Add group"))
        return len(groups) - 1

    def remove_group(self, index: int) -> None:
        groups = list(self.model.groups())
        if 0 <= index < len(groups):
            del groups[index]
            self.stack.push(SetGroupsCommand(self.model, groups, "Remove group"))

    def edit_group(self, index: int, **changes: Any) -> None:
        groups = [dict(g) for g in self.model.groups()]
        if 0 <= index < len(groups):
            groups[index].update(changes)
            self.stack.push(SetGroupsCommand(self.model, groups, "Edit group"))

    def rename_group(self, index: int) -> None:
        groups = self.model.groups()
        if self.text_prompt is None or not 0 <= index < len(groups):
            return
        self.text_prompt(f"group:{index}", str(groups[index].get("title", "Group")),
                         lambda text: self.edit_group(index, title=text.strip() or "Group"))
