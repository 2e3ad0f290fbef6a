"""Edit verbs for layout-only canvas objects and wire surgery, mixed into app.editing.GraphEditor:
notes, reroute dots, inserting a node on a wire, and Tidy Up that respects groups.

Every verb is one undo step; notes and dots are replaced as whole lists (they are few)."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from engine.document import Link
from engine.sockets import can_connect
from app.annotations import link_key, link_of, note_rect, points_of, NOTE_DEFAULT_SIZE
from app.arrange import arrange
from app.commands import ConnectCommand, DisconnectCommand, MoveNodesCommand, SetGroupsCommand, SetLayoutListCommand
from app.group_item import group_rect

if TYPE_CHECKING:
    from app.graph_model import GraphModel

GROUP_PAD, GROUP_HEAD = 20.0, 40.0  # the frame around its nodes (as app.editing.group_nodes)


class AnnotationEditsMixin:
    model: "GraphModel"

    # ---- notes --------------------------------------------------------------------------------
    def add_note(self, pos: tuple[float, float], text: str = "", title: str = "Note") -> int:
        notes = copy.deepcopy(self.model.layout_list("notes"))
        notes.append({"title": title, "text": text, "markdown": True,
                      "pos": [round(pos[0]), round(pos[1])], "size": list(NOTE_DEFAULT_SIZE)})
        self.stack.push(SetLayoutListCommand(self.model, "notes", notes, "Add note"))
        return len(notes) - 1

    def edit_note(self, index: int, **changes: Any) -> None:
        notes = copy.deepcopy(self.model.layout_list("notes"))
        if 0 <= index < len(notes) and isinstance(notes[index], dict) \
                and any(notes[index].get(k) != v for k, v in changes.items()):
            notes[index].update(changes)
            self.stack.push(SetLayoutListCommand(self.model, "notes", notes, "Edit note"))

    def edit_note_text(self, index: int, title: bool = False) -> None:
        notes = self.model.layout_list("notes")
        if self.text_prompt is None or not 0 <= index < len(notes):
            return
        key = "title" if title else "text"
        self.text_prompt(f"note{'-title' if title else ''}:{index}", str(notes[index].get(key) or ""),
                         lambda text: self.edit_note(index, **{key: text}))

    def remove_notes(self, indices: list[int]) -> None:
        notes = [n for i, n in enumerate(self.model.layout_list("notes")) if i not in set(indices)]
        if len(notes) != len(self.model.layout_list("notes")):
            self.stack.push(SetLayoutListCommand(self.model, "notes", notes, "Delete note"))

    # ---- reroute dots -------------------------------------------------------------------------
    def reroute_points(self, link: Link) -> list[tuple[float, float]]:
        for entry in self.model.layout_list("reroutes"):
            if link_of(entry) == link:
                return points_of(entry)
        return []

    def set_reroute_points(self, link: Link, points: list[tuple[float, float]], text: str) -> None:
        entries = [copy.deepcopy(e) for e in self.model.layout_list("reroutes") if link_of(e) != link]
        if points:
            entries.append({"link": link_key(link), "points": [[round(x), round(y)] for x, y in points]})
        self.stack.push(SetLayoutListCommand(self.model, "reroutes", entries, text))

    def add_reroute(self, link: Link, pos: tuple[float, float]) -> int:
        """A dot on `link` at `pos`, between the two neighbours where it lengthens the wire least."""
        points = self.reroute_points(link)
        ends = self._wire_ends(link)
        if ends is None:
            return -1
        chain = [ends[0], *points, ends[1]]

        def extra(k: int) -> float:
            (ax, ay), (bx, by) = chain[k], chain[k + 1]
            d = lambda p, q: ((p[0] - q[0]) ** 2 + (p[1] - q[1]) ** 2) ** 0.5  # noqa: E731
            return d((ax, ay), pos) + d(pos, (bx, by)) - d((ax, ay), (bx, by))
        k = min(range(len(chain) - 1), key=extra)
        points.insert(k, pos)
        self.set_reroute_points(link, points, "Add reroute dot")
        return k

    def remove_reroute(self, link: Link, index: int) -> None:
        points = self.reroute_points(link)
        if 0 <= index < len(points):
            del points[index]
            self.set_reroute_points(link, points, "Remove reroute dot")

    def remove_reroutes(self, dots: list[tuple[Link, int]]) -> None:
        entries = []
        for entry in self.model.layout_list("reroutes"):
            link = link_of(entry)
            kept = [p for k, p in enumerate(points_of(entry)) if (link, k) not in set(dots)]
            if kept:
                entries.append({"link": copy.deepcopy(entry["link"]), "points": [list(p) for p in kept]})
        self.stack.push(SetLayoutListCommand(self.model, "reroutes", entries, "Remove reroute dots"))

    def _wire_ends(self, link: Link) -> tuple[tuple[float, float], tuple[float, float]] | None:
        if link.from_node not in self.workflow.nodes or link.to_node not in self.workflow.nodes:
            return None
        return self.model.pos_of(link.from_node), self.model.pos_of(link.to_node)

    def store_annotation_positions(self, notes: dict[int, tuple[float, float]],
                                   dots: dict[tuple[Link, int], tuple[float, float]],
                                   macro: bool = False) -> None:
        """After a drag: where notes and dots were dropped (one undo step)."""
        if notes:
            moved = copy.deepcopy(self.model.layout_list("notes"))
            for i, (x, y) in notes.items():
                if 0 <= i < len(moved):
                    moved[i]["pos"] = [round(x), round(y)]
            self.stack.push(SetLayoutListCommand(self.model, "notes", moved, "Move note"))
        if dots:
            entries = []
            for entry in self.model.layout_list("reroutes"):
                link = link_of(entry)
                pts = [dots.get((link, k), p) for k, p in enumerate(points_of(entry))]
                entries.append({"link": copy.deepcopy(entry["link"]), "points": [[round(x), round(y)] for x, y in pts]})
            self.stack.push(SetLayoutListCommand(self.model, "reroutes", entries, "Move reroute dot"))

    def prune_reroutes(self) -> None:
        """Forget dots of wires that no longer exist (before saving; not an undo step)."""
        links = set(self.workflow.links)
        entries = self.model.layout_list("reroutes")
        kept = [e for e in entries if link_of(e) in links]
        if len(kept) != len(entries):
            if kept:
                self.workflow.layout["reroutes"] = kept
            else:
                self.workflow.layout.pop("reroutes", None)

    # ---- insert a node on a wire -----------------------------------------------------------------
    def insert_sockets(self, node_id: str, link: Link) -> tuple[str, str] | None:
        """(input, output) of `node_id` that can take and give what `link` carries, or None."""
        spec, src, dst = (self.model.spec(node_id), self.model.spec(link.from_node),
                          self.model.spec(link.to_node))
        out = src.output(link.from_output) if src else None
        inp = dst.input(link.to_input) if dst else None
        if spec is None or out is None or inp is None:
            return None
        first_in = next((i.name for i in spec.inputs if can_connect(out.type, i.type)[0]), None)
        first_out = next((o.name for o in spec.outputs if can_connect(o.type, inp.type)[0]), None)
        return (first_in, first_out) if first_in and first_out else None

    def insert_on_wire(self, node_id: str, link: Link) -> bool:
        """Put `node_id` between the two ends of `link` (one undo step, or part of the caller's)."""
        sockets = self.insert_sockets(node_id, link)
        if sockets is None or link not in self.workflow.links:
            return False
        self.stack.beginMacro("Insert node on wire")
        self.stack.push(DisconnectCommand(self.model, link))
        self.stack.push(ConnectCommand(self.model, Link(link.from_node, link.from_output, node_id, sockets[0])))
        self.stack.push(ConnectCommand(self.model, Link(node_id, sockets[1], link.to_node, link.to_input)))
        self.stack.endMacro()
        return True

    # ---- tidy up ------------------------------------------------------------------------------
    def tidy(self, node_ids: list[str], sizes: dict[str, tuple[float, float]]) -> None:
        """Arrange the nodes in dependency columns without overlaps, each group's nodes among
        themselves inside their frame (grown to fit them) — one undo step."""
        ids = [n for n in node_ids if n in self.workflow.nodes]
        if len(ids) < 2:
            return
        groups = copy.deepcopy(self.model.groups())
        rects = [group_rect(g) if isinstance(g, dict) else None for g in groups]
        members: dict[int | None, list[str]] = {}
        for nid in ids:
            x, y = self.model.pos_of(nid)
            w, h = sizes[nid]
            cx, cy = x + w / 2, y + h / 2
            inside = [k for k, r in enumerate(rects) if r is not None and r.contains(cx, cy)]
            # the smallest frame holding the node's centre owns it (frames may nest)
            owner = min(inside, key=lambda k: rects[k].width() * rects[k].height()) if inside else None
            members.setdefault(owner, []).append(nid)
        old = {n: self.model.pos_of(n) for n in ids}
        new: dict[str, tuple[float, float]] = {}
        for owner, nodes in members.items():
            placed = arrange(nodes, self.workflow.links, sizes, old)
            if owner is not None:  # keep the column block inside its frame, under the title
                r = rects[owner]
                x0 = min(p[0] for p in placed.values())
                y0 = min(p[1] for p in placed.values())
                dx, dy = max(0.0, r.x() + GROUP_PAD - x0), max(0.0, r.y() + GROUP_HEAD - y0)
                placed = {n: (round(p[0] + dx), round(p[1] + dy)) for n, p in placed.items()}
                right = max(p[0] + sizes[n][0] for n, p in placed.items()) + GROUP_PAD
                bottom = max(p[1] + sizes[n][1] for n, p in placed.items()) + GROUP_PAD
                groups[owner]["rect"] = [round(r.x()), round(r.y()), round(max(r.right(), right) - r.x()),
                                         round(max(r.bottom(), bottom) - r.y())]
            new.update(placed)
        moves = {n: (old[n], new[n]) for n in ids if old[n] != new[n]}
        changed_groups = groups != self.model.groups()
        if not moves and not changed_groups:
            return
        self.stack.beginMacro("Tidy up")
        if moves:
            self.stack.push(MoveNodesCommand(self.model, moves, "Tidy up"))
        if changed_groups:
            self.stack.push(SetGroupsCommand(self.model, groups, "Tidy up"))
        self.stack.endMacro()
