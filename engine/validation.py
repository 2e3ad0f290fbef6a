"""Semantic validation of a workflow against a node registry.

`validate` never raises: it returns every problem at once, each naming node id, node type and
input, so the CLI can print them all and the studio can mark them all. `check` raises a
`WorkflowError` carrying the same list when any is found. Validation can be limited to the nodes a
run needs (`scope`), so an unknown placeholder elsewhere in the graph does not block a run.
"""

from __future__ import annotations

from collections import Counter
from typing import Iterable

from engine import gc_control
from engine.document import Workflow
from engine.errors import Problem, WorkflowError
from engine.graph_index import GraphIndex
from engine.registry import NodeRegistry
from engine.sockets import can_connect


def validate(workflow: Workflow, registry: NodeRegistry, scope: Iterable[str] | None = None,
             index: GraphIndex | None = None, check_cycles: bool = True) -> list[Problem]:
    """Every problem of the nodes in `scope` (default: all) and of the links touching them.
    A graph with subgraph instances is checked as it runs: flattened (problems name inner nodes
    as `<instance>/<inner>`)."""
    if workflow.has_subgraphs():
        return _validate_flattened(workflow, registry, scope)
    with gc_control.paused():  # see engine.gc_control
        scope_set = set(workflow.nodes) if scope is None else set(scope)
        index = index or GraphIndex(workflow)
        problems: list[Problem] = []
        problems += _check_links(workflow, registry, scope_set)
        nodes = workflow.nodes
        for nid in sorted(scope_set):
            if nid in nodes:
                problems += _check_node(workflow, registry, nid, index.links_into(nid))
        if check_cycles:  # a caller that already sorted the scope knows there are none
            problems += _check_cycles(index, scope_set)
        return problems


def _validate_flattened(workflow: Workflow, registry: NodeRegistry,
                        scope: Iterable[str] | None) -> list[Problem]:
    from engine.subgraphs import flat_ids, flatten

    try:
        flat = flatten(workflow)
    except WorkflowError as exc:
        return list(exc.problems)
    return validate(flat, registry, None if scope is None else flat_ids(workflow, scope))


def check(workflow: Workflow, registry: NodeRegistry, scope: Iterable[str] | None = None,
          source: str | None = None, index: GraphIndex | None = None,
          check_cycles: bool = True) -> None:
    problems = validate(workflow, registry, scope, index, check_cycles)
    if problems:
        raise WorkflowError(problems, source=source)


def _check_node(workflow: Workflow, registry: NodeRegistry, nid: str,
                linked: dict) -> list[Problem]:
    node = workflow.nodes[nid]
    spec = registry.spec(node.type)
    if spec is None:
        return [Problem("unknown_type", f"unknown node type {node.type!r} (kept as a placeholder; "
                        "install the node pack that provides it or remove the node)", nid, node.type)]
    problems = []
    for name, value in node.inputs.items():
        ispec = spec.input(name)
        if ispec is None:
            known = ", ".join(i.name for i in spec.inputs) or "none"
            problems.append(Problem("unknown_input", f"unknown input (inputs are: {known})",
                                    nid, node.type, name))
            continue
        if name in linked:
            continue
        if not ispec.has_widget:
            if value is not None:
                problems.append(Problem("not_a_widget", f"{ispec.type.value} input takes a link, "
                                        "not a value", nid, node.type, name))
            continue
        if value is None and ispec.optional:
            continue
        why = ispec.check_value(value)
        if why:
            problems.append(Problem("bad_value", why, nid, node.type, name))
    for ispec in spec.inputs:
        if ispec.optional or ispec.name in linked:
            continue
        has_value = node.inputs.get(ispec.name) is not None or (
            ispec.has_widget and ispec.default is not None)
        if not has_value:
            what = "link an output to it" if not ispec.has_widget else "give it a value"
            problems.append(Problem("missing_input", f"required {ispec.type.value} input is not "
                                    f"connected; {what}", nid, node.type, ispec.name))
    return problems


def _check_links(workflow: Workflow, registry: NodeRegistry, scope: set[str]) -> list[Problem]:
    problems = []
    counts = Counter((l.to_node, l.to_input) for l in workflow.links)
    for (to_node, to_input), n in counts.items():
        if n > 1 and to_node in scope:
            node = workflow.nodes.get(to_node)
            problems.append(Problem("duplicate_link", f"{n} links feed this input; keep one",
                                    to_node, node.type if node else None, to_input))
    for link in workflow.links:
        if link.to_node not in scope and link.from_node not in scope:
            continue
        src, dst = workflow.nodes.get(link.from_node), workflow.nodes.get(link.to_node)
        if dst is None or src is None:
            missing = link.to_node if dst is None else link.from_node
            problems.append(Problem("dangling_link", f"link {link} refers to missing node "
                                    f"{missing!r}", link.to_node, dst.type if dst else None,
                                    link.to_input))
            continue
        sspec, dspec = registry.spec(src.type), registry.spec(dst.type)
        if sspec is None or dspec is None:
            continue  # placeholders: their sockets are unknown, reported as unknown_type
        out = sspec.output(link.from_output)
        inp = dspec.input(link.to_input)
        if out is None:
            problems.append(Problem("dangling_link", f"link {link}: {src.type} has no output "
                                    f"{link.from_output!r}", dst.id, dst.type, link.to_input))
            continue
        if inp is None:
            problems.append(Problem("dangling_link", f"link {link}: {dst.type} has no input "
                                    f"{link.to_input!r}", dst.id, dst.type, link.to_input))
            continue
        ok, why = can_connect(out.type, inp.type)
        if not ok:
            problems.append(Problem("type_mismatch", f"{why} (from {src.id}.{out.name})",
                                    dst.id, dst.type, link.to_input))
    return problems


def _check_cycles(index: GraphIndex, scope: set[str]) -> list[Problem]:
    closure = index.upstream(scope)
    _, left_over = index.topological_order(closure)
    if not left_over:
        return []
    problems = []
    for members in index.cycles(left_over):
        first = index.workflow.nodes[members[0]]
        problems.append(Problem("cycle", "nodes form a cycle: " + " -> ".join(members),
                                first.id, first.type))
    return problems
