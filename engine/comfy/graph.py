"""ComfyUI graphs read into one plain shape, whichever format they came in.

`parse_ui` reads the UI workflow (format 0.4 with array links, 1.0 with object links), flattens
subgraph definitions (`definitions.subgraphs`, nested ones too), removes Reroute nodes and the
front end's PrimitiveNode (whose value goes onto each widget it feeds) and re-links through them.
`parse_api` reads the API prompt (`{id: {class_type, inputs}}`, links as `[node_id, slot]`). Both
give a `CGraph` of `CNode`s whose inputs are keyed by name: widget values by name (positional
`widgets_values` named through engine.comfy.widgets) and links as `Ref(node, slot)`; a linked
widget keeps no literal (the link wins). Structural damage is collected and raised as one
ComfyImportError listing every problem.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from engine.comfy.errors import ComfyImportError
from engine.comfy.widgets import MAX_WIDGET_VALUES, OUTPUTS, name_widgets

MAX_NODES = 100_000
MAX_SUBGRAPH_DEPTH = 8
_SG_IN, _SG_OUT = -10, -20  # the pseudo-nodes of a subgraph's inputs and outputs
MODES = {0: "normal", 2: "mute", 4: "bypass"}


@dataclass(frozen=True)
class Ref:
    """A link source: output `slot` of ComfyUI node `node`."""

    node: str
    slot: int


@dataclass
class CNode:
    """One ComfyUI node, inputs by name."""

    id: str
    type: str
    values: dict[str, Any] = field(default_factory=dict)
    links: dict[str, Ref] = field(default_factory=dict)
    controls: dict[str, str] = field(default_factory=dict)  # seed input -> control_after_generate
    mode: int = 0
    title: str | None = None
    ui: dict[str, Any] = field(default_factory=dict)  # pos, size, color, bgcolor, collapsed
    raw_widgets: Any = None
    known_widgets: bool = True
    output_names: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    reelgraph: Any = None  # `_meta.reelgraph` of an API prompt written by export-comfy

    def output_name(self, slot: int) -> str:
        names = self.output_names or list(OUTPUTS.get(self.type, ()))
        return names[slot] if 0 <= slot < len(names) and names[slot] else f"output_{slot}"


@dataclass
class CGraph:
    """A flattened ComfyUI graph."""

    kind: str  # "ui" or "api"
    version: str
    nodes: dict[str, CNode] = field(default_factory=dict)
    groups: list[dict[str, Any]] = field(default_factory=list)
    view: dict[str, Any] | None = None
    notes: list[tuple[str | None, str | None, str]] = field(default_factory=list)  # (id, type, msg)

    def consumers(self) -> dict[tuple[str, int], list[tuple[str, str]]]:
        """(node, output slot) -> [(consumer node, input name)]."""
        out: dict[tuple[str, int], list[tuple[str, str]]] = {}
        for node in self.nodes.values():
            for name, ref in node.links.items():
                out.setdefault((ref.node, ref.slot), []).append((node.id, name))
        return out


# ---- detection -------------------------------------------------------------------------------

def looks_like_ui(data: Any) -> bool:
    return isinstance(data, dict) and "nodes" in data and "links" in data


def looks_like_api(data: Any) -> bool:
    return (isinstance(data, dict) and bool(data)
            and all(isinstance(v, dict) and isinstance(v.get("class_type"), str) for v in data.values()))


# ---- API prompt --------------------------------------------------------------------------------

def parse_api(data: dict[str, Any], source: str | None = None) -> CGraph:
    graph = CGraph("api", "api")
    problems: list[str] = []
    if len(data) > MAX_NODES:
        raise ComfyImportError(f"{len(data)} nodes; at most {MAX_NODES} are read", source)
    for nid, nj in data.items():
        inputs = nj.get("inputs", {})
        if not isinstance(inputs, dict):
            problems.append(f"node {nid}: \"inputs\" must be an object")
            continue
        node = CNode(str(nid), nj["class_type"])
        meta = nj.get("_meta")
        if isinstance(meta, dict) and isinstance(meta.get("title"), str):
            node.title = meta["title"]
        if isinstance(meta, dict) and isinstance(meta.get("reelgraph"), dict):
            node.reelgraph = meta["reelgraph"]
        for name, value in inputs.items():
            if _is_api_link(value):
                node.links[name] = Ref(str(value[0]), int(value[1]))
            else:
                node.values[name] = value
        graph.nodes[node.id] = node
    for node in graph.nodes.values():
        for name, ref in node.links.items():
            if ref.node not in graph.nodes:
                problems.append(f"node {node.id} ({node.type}): input {name!r} links to missing node {ref.node}")
    if problems:
        raise ComfyImportError(problems, source)
    return graph


def _is_api_link(value: Any) -> bool:
    return (isinstance(value, list) and len(value) == 2 and isinstance(value[0], (str, int))
            and not isinstance(value[0], bool) and isinstance(value[1], int)
            and not isinstance(value[1], bool))


# ---- UI workflow -------------------------------------------------------------------------------

@dataclass
class _Raw:
    """A UI node before naming: its JSON, its input slot names and what feeds each slot."""

    id: str
    json: dict[str, Any]
    type: str
    slot_names: list[str]
    feeds: dict[int, tuple[str, int]] = field(default_factory=dict)  # input slot -> (src, slot)
    widget_overrides: dict[str, Any] = field(default_factory=dict)  # promoted subgraph widgets


class _Flattener:
    def __init__(self, data: dict[str, Any], source: str | None):
        self.source = source
        self.problems: list[str] = []
        self.notes: list[tuple[str | None, str | None, str]] = []
        self.raw: dict[str, _Raw] = {}
        # (node, output slot) -> (node, input slot): outputs that just pass an input on
        self.through: dict[tuple[str, int], tuple[str, int]] = {}
        defs = data.get("definitions")
        subs = defs.get("subgraphs") if isinstance(defs, dict) else None
        self.subgraphs: dict[str, dict[str, Any]] = {}
        if subs is not None and not isinstance(subs, list):
            self.problems.append('"definitions.subgraphs" must be a list')
        for sg in subs or []:
            if isinstance(sg, dict) and isinstance(sg.get("id"), str):
                self.subgraphs[sg["id"]] = sg
            else:
                self.problems.append("a subgraph definition must be an object with a string \"id\"")

    def add_graph(self, nodes: Any, links: Any, prefix: str, depth: int, stack: tuple[str, ...]) -> None:
        if not isinstance(nodes, list):
            self.problems.append(f'{prefix or "top level"}: "nodes" must be a list')
            return
        if not isinstance(links, list):
            self.problems.append(f'{prefix or "top level"}: "links" must be a list')
            links = []
        local: dict[str, _Raw] = {}
        for nj in nodes:
            if len(self.raw) + len(local) >= MAX_NODES:
                self.problems.append(f"more than {MAX_NODES} nodes; not read further")
                return
            raw = self._node(nj, prefix)
            if raw is not None:
                if raw.id in local or raw.id in self.raw:
                    self.problems.append(f"node id {raw.id} appears twice")
                    continue
                local[raw.id] = raw
        self.raw.update(local)
        for i, lj in enumerate(links):
            link = _link_tuple(lj)
            if link is None:
                self.problems.append(f"{prefix or ''}link #{i}: must be [id, from_node, from_slot, "
                                     "to_node, to_slot, type] or an object with origin_id/target_id")
                continue
            src, sslot, dst, dslot = link
            src_id = f"{prefix}{src}" if src != _SG_IN else f"{prefix}{_SG_IN}"
            dst_id = f"{prefix}{dst}" if dst != _SG_OUT else f"{prefix}{_SG_OUT}"
            if src != _SG_IN and src_id not in self.raw:
                self.problems.append(f"link #{i}: from node {src}, which does not exist")
                continue
            if dst != _SG_OUT and dst_id not in self.raw:
                self.problems.append(f"link #{i}: to node {dst}, which does not exist")
                continue
            if dst == _SG_OUT:  # subgraph output slot dslot is fed by src
                self.raw.setdefault(dst_id, _Raw(dst_id, {}, "<subgraph outputs>", []))
            target = self.raw[dst_id]
            if dslot in target.feeds and target.feeds[dslot] != (src_id, sslot):
                self.notes.append((dst_id, target.type, f"two links feed input slot {dslot}; the later one kept"))
            target.feeds[dslot] = (src_id, sslot)
        for raw in list(local.values()):
            if raw.type == "Reroute":
                self.through[(raw.id, 0)] = (raw.id, 0)
            elif raw.type in self.subgraphs:
                self._expand(raw, prefix, depth, stack)

    def _expand(self, inst: _Raw, prefix: str, depth: int, stack: tuple[str, ...]) -> None:
        sg = self.subgraphs[inst.type]
        if inst.type in stack:
            self.problems.append(f"subgraph {sg.get('name') or inst.type!r} contains itself")
            return
        if depth >= MAX_SUBGRAPH_DEPTH:
            self.problems.append(f"subgraphs nested more than {MAX_SUBGRAPH_DEPTH} deep")
            return
        inner = f"{inst.id}:"
        inputs = sg.get("inputs") if isinstance(sg.get("inputs"), list) else []
        outputs = sg.get("outputs") if isinstance(sg.get("outputs"), list) else []
        for k in range(len(inputs)):  # inner IN pseudo-node output k == instance input k
            self.through[(f"{inner}{_SG_IN}", k)] = (inst.id, k)
        for k in range(len(outputs)):  # instance output k == what feeds inner OUT input k
            self.through[(inst.id, k)] = (f"{inner}{_SG_OUT}", k)
        self.add_graph(sg.get("nodes"), sg.get("links", []), inner, depth + 1, (*stack, inst.type))
        self._promoted_widgets(inst, inner)
        groups = sg.get("groups")
        if isinstance(groups, list) and groups:
            self.notes.append((inst.id, "subgraph", f"{len(groups)} group(s) inside subgraph "
                               f"{sg.get('name') or inst.type!r} are not carried (the graph is flattened)"))
        self.notes.append((inst.id, "subgraph", f"subgraph {sg.get('name') or inst.type!r} flattened "
                           f"into its nodes (ids {inner}N)"))

    def _promoted_widgets(self, inst: _Raw, inner: str) -> None:
        """Values shown on the subgraph node itself (properties.proxyWidgets) win over the inner
        node's own, as in ComfyUI."""
        props = inst.json.get("properties")
        proxies = props.get("proxyWidgets") if isinstance(props, dict) else None
        values = inst.json.get("widgets_values")
        if not isinstance(proxies, list) or not isinstance(values, list):
            if values:
                self.notes.append((inst.id, "subgraph", "values on the subgraph node without "
                                   "proxyWidgets were not applied; the inner nodes' values are used"))
            return
        if len(proxies) != len(values):
            self.notes.append((inst.id, "subgraph", "promoted widgets and their values disagree "
                               "in number; the inner nodes' values are used"))
            return
        for proxy, value in zip(proxies, values):
            if (isinstance(proxy, list) and len(proxy) == 2 and str(proxy[0]) != "-1"
                    and f"{inner}{proxy[0]}" in self.raw and isinstance(proxy[1], str)):
                self.raw[f"{inner}{proxy[0]}"].widget_overrides[proxy[1]] = value

    def _node(self, nj: Any, prefix: str) -> _Raw | None:
        if not isinstance(nj, dict):
            self.problems.append(f"{prefix}a node must be an object")
            return None
        nid, ntype = nj.get("id"), nj.get("type")
        if isinstance(nid, bool) or not isinstance(nid, (int, str)) or str(nid) == "":
            self.problems.append(f"{prefix}node without a valid \"id\"")
            return None
        if not isinstance(ntype, str) or not ntype:
            self.problems.append(f"node {prefix}{nid}: \"type\" must be a non-empty string")
            return None
        inputs = nj.get("inputs", [])
        if not isinstance(inputs, list):
            self.problems.append(f"node {prefix}{nid} ({ntype}): \"inputs\" must be a list")
            return None
        names = []
        for inp in inputs:
            widget = inp.get("widget") if isinstance(inp, dict) else None
            if isinstance(widget, dict) and isinstance(widget.get("name"), str):
                names.append(widget["name"])
            elif isinstance(inp, dict) and isinstance(inp.get("name"), str):
                names.append(inp["name"])
            else:
                names.append("")
        wv = nj.get("widgets_values")
        if isinstance(wv, list) and len(wv) > MAX_WIDGET_VALUES:
            self.problems.append(f"node {prefix}{nid} ({ntype}): {len(wv)} widget values; at most "
                                 f"{MAX_WIDGET_VALUES} are read")
            return None
        return _Raw(f"{prefix}{nid}", nj, ntype, names)

    # ---- resolution ---------------------------------------------------------------------------
    def source_of(self, node: str, slot: int) -> tuple[str, int] | None:
        """The real output feeding input `slot` of `node`, through reroutes and subgraph edges."""
        seen: set[tuple[str, int]] = set()
        feed = self.raw[node].feeds.get(slot) if node in self.raw else None
        while feed is not None and feed in self.through:
            if feed in seen:
                self.problems.append(f"node {node}: its input is fed by a loop of reroutes or "
                                     "subgraph edges")
                return None
            seen.add(feed)
            via, via_slot = self.through[feed]
            feed = self.raw[via].feeds.get(via_slot) if via in self.raw else None
        return feed


def parse_ui(data: dict[str, Any], source: str | None = None) -> CGraph:
    version = data.get("version")
    kind_version = "1.0" if data.get("version") == 1 else str(version if version is not None else "0.4")
    flat = _Flattener(data, source)
    flat.add_graph(data.get("nodes"), data.get("links"), "", 0, ())
    graph = CGraph("ui", kind_version, notes=flat.notes)
    primitives: dict[str, _Raw] = {}
    for raw in flat.raw.values():
        if raw.type == "PrimitiveNode":
            primitives[raw.id] = raw
    for raw in flat.raw.values():
        if (raw.type in ("Reroute", "PrimitiveNode", "<subgraph outputs>") or raw.type in flat.subgraphs
                or raw.id.endswith(f":{_SG_IN}")):
            continue
        node = _named_node(raw)
        for slot, name in enumerate(raw.slot_names):
            src = flat.source_of(raw.id, slot)
            if src is None:
                continue
            if src[0] in primitives:  # the front end's PrimitiveNode: its value goes onto the widget
                pvals = primitives[src[0]].json.get("widgets_values")
                if isinstance(pvals, list) and pvals:
                    node.values[name] = pvals[0]
                    if len(pvals) > 1 and isinstance(pvals[1], str):
                        node.controls[name] = pvals[1]
                    node.notes.append(f"{name!r} took its value from a Primitive node")
                continue
            if not name:
                flat.problems.append(f"node {raw.id} ({raw.type}): link into input slot {slot}, "
                                     "which the node does not list")
                continue
            if name in node.values:
                del node.values[name]  # a linked widget: the link wins, the stale value goes
                node.controls.pop(name, None)
            node.links[name] = Ref(*src)
        graph.nodes[node.id] = node
    for raw in flat.raw.values():
        if raw.type == "Reroute":
            graph.notes.append((raw.id, "Reroute", "removed; its links now run directly"))
    for p in primitives:
        graph.notes.append((p, "PrimitiveNode", "removed; its value was written onto the widgets it fed"))
    if flat.problems:
        raise ComfyImportError(flat.problems, source)
    graph.groups = [g for g in data.get("groups", []) if isinstance(g, dict)] if isinstance(
        data.get("groups"), list) else []
    extra = data.get("extra")
    ds = extra.get("ds") if isinstance(extra, dict) else None
    graph.view = ds if isinstance(ds, dict) else None
    return graph


def _named_node(raw: _Raw) -> CNode:
    nj = raw.json
    mode = nj.get("mode", 0)
    node = CNode(raw.id, raw.type, mode=mode if isinstance(mode, int) and not isinstance(mode, bool) else 0)
    title = nj.get("title")
    node.title = title if isinstance(title, str) else None
    for key in ("pos", "size", "color", "bgcolor"):
        if key in nj:
            node.ui[key] = nj[key]
    flags = nj.get("flags")
    if isinstance(flags, dict) and flags.get("collapsed"):
        node.ui["collapsed"] = True
    outs = nj.get("outputs")
    if isinstance(outs, list):
        node.output_names = [o.get("name") if isinstance(o, dict) and isinstance(o.get("name"), str)
                             else "" for o in outs]
    node.raw_widgets = nj.get("widgets_values")
    named = name_widgets(raw.type, node.raw_widgets)
    if named is None:
        node.known_widgets = False
    else:
        node.values, node.controls, node.notes = named.values, named.controls, list(named.notes)
    for name, value in raw.widget_overrides.items():
        node.values[name] = value
    return node


def _link_tuple(lj: Any) -> tuple[int, int, int, int] | None:
    """(from node, from slot, to node, to slot) of a 0.4 array link or a 1.0 object link."""
    if isinstance(lj, list) and len(lj) >= 5:
        parts = lj[1:5]
    elif isinstance(lj, dict):
        parts = [lj.get("origin_id"), lj.get("origin_slot"), lj.get("target_id"), lj.get("target_slot")]
    else:
        return None
    out = []
    for p in parts:
        if isinstance(p, bool):
            return None
        if isinstance(p, str) and p.lstrip("-").isdigit():
            p = int(p)
        if not isinstance(p, int):
            return None
        out.append(p)
    return out[0], out[1], out[2], out[3]
