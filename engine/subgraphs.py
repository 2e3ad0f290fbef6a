"""Subgraphs: a group of nodes folded into one node with the inputs and outputs its wires need.

A definition (`engine.document.SubgraphDef`) lives in the workflow's `subgraphs` table; a node
`{"type": "Subgraph", "subgraph": "<id>"}` is an instance of it. Definitions may contain
instances of other definitions (never of themselves).

Invariants:
- The engine never runs an instance: `flatten` replaces every instance by its inner nodes (ids
  `<instance>/<inner>`, nested `a/b/c`) before planning. Node types, input values, modes and links
  are exactly those of the expanded graph, and signatures never read node ids, so a collapsed
  graph plans, runs and hits the cache exactly like its expanded graph.
- `collapse` then `expand` gives back the same nodes, values and links (ids too, when free).
- An instance's literal input value goes to every inner input the exposed input feeds; its mode
  (bypass / mute) applies to every inner node that is normal.
- Reusable subgraphs saved by the user are files in the user data dir (`library_dir()`), one
  definition with the definitions it uses; adding one copies them into the workflow.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any, Iterable

import platformdirs

from engine.document import (SUBGRAPH_TYPE, ExposedInput, ExposedOutput, Link, NodeInstance,
                             SubgraphDef, Workflow, atomic_write_text)
from engine.errors import Problem, WorkflowError
from engine.graph_index import GraphIndex
from engine.registry import NodeRegistry
from engine.schema import InputSpec, NodeSpec, OutputSpec
from engine.sockets import SocketType

MAX_DEPTH = 16  # nesting deeper than this is refused (a definition that uses itself never ends)
SEP = "/"  # flattened ids: <instance>/<inner>
LIBRARY_FORMAT = "reelgraph.subgraph"


# ---- the instance's sockets ------------------------------------------------------------------

def instance_spec(workflow: Workflow, def_id: str, registry: NodeRegistry,
                  _depth: int = 0) -> NodeSpec | None:
    """The NodeSpec an instance of `def_id` shows: each exposed input takes the spec of the first
    inner input it feeds (type, default, range, widget); each output the inner output's type."""
    defn = workflow.subgraphs.get(def_id)
    if defn is None or _depth > MAX_DEPTH:
        return None

    def inner_spec(node_id: str) -> NodeSpec | None:
        node = defn.nodes.get(node_id)
        if node is None:
            return None
        if node.subgraph is not None:
            return instance_spec(workflow, node.subgraph, registry, _depth + 1)
        return registry.spec(node.type)

    inputs = []
    for exposed in defn.inputs:
        node_id, name = exposed.targets[0]
        spec = inner_spec(node_id)
        ispec = spec.input(name) if spec else None
        if ispec is None:
            ispec = InputSpec(name, SocketType.ANY)
        inner_value = defn.nodes[node_id].inputs.get(name) if node_id in defn.nodes else None
        # optional: unlinked, the inner node keeps its own value (or its own link requirement
        # shows up, named, when the flattened graph is validated)
        inputs.append(dataclasses.replace(ispec, name=exposed.name, optional=True,
                                          default=ispec.default if inner_value is None else inner_value))
    outputs = []
    for exposed in defn.outputs:
        spec = inner_spec(exposed.node)
        ospec = spec.output(exposed.output) if spec else None
        outputs.append(OutputSpec(exposed.name, ospec.type if ospec else SocketType.ANY))
    is_output = any((s := inner_spec(n)) is not None and s.is_output for n in defn.nodes)
    return NodeSpec(SUBGRAPH_TYPE, "subgraphs", f"Subgraph {defn.title!r}: {len(defn.nodes)} nodes "
                    "inside. Expand it to edit them.", tuple(inputs), tuple(outputs),
                    is_output=is_output, display_name=defn.title)


# ---- expand and flatten ----------------------------------------------------------------------

def expand(workflow: Workflow, instance_id: str, keep_ids: bool = False,
           offset: tuple[float, float] | None = None) -> tuple[Workflow, dict[str, str]]:
    """A copy of `workflow` with the instance replaced by its inner nodes, and {inner id: new id}.
    New ids are `<instance>/<inner>`, or with `keep_ids` the inner ids where they are free.
    With `offset`, inner nodes get layout positions (their definition's, moved by `offset`)."""
    wf = workflow.copy()
    inst = wf.nodes.get(instance_id)
    if inst is None or inst.subgraph is None:
        raise WorkflowError(Problem("not_a_subgraph", "not a subgraph instance", instance_id))
    defn = wf.subgraphs.get(inst.subgraph)
    if defn is None:
        raise WorkflowError(Problem("unknown_subgraph", f"subgraph {inst.subgraph!r} is not defined",
                                    instance_id, inst.type))
    taken = set(wf.nodes) - {instance_id}
    ids: dict[str, str] = {}
    for inner_id in defn.nodes:
        new = inner_id if keep_ids else f"{instance_id}{SEP}{inner_id}"
        n = 2
        while new in taken:
            new, n = f"{inner_id}_{n}", n + 1
        taken.add(new)
        ids[inner_id] = new
    into = {l.to_input: l for l in wf.links if l.to_node == instance_id}
    outof = [l for l in wf.links if l.from_node == instance_id]
    wf.remove_node(instance_id)
    for inner_id, node in defn.nodes.items():
        clone = copy.deepcopy(node)
        clone.id = ids[inner_id]
        if inst.mode != "normal" and clone.mode == "normal":
            clone.mode = inst.mode
        wf.nodes[clone.id] = clone
        if offset is not None:
            entry = copy.deepcopy(defn.layout.get("nodes", {}).get(inner_id, {}))
            x, y = _xy(entry.get("pos"))
            entry["pos"] = [round(x + offset[0]), round(y + offset[1])]
            wf.layout.setdefault("nodes", {})[clone.id] = entry
    for link in defn.links:
        if link.from_node in ids and link.to_node in ids:
            wf.links.append(Link(ids[link.from_node], link.from_output, ids[link.to_node], link.to_input))
    for exposed in defn.inputs:
        source = into.get(exposed.name)
        for node_id, name in exposed.targets:
            if node_id not in ids:
                continue
            if source is not None:
                wf.connect(source.from_node, source.from_output, ids[node_id], name)
            elif exposed.name in inst.inputs:  # the instance's own value wins over the inner one
                wf.nodes[ids[node_id]].inputs[name] = copy.deepcopy(inst.inputs[exposed.name])
    for link in outof:
        exposed = defn.output(link.from_output)
        if exposed is not None and exposed.node in ids:
            wf.connect(ids[exposed.node], exposed.output, link.to_node, link.to_input)
    return wf, ids


def flatten(workflow: Workflow) -> Workflow:
    """The workflow with every subgraph instance (nested ones too) replaced by its nodes; the same
    object when there are none. Raises WorkflowError for unknown or self-using definitions."""
    if not workflow.has_subgraphs():
        return workflow
    wf = workflow
    for _ in range(MAX_DEPTH + 1):
        instances = [nid for nid, n in wf.nodes.items() if n.subgraph is not None]
        if not instances:
            wf.subgraphs = {}  # a flat graph: nothing refers to them any more
            return wf
        for nid in instances:
            wf, _ = expand(wf, nid)
    raise WorkflowError(Problem("subgraph_depth", f"subgraphs nested deeper than {MAX_DEPTH} levels "
                                "(does a subgraph contain itself?)"))


def flat_ids(workflow: Workflow, node_ids: Iterable[str]) -> list[str]:
    """The ids that `node_ids` become in `flatten(workflow)`: a plain node keeps its id, an
    instance becomes every flattened node inside it (run-to-here on a subgraph runs all of it)."""
    out: list[str] = []
    for nid in node_ids:
        node = workflow.nodes.get(nid)
        if node is None or node.subgraph is None:
            out.append(nid)
            continue
        defn = workflow.subgraphs.get(node.subgraph)
        for inner in defn.nodes if defn else ():
            sub = Workflow({inner: defn.nodes[inner]}, subgraphs=workflow.subgraphs)
            out += [f"{nid}{SEP}{i}" for i in flat_ids(sub, [inner])]
    return out


def owner_of(flat_id: str) -> str:
    """The top-level node a flattened id belongs to (`sub1/blur/b2` -> `sub1`)."""
    return flat_id.split(SEP, 1)[0]


# ---- collapse --------------------------------------------------------------------------------

def collapse(workflow: Workflow, node_ids: Iterable[str], registry: NodeRegistry,
             title: str = "Subgraph") -> tuple[Workflow, str]:
    """A copy of `workflow` with `node_ids` folded into one new instance, and the instance's id.
    Wires crossing into the selection become its inputs (one per distinct source), wires leaving
    it its outputs (one per inner output). Raises WorkflowError when folding would make a loop
    through nodes outside the selection."""
    chosen = [n for n in dict.fromkeys(node_ids) if n in workflow.nodes]
    if not chosen:
        raise WorkflowError(Problem("empty_selection", "select the nodes to collapse"))
    inside = set(chosen)
    index = GraphIndex(workflow)
    outside_between = (index.downstream(chosen) & index.upstream(chosen)) - inside
    if outside_between:
        raise WorkflowError(Problem("cycle", "collapsing would make a loop through "
                                    + ", ".join(sorted(outside_between)[:3])
                                    + ": include those nodes or leave out what they connect"))
    wf = workflow.copy()
    positions = {n: _xy(wf.layout.get("nodes", {}).get(n, {}).get("pos")) for n in chosen}
    # the instance stands where the rightmost selected node stood (its place is free now, and its
    # outputs stay near the wires they feed); inner positions are relative to that point
    last = max(chosen, key=lambda n: positions[n])
    x0, y0 = positions[last]
    def_id = fresh_name(slug(title), set(wf.subgraphs))
    defn = SubgraphDef(def_id, title)
    for nid in chosen:
        defn.nodes[nid] = copy.deepcopy(wf.nodes[nid])
        entry = copy.deepcopy(wf.layout.get("nodes", {}).get(nid, {}))
        entry["pos"] = [round(positions[nid][0] - x0), round(positions[nid][1] - y0)]
        defn.layout.setdefault("nodes", {})[nid] = entry
    names: set[str] = set()
    sources: dict[tuple[str, str], str] = {}  # outside (node, output) -> exposed input name
    new_links: list[Link] = []
    inst_id = fresh_name(slug(title), set(wf.nodes) - inside)
    for link in wf.links:
        a, b = link.from_node in inside, link.to_node in inside
        if a and b:
            defn.links.append(link)
        elif b:  # an outside source feeding the selection
            key = (link.from_node, link.from_output)
            if key not in sources:
                sources[key] = fresh_name(link.to_input, names, sep="_")
                names.add(sources[key])
                defn.inputs.append(ExposedInput(sources[key], ()))
                new_links.append(Link(link.from_node, link.from_output, inst_id, sources[key]))
            i = next(k for k, e in enumerate(defn.inputs) if e.name == sources[key])
            defn.inputs[i] = ExposedInput(defn.inputs[i].name,
                                          defn.inputs[i].targets + ((link.to_node, link.to_input),))
    out_names: set[str] = set()
    exposed_out: dict[tuple[str, str], str] = {}
    for link in wf.links:
        if link.from_node in inside and link.to_node not in inside:
            key = (link.from_node, link.from_output)
            if key not in exposed_out:
                exposed_out[key] = fresh_name(link.from_output, out_names, sep="_")
                out_names.add(exposed_out[key])
                defn.outputs.append(ExposedOutput(exposed_out[key], *key))
            new_links.append(Link(inst_id, exposed_out[key], link.to_node, link.to_input))
    for nid in chosen:
        wf.remove_node(nid)
    wf.subgraphs[def_id] = defn
    wf.nodes[inst_id] = NodeInstance(inst_id, SUBGRAPH_TYPE, {}, subgraph=def_id,
                                     title=None if title == "Subgraph" else title)
    wf.layout.setdefault("nodes", {})[inst_id] = {"pos": [round(x0), round(y0)]}
    wf.links.extend(new_links)
    return wf, inst_id


def used_definitions(workflow: Workflow, def_id: str) -> dict[str, SubgraphDef]:
    """`def_id` and every definition it uses (transitively), by id."""
    out: dict[str, SubgraphDef] = {}
    todo = [def_id]
    while todo:
        sid = todo.pop()
        defn = workflow.subgraphs.get(sid)
        if defn is None or sid in out:
            continue
        out[sid] = defn
        todo += [n.subgraph for n in defn.nodes.values() if n.subgraph is not None]
    return out


def prune_definitions(workflow: Workflow) -> None:
    """Drop definitions that no instance (top-level or nested in a used one) refers to."""
    used: dict[str, SubgraphDef] = {}
    for node in workflow.nodes.values():
        if node.subgraph is not None:
            used.update(used_definitions(workflow, node.subgraph))
    workflow.subgraphs = {k: v for k, v in workflow.subgraphs.items() if k in used}


# ---- the user's library of reusable subgraphs --------------------------------------------------

def library_dir() -> Path:
    return Path(platformdirs.user_data_dir("reelgraph")) / "subgraphs"


def save_reusable(workflow: Workflow, def_id: str, name: str, folder: Path | None = None) -> Path:
    """Write the definition (with the ones it uses) as `<name>.json` in the library (atomic)."""
    defs = used_definitions(workflow, def_id)
    if def_id not in defs:
        raise KeyError(def_id)
    folder = folder or library_dir()
    folder.mkdir(parents=True, exist_ok=True)
    doc = {"format": LIBRARY_FORMAT, "version": workflow.version, "name": name, "subgraph": def_id,
           "subgraphs": {sid: d.to_json() for sid, d in defs.items()}}
    path = folder / f"{slug(name)}.json"
    atomic_write_text(path, json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    return path


def load_reusable(path: Path) -> tuple[str, Workflow]:
    """(name, a workflow holding its definitions and one instance `node`) from a library file.
    Raises WorkflowError for anything unreadable."""
    from engine.document import workflow_from_json
    from engine import safe_json

    try:
        data = safe_json.loads(safe_json.read_text_file(path, safe_json.MAX_WORKFLOW_BYTES,
                                                        "subgraph file"))
    except safe_json.JsonFileError as exc:
        raise WorkflowError(str(exc), source=str(path)) from None
    if not isinstance(data, dict) or data.get("format") != LIBRARY_FORMAT \
            or not isinstance(data.get("subgraph"), str):
        raise WorkflowError(f'not a Reelgraph subgraph file ("format": "{LIBRARY_FORMAT}")',
                            source=str(path))
    wf = workflow_from_json({"format": "reelgraph.workflow", "version": data.get("version", 4),
                             "subgraphs": data.get("subgraphs", {}),
                             "nodes": {"node": {"type": SUBGRAPH_TYPE, "subgraph": data["subgraph"]}}},
                            source=str(path), allow_newer=True)
    return str(data.get("name") or path.stem), wf


def list_reusable(folder: Path | None = None) -> list[tuple[str, Path]]:
    """(name, path) of every readable library file, by name."""
    folder = folder or library_dir()
    out = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            name, _ = load_reusable(path)
        except WorkflowError:
            continue
        out.append((name, path))
    return out


def import_definitions(workflow: Workflow, source: Workflow, def_id: str) -> str:
    """Copy `def_id` (and what it uses) from `source` into `workflow`, renaming ids that are
    taken by different definitions; returns the id `def_id` has in `workflow`."""
    defs = used_definitions(source, def_id)
    renames: dict[str, str] = {}
    for sid, defn in defs.items():
        same = workflow.subgraphs.get(sid)
        renames[sid] = sid if same is None or same.to_json() == defn.to_json() \
            else fresh_name(sid, set(workflow.subgraphs) | set(defs))
    for sid, defn in defs.items():
        clone = copy.deepcopy(defn)
        clone.id = renames[sid]
        for node in clone.nodes.values():
            if node.subgraph is not None:
                node.subgraph = renames.get(node.subgraph, node.subgraph)
        workflow.subgraphs[clone.id] = clone
    return renames[def_id]


# ---- helpers ---------------------------------------------------------------------------------

def _xy(pos: Any) -> tuple[float, float]:
    try:
        return float(pos[0]), float(pos[1])
    except (TypeError, ValueError, IndexError):
        return 0.0, 0.0


def slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text.strip().lower()).strip("_") or "subgraph"


def fresh_name(base: str, taken: set[str], sep: str = "") -> str:
    if base not in taken:
        return base
    n = 2 if sep else 1
    while f"{base}{sep}{n}" in taken:
        n += 1
    return f"{base}{sep}{n}"
