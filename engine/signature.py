"""Cache keys: a node's signature is a hash of what determines its result, and nothing else.

signature(node) = sha256 over: type name, type version, mode, every input value (defaults filled
in, so omitting a default and writing it out give the same key), the content identity of inputs
that name files, the compute environment (device kind and library versions, engine.environment)
and — for linked inputs — the upstream node's signature plus the output name. Node ids, titles and
layout never enter, so renaming a node or moving it keeps its cache, and two identical subgraphs
share results. Signatures never depend on results, so a whole run's keys are known before
anything runs.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Callable, Iterable

from engine.document import Link, Workflow
from engine.registry import NodeRegistry
from engine.sockets import SocketType

# (file_kind, value) -> a JSON-able identity of the file (its content hash) or None if missing.
FileFingerprint = Callable[[str, str], Any]


def _canonical(value: Any) -> Any:
    """JSON-able form for values json.dumps cannot sort (non-string dict keys)."""
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    return value


def digest(payload: Any) -> str:
    """SHA-256 of a JSON value. json writes 1.0 and 1 differently and repr-exact floats, so equal
    keys mean equal values; lone surrogates are encoded losslessly rather than raising."""
    try:
        text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    except TypeError:
        text = json.dumps(_canonical(payload), sort_keys=True, separators=(",", ":"),
                          ensure_ascii=False, default=repr)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def compute_signatures(workflow: Workflow, registry: NodeRegistry, order: Iterable[str],
                       fingerprint: FileFingerprint | None = None,
                       extra: dict[str, Any] | None = None, environment: Any = None,
                       incoming: dict[str, dict[str, Link]] | None = None) -> dict[str, str]:
    """Signatures for the nodes in `order` (a topological order of the nodes a run needs).

    `extra[node_id]` adds run-specific context to that node's key (e.g. the output folder of a
    save node, whose cached result is only valid for files in that folder). `environment` (any
    JSON value, or a digest of one as a string) enters every key.
    """
    signatures: dict[str, str] = {}
    extra = extra or {}
    incoming = incoming if incoming is not None else workflow.incoming()
    env = environment if isinstance(environment, str) else (
        digest(environment) if environment is not None else "")
    nodes = workflow.nodes
    for nid in order:
        node = nodes[nid]
        spec = registry.spec(node.type)
        assert spec is not None, f"validated workflows only: {node.type}"
        linked = incoming.get(nid) or {}
        literal = node.inputs
        inputs: dict[str, Any] = {}
        for ispec in spec.inputs:
            name = ispec.name
            link = linked.get(name)
            if link is not None:
                inputs[name] = {"link": [signatures[link.from_node], link.from_output]}
                continue
            value = literal.get(name, ispec.default)
            if ispec.type is SocketType.FLOAT and type(value) is int:
                value = float(value)
            inputs[name] = value
            # an empty choice counts where the node then picks from the folder itself
            # (FrameInterpolate(method=auto)): the folder's contents are part of the key
            if (ispec.file_kind and fingerprint is not None and isinstance(value, (str, type(None)))
                    and (value or ispec.picks_from_folder)):
                inputs[f"{name}#file"] = fingerprint(ispec.file_kind, value or "")
        payload = [spec.name, spec.version, node.mode, inputs, extra.get(nid), env]
        signatures[nid] = digest(payload)
    return signatures


def workflow_signature(workflow: Workflow) -> str:
    """A hash of everything in a workflow that execution reads — node types, modes, input values
    and links, never ids' order, titles, layout or meta. The batch manifest keeps it per job, so
    a job done with an older version of the graph is run again."""
    return digest({"nodes": {nid: [n.type, n.mode, n.inputs] for nid, n in workflow.nodes.items()},
                   "links": sorted([l.from_node, l.from_output, l.to_node, l.to_input]
                                   for l in workflow.links)})
