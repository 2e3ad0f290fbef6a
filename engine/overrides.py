"""`NODE.INPUT=VALUE` overrides, shared by `run --set`, batch matrices and the grid option.

VALUE is read as JSON when it parses (numbers, true/false, lists, "quoted strings") and as plain
text otherwise; for text inputs the raw text is always used, so `--set prompt.text=42` sets "42".
Problems are reported as WorkflowError problems naming the node and input.
"""

from __future__ import annotations

import json
from typing import Any, Iterable

from engine.document import Workflow
from engine.errors import Problem, WorkflowError
from engine.registry import NodeRegistry
from engine.sockets import SocketType


def parse_override(text: str) -> tuple[str, str, str]:
    """'node.input=value' -> (node, input, raw value)."""
    target, sep, raw = text.partition("=")
    node_id, dot, input_name = target.strip().rpartition(".")
    if not sep or not dot or not node_id or not input_name:
        raise WorkflowError(Problem("bad_override", f"override {text!r} must look like "
                                    "NODE.INPUT=VALUE (e.g. sampler.steps=20)"))
    return node_id, input_name, raw


def coerce(raw: str, socket_type: SocketType | None) -> Any:
    if socket_type in (SocketType.STRING, SocketType.TEXT):
        return raw
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def apply_overrides(workflow: Workflow, overrides: Iterable[str | tuple[str, str, Any]],
                    registry: NodeRegistry) -> Workflow:
    """A copy of `workflow` with the overrides applied; every problem reported at once."""
    wf = workflow.copy()
    problems: list[Problem] = []
    for item in overrides:
        if isinstance(item, str):
            try:
                node_id, input_name, raw = parse_override(item)
            except WorkflowError as exc:
                problems += exc.problems
                continue
            parsed = None
        else:
            node_id, input_name, parsed = item
            raw = None
        node = wf.nodes.get(node_id)
        if node is None:
            problems.append(Problem("bad_override", f"no node with id {node_id!r} (nodes: "
                                    f"{', '.join(sorted(wf.nodes))})", node_id, input=input_name))
            continue
        spec = registry.spec(node.type)
        ispec = spec.input(input_name) if spec else None
        if spec is not None and ispec is None:
            problems.append(Problem("bad_override", "no such input (inputs are: "
                                    f"{', '.join(i.name for i in spec.inputs)})", node_id,
                                    node.type, input_name))
            continue
        if input_name in wf.links_into(node_id):
            problems.append(Problem("bad_override", "input is fed by a link; set the value on the "
                                    "node that feeds it", node_id, node.type, input_name))
            continue
        value = coerce(raw, ispec.type if ispec else None) if raw is not None else parsed
        node.inputs[input_name] = value
    if problems:
        raise WorkflowError(problems)
    return wf
