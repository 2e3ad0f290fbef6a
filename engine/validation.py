"""Semantic validation of a workflow against a node registry.

`validate` never raises: it returns every problem at once, each naming node id, node type and
input, so the CLI can print them all and the studio can mark them all. `check` raises a
`WorkflowError` carrying the same list when any is found. Validation can be limited to the nodes a
run needs (`scope`), so an unknown placeholder elsewhere in the graph does not block a run.
"""

from __future__ import annotations

from collections import Counter
from typing import Iterable

import networkx as nx

from engine.document import Workflow
from engine.errors import Problem, WorkflowError
from engine.registry import NodeRegistry
from engine.sockets import can_connect


def dependency_graph(workflow: Workflow) -> nx.DiGraph:
    """Directed graph node -> dependent node over the links whose ends both exist."""
    graph = nx.DiGraph()
    graph.add_nodes_from(workflow.nodes)
    for link in workflow.links:
        if link.from_node in workflow.nodes and link.to_node in workflow.nodes:
            graph.add_edge(link.from_node, link.to_node)
    return graph


def validate(workflow: Workflow, registry: NodeRegistry,
             scope: Iterable[str] | None = None) -> list[Problem]:
    scope_set = set(workflow.nodes) if scope is None else set(scope)
    problems: list[Problem] = []
    problems += _check_links(workflow, registry, scope_set)
    incoming = workflow.incoming()
    for nid in sorted(scope_set):
        if nid in workflow.nodes:
            problems += _check_node(workflow, registry, nid, incoming.get(nid, {}))
    problems += _check_cycles(workflow, scope_set)
    return problems


def check(workflow: Workflow, registry: NodeRegistry, scope: Iterable[str] | None = None,
          source: str | None = None) -> None:
    problems = validate(workflow, registry, scope)
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


def upstream_closure(graph: nx.DiGraph, targets: Iterable[str]) -> set[str]:
    """`targets` plus everything they depend on (one multi-source walk, cycles tolerated)."""
    seen = {t for t in targets if t in graph}
    stack = list(seen)
    while stack:
        for parent in graph.predecessors(stack.pop()):
            if parent not in seen:
                seen.add(parent)
                stack.append(parent)
    return seen


def _check_cycles(workflow: Workflow, scope: set[str]) -> list[Problem]:
    full = dependency_graph(workflow)
    graph = full.subgraph(upstream_closure(full, scope))
    problems = []
    for component in nx.strongly_connected_components(graph):
        if len(component) > 1 or any(graph.has_edge(n, n) for n in component):
            members = sorted(component)
            first = workflow.nodes[members[0]]
            problems.append(Problem("cycle", "nodes form a cycle: " + " -> ".join(members),
                                    first.id, first.type))
    return problems
