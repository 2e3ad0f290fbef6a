"""Dragging a wire: from an output or a free input to another socket, or lifting an existing wire
off an input to re-link or detach it.

While dragging, compatible sockets glow and the rest dim; over a socket that refuses, the wire
turns red and dashed and the canvas shows the reason ("needs VIDEO, got LATENT"). Dropping on
empty canvas opens the palette filtered to nodes that fit and wires the new node in — unless the
wire was lifted off an input, in which case dropping it on empty canvas detaches it (ComfyUI).

Invariant: nothing is edited until release; a cancelled drag leaves the document untouched.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import QPointF

from engine.document import Link
from engine.sockets import can_connect
from app import theme
from app.commands import ConnectCommand, DisconnectCommand
from app.link_item import DragWireItem
from app.socket_item import SocketSlot, check_link

if TYPE_CHECKING:
    from app.view import GraphView


class LinkDrag:
    def __init__(self, view: "GraphView", node_id: str, slot: SocketSlot, lifted: Link | None = None):
        """`node_id`/`slot`: the fixed end of the wire. `lifted`: the link picked up off an input
        (then the fixed end is that link's output)."""
        self.view = view
        self.scene = view.gscene
        self.node_id = node_id
        self.slot = slot
        self.lifted = lifted
        self.target: tuple[str, SocketSlot] | None = None
        self.reason = ""
        self.wire = DragWireItem(theme.socket_color(slot.type_name))
        self.scene.addItem(self.wire)
        if lifted is not None and lifted in self.scene.links:
            self.scene.links[lifted].setVisible(False)
        self.scene.drag_hint = self._hint
        self._refresh_nodes()

    # ---- compatibility --------------------------------------------------------------------------
    def _pair(self, node_id: str, slot: SocketSlot) -> tuple[str, str, str, str]:
        """(from_node, from_output, to_node, to_input) for joining the fixed end to `slot`."""
        if self.slot.is_output:
            return self.node_id, self.slot.name, node_id, slot.name
        return node_id, slot.name, self.node_id, self.slot.name

    def check(self, node_id: str, slot: SocketSlot) -> tuple[bool, str]:
        ok, why = check_link(self.slot, slot)
        if not ok:
            return ok, why
        return self.scene.editor.check_connect(*self._pair(node_id, slot))

    def _hint(self, node_id: str, slot: SocketSlot) -> int:
        if slot.is_output == self.slot.is_output or node_id == self.node_id:
            return 0
        out, inp = (self.slot, slot) if self.slot.is_output else (slot, self.slot)
        return 1 if can_connect(out.socket_type, inp.socket_type)[0] else -1

    def _refresh_nodes(self) -> None:
        for item in self.scene.nodes.values():
            item.update()

    # ---- gesture ------------------------------------------------------------------------------
    def move(self, scene_pos: QPointF) -> None:
        fixed = self.scene.nodes[self.node_id].socket_scene_pos(self.slot.name, self.slot.is_output)
        end = scene_pos
        self.target, self.reason = None, ""
        hit = self.scene.socket_at(scene_pos)
        if hit is not None and hit[0].node_id != self.node_id:
            item, slot = hit
            ok, why = self.check(item.node_id, slot)
            if ok:
                self.target = (item.node_id, slot)
                end = item.socket_scene_pos(slot.name, slot.is_output)  # snap onto the socket
            else:
                self.reason = why
        self.wire.set_ok(not self.reason)
        if self.slot.is_output:
            self.wire.set_ends(fixed, end)
        else:
            self.wire.set_ends(end, fixed)
        if self.reason:
            self.view.show_toast(self.reason, scene_pos)
        else:
            self.view.hide_toast()

    def finish(self, scene_pos: QPointF) -> None:
        self.move(scene_pos)
        self._cleanup()
        editor, stack, model = self.scene.editor, self.scene.undo_stack, self.scene.model
        if self.target is not None:
            from_node, from_output, to_node, to_input = self._pair(*self.target)
            new = Link(from_node, from_output, to_node, to_input)
            if self.lifted is not None and self.lifted != new:
                stack.beginMacro("Re-link")
                stack.push(DisconnectCommand(model, self.lifted))
                stack.push(ConnectCommand(model, new))
                stack.endMacro()
            elif self.lifted is None:
                editor.connect(from_node, from_output, to_node, to_input)
            return
        if self.reason:
            self.view.show_toast(self.reason, scene_pos, seconds=2.5)
            self.view.status_message.emit(f"Cannot link: {self.reason}")
            return
        if self.lifted is not None:
            editor.disconnect(self.lifted)  # dropped on empty canvas: detach
            return
        if self.scene.node_at(scene_pos) is None:
            self.view.open_palette_for_wire(scene_pos, self.node_id, self.slot)

    def cancel(self) -> None:
        self._cleanup()

    def _cleanup(self) -> None:
        self.view.hide_toast()
        self.scene.removeItem(self.wire)
        if self.lifted is not None and self.lifted in self.scene.links:
            self.scene.links[self.lifted].setVisible(True)
        self.scene.drag_hint = None
        self._refresh_nodes()
