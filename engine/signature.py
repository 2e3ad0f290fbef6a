"""Cache keys: a node's signature is a hash of what determines its result, and nothing else.

signature(node) = sha256 over: type name, type version, mode, every input value (defaults filled
in, so omitting a default and writing it out give the same key), the file identity (size + mtime)
of inputs that name files, and — for linked inputs — the upstream node's signature plus the output
name. Node ids, titles and layout never enter, so renaming a node or moving it keeps its cache, and
two identical subgraphs share results.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable, Iterable

from engine.document import Workflow
from engine.registry import NodeRegistry

# (file_kind, value) -> a JSON-able identity of the file (e.g. [size, mtime_ns]) or None if missing.
FileFingerprint = Callable[[str, str], Any]


def _canonical(value: Any) -> Any:
    """JSON-able form with floats made exact and stable (repr round-trips a float)."""
    if isinstance(value, float):
        return {"f": repr(value)}  # 1.0 and 1 must not collide; repr is exact
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    return value


def digest(payload: Any) -> str:
    text = json.dumps(_canonical(payload), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def compute_signatures(workflow: Workflow, registry: NodeRegistry, order: Iterable[str],
                       fingerprint: FileFingerprint | None = None,
                       extra: dict[str, Any] | None = None) -> dict[str, str]:
    """Signatures for the nodes in `order` (a topological order of the nodes a run needs).

    `extra[node_id]` adds run-specific context to that node's key (e.g. the output folder of a
    save node, whose cached result is only valid for files in that folder).
    """
    signatures: dict[str, str] = {}
    extra = extra or {}
    incoming = workflow.incoming()
    for nid in order:
        node = workflow.nodes[nid]
        spec = registry.spec(node.type)
        assert spec is not None, f"validated workflows only: {node.type}"
        linked = incoming.get(nid, {})
        inputs: dict[str, Any] = {}
        for ispec in spec.inputs:
            link = linked.get(ispec.name)
            if link is not None:
                inputs[ispec.name] = {"link": [signatures[link.from_node], link.from_output]}
                continue
            value = node.inputs.get(ispec.name, ispec.default)
            if ispec.type.value == "FLOAT" and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            inputs[ispec.name] = value
            # an empty choice still counts: nodes like FrameInterpolate(method=auto) then pick
            # whatever the folder holds, so the folder's contents are part of the key
            if ispec.file_kind and isinstance(value, (str, type(None))) and fingerprint is not None:
                inputs[f"{ispec.name}#file"] = fingerprint(ispec.file_kind, value or "")
        payload = {"type": spec.name, "version": spec.version, "mode": node.mode, "inputs": inputs}
        if nid in extra:
            payload["extra"] = extra[nid]
        signatures[nid] = digest(payload)
    return signatures


def stat_fingerprint(path: Path) -> list[int] | None:
    """[size, mtime_ns] of a file (or of a folder's files, for HF-style model folders)."""
    from engine.models.paths import fingerprint

    try:
        return list(fingerprint(path))
    except OSError:
        return None
