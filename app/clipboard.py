"""Copy and paste of node fragments, within a window, between windows and as plain JSON text.

A fragment is an ordinary workflow document holding only the copied nodes, the links among them,
their layout and any links feeding them from outside (`meta.external_links`, used only by
"paste with input links"). It is put on the clipboard both under our MIME type and as text, so
it can be pasted into another Reelgraph window, into a text editor, or from a text editor back.

Invariant: pasting never reuses an existing node id; ids are remapped and every link follows.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from PySide6.QtCore import QMimeData
from PySide6.QtGui import QGuiApplication

from engine.document import Link, NodeInstance, Workflow, loads_workflow
from engine.errors import WorkflowError

MIME_TYPE = "application/x-reelgraph-workflow"


def make_fragment(workflow: Workflow, node_ids: list[str]) -> dict[str, Any]:
    """A workflow document with `node_ids`, their internal links, layout and external inputs."""
    chosen = [n for n in node_ids if n in workflow.nodes]
    part = Workflow(meta={"fragment": True})
    layout_nodes = workflow.layout.get("nodes", {}) if isinstance(workflow.layout.get("nodes"), dict) else {}
    for nid in chosen:
        part.nodes[nid] = copy.deepcopy(workflow.nodes[nid])
        if isinstance(layout_nodes.get(nid), dict):
            part.layout.setdefault("nodes", {})[nid] = copy.deepcopy(layout_nodes[nid])
    inside = set(chosen)
    part.links = [l for l in workflow.links if l.from_node in inside and l.to_node in inside]
    external = [l.to_json() for l in workflow.links if l.to_node in inside and l.from_node not in inside]
    if external:
        part.meta["external_links"] = external
    return part.to_json()


def parse_fragment(text: str) -> Workflow:
    """A fragment (or a whole workflow) from clipboard text. Raises WorkflowError."""
    return loads_workflow(text, source="clipboard", allow_newer=True)


def remap_fragment(fragment: Workflow, target: Workflow, offset: tuple[float, float],
                   keep_input_links: bool = False
                   ) -> tuple[list[tuple[NodeInstance, dict[str, Any]]], list[Link]]:
    """New nodes (with layout, moved by `offset`) and links for pasting `fragment` into `target`.

    Ids that clash get fresh ones; `keep_input_links` also reconnects links that fed the copied
    nodes from nodes that still exist in `target`.
    """
    taken = set(target.nodes)
    mapping: dict[str, str] = {}
    nodes = []
    layout_nodes = fragment.layout.get("nodes", {}) if isinstance(fragment.layout.get("nodes"), dict) else {}
    for nid, node in fragment.nodes.items():
        new_id = nid
        if new_id in taken:
            new_id = fresh_id(node.type, taken)
        taken.add(new_id)
        mapping[nid] = new_id
        clone = copy.deepcopy(node)
        clone.id = new_id
        layout = copy.deepcopy(layout_nodes.get(nid)) if isinstance(layout_nodes.get(nid), dict) else {}
        pos = layout.get("pos") if isinstance(layout.get("pos"), list) and len(layout["pos"]) == 2 else [0, 0]
        layout["pos"] = [float(pos[0]) + offset[0], float(pos[1]) + offset[1]]
        nodes.append((clone, layout))
    links = [Link(mapping[l.from_node], l.from_output, mapping[l.to_node], l.to_input)
             for l in fragment.links if l.from_node in mapping and l.to_node in mapping]
    if keep_input_links:
        for lj in fragment.meta.get("external_links", []) or []:
            try:
                src, out = lj["from"]["node"], lj["from"]["output"]
                dst, inp = lj["to"]["node"], lj["to"]["input"]
            except (KeyError, TypeError):
                continue
            if src in target.nodes and dst in mapping:
                links.append(Link(src, out, mapping[dst], inp))
    return nodes, links


def fresh_id(hint: str, taken: set[str]) -> str:
    """`<type>N` with the first N not in `taken` (the document's own id convention)."""
    base = "".join(c for c in hint.lower() if c.isalnum() or c == "_") or "node"
    n = 1
    while f"{base}{n}" in taken:
        n += 1
    return f"{base}{n}"


def fragment_origin(fragment: Workflow) -> tuple[float, float]:
    """Top-left of the fragment's node positions (0, 0 when it has none)."""
    xs, ys = [], []
    for entry in (fragment.layout.get("nodes") or {}).values():
        pos = entry.get("pos") if isinstance(entry, dict) else None
        if isinstance(pos, list) and len(pos) == 2:
            xs.append(float(pos[0]))
            ys.append(float(pos[1]))
    return (min(xs), min(ys)) if xs else (0.0, 0.0)


def put_on_clipboard(fragment: dict[str, Any]) -> None:
    text = json.dumps(fragment, indent=2, ensure_ascii=False)
    mime = QMimeData()
    mime.setData(MIME_TYPE, text.encode("utf-8"))
    mime.setText(text)
    QGuiApplication.clipboard().setMimeData(mime)


def read_clipboard() -> Workflow | None:
    """The fragment on the clipboard, or None when it holds no Reelgraph nodes."""
    mime = QGuiApplication.clipboard().mimeData()
    if mime is None:
        return None
    if mime.hasFormat(MIME_TYPE):
        text = bytes(mime.data(MIME_TYPE)).decode("utf-8", "replace")
    elif mime.hasText():
        text = mime.text()
    else:
        return None
    try:
        return parse_fragment(text)
    except WorkflowError:
        return None
