"""The graph document: Reelgraph's one canonical workflow format, in memory and on disk.

On disk (format version 2, documented in docs/workflow-format.md):

    {"format": "reelgraph.workflow", "version": 2,
     "meta": {...},
     "nodes": {"<id>": {"type": "<NodeType>", "inputs": {"<name>": <json value>}, "mode": "normal"}},
     "links": [{"from": {"node": "<id>", "output": "<name>"}, "to": {"node": "<id>", "input": "<name>"}}],
     "layout": {"nodes": {"<id>": {"pos": [x, y]}}, "groups": [...], "view": {...}},
     "subgraphs": {"<def id>": {"title", "inputs", "outputs", "nodes", "links", "layout"}}}

A node `{"type": "Subgraph", "subgraph": "<def id>"}` is an instance of a subgraph definition;
the engine runs it by flattening (engine.subgraphs) before planning, so it runs, and is cached,
exactly like its expanded nodes.

Invariants:
- Inputs are keyed by name; a linked input's literal value (if any) is kept but ignored by the run.
- `layout` and `meta` never affect execution or cache keys.
- Unknown fields at every level are kept in `extra` and written back on save.
- Node types are not checked here (see engine.validation): an unknown type is an inert placeholder.
- Parsing raises only `WorkflowError`, listing every structural problem found.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine import gc_control, safe_json
from engine.atomic_files import atomic_write_bytes, atomic_write_text  # noqa: F401 (re-exported)
from engine.errors import Problem, WorkflowError
from engine.migrations import CURRENT_VERSION, FORMAT_NAME, migrate
from engine.schema import unicode_problem

NODE_MODES = ("normal", "bypass", "mute")
SUBGRAPH_TYPE = "Subgraph"  # the node type of a subgraph instance; `subgraph` names its definition
_NODE_FIELDS = {"type", "inputs", "mode", "title", "subgraph"}
_TOP_FIELDS = {"format", "version", "nodes", "links", "layout", "meta", "subgraphs"}
_SUBGRAPH_FIELDS = {"title", "inputs", "outputs", "nodes", "links", "layout"}
MAX_ID_LENGTH = 200


@dataclass(frozen=True)
class Link:
    """A wire from one node's named output to another node's named input."""

    from_node: str
    from_output: str
    to_node: str
    to_input: str

    def to_json(self) -> dict[str, Any]:
        return {"from": {"node": self.from_node, "output": self.from_output},
                "to": {"node": self.to_node, "input": self.to_input}}

    def __str__(self) -> str:
        return f"{self.from_node}.{self.from_output} -> {self.to_node}.{self.to_input}"


@dataclass
class NodeInstance:
    """One node of a graph: its type name, literal input values and mode."""

    id: str
    type: str
    inputs: dict[str, Any] = field(default_factory=dict)
    mode: str = "normal"  # normal | bypass (outputs pass an input through) | mute (never runs)
    title: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    subgraph: str | None = None  # the definition an instance of type SUBGRAPH_TYPE runs

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type, "inputs": copy.deepcopy(self.inputs)}
        if self.subgraph is not None:
            out["subgraph"] = self.subgraph
        if self.mode != "normal":
            out["mode"] = self.mode
        if self.title:
            out["title"] = self.title
        out.update(copy.deepcopy(self.extra))
        return out


@dataclass(frozen=True)
class ExposedInput:
    """An input of a subgraph: what feeds it feeds every inner (node, input) in `targets`."""

    name: str
    targets: tuple[tuple[str, str], ...]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "to": [{"node": n, "input": i} for n, i in self.targets]}


@dataclass(frozen=True)
class ExposedOutput:
    """An output of a subgraph: the inner node's output it passes on."""

    name: str
    node: str
    output: str

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "from": {"node": self.node, "output": self.output}}


@dataclass
class SubgraphDef:
    """A reusable graph inside the document: inner nodes and links (ids local to it), the inputs
    and outputs its instances expose, and its own layout (positions relative to its top-left)."""

    id: str
    title: str
    inputs: list[ExposedInput] = field(default_factory=list)
    outputs: list[ExposedOutput] = field(default_factory=list)
    nodes: dict[str, NodeInstance] = field(default_factory=dict)
    links: list[Link] = field(default_factory=list)
    layout: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def input(self, name: str) -> ExposedInput | None:
        return next((i for i in self.inputs if i.name == name), None)

    def output(self, name: str) -> ExposedOutput | None:
        return next((o for o in self.outputs if o.name == name), None)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"title": self.title, "inputs": [i.to_json() for i in self.inputs],
                               "outputs": [o.to_json() for o in self.outputs],
                               "nodes": {nid: n.to_json() for nid, n in self.nodes.items()},
                               "links": [l.to_json() for l in self.links],
                               "layout": copy.deepcopy(self.layout)}
        out.update(copy.deepcopy(self.extra))
        return out


@dataclass
class Workflow:
    nodes: dict[str, NodeInstance] = field(default_factory=dict)
    links: list[Link] = field(default_factory=list)
    layout: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    version: int = CURRENT_VERSION
    subgraphs: dict[str, SubgraphDef] = field(default_factory=dict)

    def has_subgraphs(self) -> bool:
        """Whether any node is a subgraph instance (then runs go through engine.subgraphs)."""
        return any(n.subgraph is not None for n in self.nodes.values())

    def flattened(self) -> "Workflow":
        """This graph as it runs: every subgraph instance replaced by its inner nodes (self when
        there are none). Raises WorkflowError for an unknown or self-using definition."""
        if not self.has_subgraphs():
            return self
        from engine.subgraphs import flatten  # engine.subgraphs builds on this module

        return flatten(self)

    # ---- queries -------------------------------------------------------------------------
    def links_into(self, node_id: str) -> dict[str, Link]:
        """The link feeding each input of `node_id`, by input name (last one wins if duplicated)."""
        return {l.to_input: l for l in self.links if l.to_node == node_id}

    def incoming(self) -> dict[str, dict[str, Link]]:
        """links_into for every node at once (one pass; use this in loops over nodes)."""
        index: dict[str, dict[str, Link]] = {nid: {} for nid in self.nodes}
        for link in self.links:
            index.setdefault(link.to_node, {})[link.to_input] = link
        return index

    def links_from(self, node_id: str) -> list[Link]:
        return [l for l in self.links if l.from_node == node_id]

    def copy(self) -> "Workflow":
        return copy.deepcopy(self)

    # ---- edits (the studio and the CLI overrides use these) ------------------------------
    def add_node(self, node_type: str, inputs: dict[str, Any] | None = None,
                 node_id: str | None = None, pos: tuple[float, float] | None = None) -> NodeInstance:
        node_id = node_id or self.new_id(node_type)
        if node_id in self.nodes:
            raise WorkflowError(Problem("duplicate_node", "node id already exists", node_id, node_type))
        node = NodeInstance(node_id, node_type, dict(inputs or {}))
        self.nodes[node_id] = node
        if pos is not None:
            self.layout.setdefault("nodes", {}).setdefault(node_id, {})["pos"] = [pos[0], pos[1]]
        return node

    def remove_node(self, node_id: str) -> None:
        self.nodes.pop(node_id, None)
        self.links = [l for l in self.links if node_id not in (l.from_node, l.to_node)]
        self.layout.get("nodes", {}).pop(node_id, None)

    def connect(self, from_node: str, from_output: str, to_node: str, to_input: str) -> Link:
        """Add a link, replacing any link already feeding that input."""
        self.disconnect(to_node, to_input)
        link = Link(from_node, from_output, to_node, to_input)
        self.links.append(link)
        return link

    def disconnect(self, to_node: str, to_input: str) -> None:
        self.links = [l for l in self.links if not (l.to_node == to_node and l.to_input == to_input)]

    def new_id(self, hint: str = "node") -> str:
        base = "".join(c for c in hint.lower() if c.isalnum() or c == "_") or "node"
        n = 1
        while f"{base}{n}" in self.nodes:
            n += 1
        return f"{base}{n}"

    # ---- serialisation -------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"format": FORMAT_NAME, "version": self.version,
                               "meta": copy.deepcopy(self.meta),
                               "nodes": {nid: n.to_json() for nid, n in self.nodes.items()},
                               "links": [l.to_json() for l in self.links],
                               "layout": copy.deepcopy(self.layout)}
        if self.subgraphs:  # written only when used, so files without subgraphs stay as they were
            out["subgraphs"] = {sid: d.to_json() for sid, d in self.subgraphs.items()}
        out.update(copy.deepcopy(self.extra))
        return out

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2, ensure_ascii=False) + "\n"

    def save(self, path: str | Path) -> None:
        atomic_write_text(Path(path), self.dumps())


# ---- parsing -----------------------------------------------------------------------------

def load_workflow(source: str | Path, *, allow_newer: bool = False) -> Workflow:
    """Read a workflow file. Raises only WorkflowError (unreadable file, bad JSON, bad shape)."""
    path = Path(source)
    try:
        text = safe_json.read_text_file(path, safe_json.MAX_WORKFLOW_BYTES, "workflow file")
    except safe_json.JsonFileError as exc:
        raise WorkflowError(str(exc), source=str(path)) from None
    return loads_workflow(text, source=str(path), allow_newer=allow_newer)


def loads_workflow(text: str | bytes, *, source: str | None = None,
                   allow_newer: bool = False) -> Workflow:
    """Parse workflow JSON text (strictly: engine.safe_json). Raises only WorkflowError."""
    try:
        with gc_control.paused():
            data = safe_json.loads(text)
    except safe_json.JsonFileError as exc:
        raise WorkflowError(str(exc), source=source) from None
    return workflow_from_json(data, source=source, allow_newer=allow_newer, copy_data=False,
                              depth_checked=True)


def workflow_from_json(data: Any, *, source: str | None = None, allow_newer: bool = False,
                       copy_data: bool = True, depth_checked: bool = False) -> Workflow:
    """Build a Workflow from parsed JSON, migrating old versions. Raises only WorkflowError.
    With `copy_data=False` the Workflow may share nested values with `data` (for JSON just
    parsed, or held by nobody else: copying a 100,000-node document costs more than parsing it)."""
    try:
        with gc_control.paused():  # parsing creates no cycles; see engine.gc_control
            if not depth_checked:  # data that did not come through safe_json.loads
                safe_json.check_depth(data)
            if copy_data:
                data = copy.deepcopy(data)
            return _from_json(data, source, allow_newer)
    except WorkflowError:
        raise
    except safe_json.JsonFileError as exc:
        raise WorkflowError(str(exc), source=source) from None
    except RecursionError:
        raise WorkflowError("document is nested too deeply", source=source) from None
    except Exception as exc:  # defensive: any surprise in a hostile file becomes a WorkflowError
        raise WorkflowError(f"malformed workflow ({type(exc).__name__}: {exc})", source=source) from None


def _from_json(data: Any, source: str | None, allow_newer: bool) -> Workflow:
    if not isinstance(data, dict):
        raise WorkflowError("the top level must be a JSON object", source=source)
    if data.get("format") != FORMAT_NAME:
        raise WorkflowError(f'"format" must be "{FORMAT_NAME}" (got {data.get("format")!r}); '
                            "is this a Reelgraph workflow file?", source=source)
    version = data.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise WorkflowError(f'"version" must be a positive integer (got {version!r})', source=source)
    if version > CURRENT_VERSION and not allow_newer:
        raise WorkflowError(Problem("newer_version",
                                    f"saved by a newer Reelgraph (format version {version}); this "
                                    f"build reads versions up to {CURRENT_VERSION}. Update Reelgraph, "
                                    "or open it anyway: unknown parts are kept and saved back."),
                            source=source)
    data = migrate(dict(data), version)  # migrations only replace top-level entries

    problems: list[Problem] = []
    nodes_json = data.get("nodes", {})
    if not isinstance(nodes_json, dict):
        problems.append(Problem("bad_shape", '"nodes" must be an object keyed by node id'))
        nodes_json = {}
    nodes: dict[str, NodeInstance] = {}
    for nid, nj in nodes_json.items():
        node = _parse_node(nid, nj, problems)
        if node is not None:
            nodes[nid] = node

    links: list[Link] = []
    links_json = data.get("links", [])
    if not isinstance(links_json, list):
        problems.append(Problem("bad_shape", '"links" must be a list'))
        links_json = []
    for i, lj in enumerate(links_json):
        link = _parse_link(i, lj, problems)
        if link is not None:
            links.append(link)

    layout = data.get("layout", {})
    if not isinstance(layout, dict):
        problems.append(Problem("bad_shape", '"layout" must be an object'))
    meta = data.get("meta", {})
    if not isinstance(meta, dict):
        problems.append(Problem("bad_shape", '"meta" must be an object'))
    subgraphs = _parse_subgraphs(data.get("subgraphs", {}), problems)
    for nid, node in nodes.items():
        if node.type == SUBGRAPH_TYPE and node.subgraph not in subgraphs:
            problems.append(Problem("unknown_subgraph", f"subgraph {node.subgraph!r} is not defined "
                                    'in "subgraphs"', nid, node.type))
    if problems:
        raise WorkflowError(problems, source=source)
    extra = {k: v for k, v in data.items() if k not in _TOP_FIELDS}
    return Workflow(nodes, links, layout, meta, extra, version=max(CURRENT_VERSION, version),
                    subgraphs=subgraphs)


def _parse_subgraphs(data: Any, problems: list[Problem]) -> dict[str, SubgraphDef]:
    """The definitions of `"subgraphs"`; each problem names the definition (as `sub:<id>`)."""
    if not isinstance(data, dict):
        problems.append(Problem("bad_shape", '"subgraphs" must be an object keyed by subgraph id'))
        return {}
    out: dict[str, SubgraphDef] = {}
    for sid, sj in data.items():
        where = f"sub:{sid}"
        if not isinstance(sj, dict) or not isinstance(sj.get("nodes", {}), dict) \
                or not isinstance(sj.get("links", []), list) or not isinstance(sj.get("layout", {}), dict):
            problems.append(Problem("bad_shape", "a subgraph must be an object with \"nodes\" "
                                    '(object), "links" (list) and "layout" (object)', where))
            continue
        before = len(problems)
        nodes = {nid: n for nid, nj in sj.get("nodes", {}).items()
                 if (n := _parse_node(nid, nj, problems)) is not None}
        links = [l for i, lj in enumerate(sj.get("links", []))
                 if (l := _parse_link(i, lj, problems)) is not None]
        inputs, outputs = _parse_exposed(sj, where, problems)
        for k in range(before, len(problems)):  # say which definition the inner problem is in
            problems[k] = dataclasses.replace(problems[k], message=f"in subgraph {sid!r}: "
                                              f"{problems[k].message}")
        title = sj.get("title")
        extra = {k: v for k, v in sj.items() if k not in _SUBGRAPH_FIELDS}
        out[sid] = SubgraphDef(sid, title if isinstance(title, str) and title else sid, inputs,
                               outputs, nodes, links, copy.deepcopy(sj.get("layout", {})), extra)
    return out


def _parse_exposed(sj: dict[str, Any], where: str,
                   problems: list[Problem]) -> tuple[list[ExposedInput], list[ExposedOutput]]:
    inputs: list[ExposedInput] = []
    outputs: list[ExposedOutput] = []

    def ok(*parts: Any) -> bool:
        return all(isinstance(p, str) and p and not unicode_problem(p) for p in parts)

    for ij in sj.get("inputs", []) if isinstance(sj.get("inputs", []), list) else [None]:
        to = ij.get("to") if isinstance(ij, dict) else None
        targets = [(t.get("node"), t.get("input")) for t in to if isinstance(t, dict)] \
            if isinstance(to, list) else []
        if not isinstance(ij, dict) or not ok(ij.get("name")) or not targets \
                or not all(ok(*t) for t in targets) or len(targets) != len(to):
            problems.append(Problem("bad_shape", 'each subgraph input must be {"name", "to": '
                                    '[{"node", "input"}, ...]}', where))
            continue
        inputs.append(ExposedInput(ij["name"], tuple(targets)))
    for oj in sj.get("outputs", []) if isinstance(sj.get("outputs", []), list) else [None]:
        src = oj.get("from") if isinstance(oj, dict) else None
        if not isinstance(src, dict) or not ok(oj.get("name"), src.get("node"), src.get("output")):
            problems.append(Problem("bad_shape", 'each subgraph output must be {"name", "from": '
                                    '{"node", "output"}}', where))
            continue
        outputs.append(ExposedOutput(oj["name"], src["node"], src["output"]))
    return inputs, outputs


def _parse_node(nid: str, nj: Any, problems: list[Problem]) -> NodeInstance | None:
    if (not nid or len(nid) > MAX_ID_LENGTH or any(ord(c) < 32 for c in nid)
            or unicode_problem(nid)):
        problems.append(Problem("bad_id", f"node id {nid[:40]!r} must be 1-{MAX_ID_LENGTH} "
                                "printable characters", node_id=ascii(nid[:40])))
        return None
    if not isinstance(nj, dict):
        problems.append(Problem("bad_shape", "a node must be an object", node_id=nid))
        return None
    ntype = nj.get("type")
    if not isinstance(ntype, str) or not ntype:
        problems.append(Problem("bad_shape", '"type" must be a non-empty string', node_id=nid))
        return None
    inputs = nj.get("inputs", {})
    if not isinstance(inputs, dict):
        problems.append(Problem("bad_shape", '"inputs" must be an object keyed by input name',
                                node_id=nid, node_type=ntype))
        return None
    mode = nj.get("mode", "normal")
    if mode not in NODE_MODES:
        problems.append(Problem("bad_value", f'"mode" must be one of {", ".join(NODE_MODES)}',
                                node_id=nid, node_type=ntype))
        return None
    title = nj.get("title")
    if title is not None and not isinstance(title, str):
        problems.append(Problem("bad_shape", '"title" must be a string', node_id=nid, node_type=ntype))
        return None
    subgraph = nj.get("subgraph")
    if (ntype == SUBGRAPH_TYPE) != isinstance(subgraph, str) or (subgraph is not None and not subgraph):
        problems.append(Problem("bad_shape", f'a "{SUBGRAPH_TYPE}" node names its definition in '
                                '"subgraph" (a string); other nodes have no "subgraph"',
                                node_id=nid, node_type=ntype))
        return None
    extra = {k: v for k, v in nj.items() if k not in _NODE_FIELDS}
    return NodeInstance(nid, ntype, dict(inputs), mode, title, extra, subgraph)


def _parse_link(index: int, lj: Any, problems: list[Problem]) -> Link | None:
    where = f"link #{index}"
    if not isinstance(lj, dict) or not isinstance(lj.get("from"), dict) or not isinstance(lj.get("to"), dict):
        problems.append(Problem("bad_link", f'{where} must be {{"from": {{"node", "output"}}, '
                                '"to": {"node", "input"}}'))
        return None
    parts = (lj["from"].get("node"), lj["from"].get("output"), lj["to"].get("node"), lj["to"].get("input"))
    if not all(isinstance(p, str) and p and not unicode_problem(p) for p in parts):
        node = parts[2] if isinstance(parts[2], str) else None
        problems.append(Problem("bad_link", f"{where}: node ids and socket names must be non-empty "
                                "strings", node_id=node))
        return None
    return Link(*parts)
