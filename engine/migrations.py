"""Named, ordered migrations of the workflow format. One step per version bump; old sample files
live in tests/data/ so every step stays exercised.

Version history:
- 1: early format. Node positions lived inside each node (`"pos": [x, y]`), links were 4-element
  lists `[from_node, from_output, to_node, to_input]`.
- 2: layout moved to the `layout` side table (so it can never touch execution or cache keys);
  links became objects, so they are recognised by name, never by shape.
- 3: a workflow no longer says where secrets go. Recaption lost `api_key_env` (the environment
  variable holding a key is a setting of the user's providers) and gained `provider`; a
  `base_url` that was the default local server or OpenAI's API becomes that provider, any other
  address stays in `base_url`, which runs only once the user approves it (engine.providers).
- 4: subgraphs. A top-level `subgraphs` table holds definitions and a node
  `{"type": "Subgraph", "subgraph": "<id>"}` is an instance of one. Nothing in a version-3 file
  changes meaning, so the step only marks the version: an older build then says the file is newer
  instead of running it with its subgraph nodes as unknown placeholders.
"""

from __future__ import annotations

import copy
from typing import Any, Callable

FORMAT_NAME = "reelgraph.workflow"
CURRENT_VERSION = 4


def _v1_to_v2(doc: dict[str, Any]) -> dict[str, Any]:
    # rewrites nodes and layout in place: the caller's top-level dict is a copy, these are not
    for key in ("nodes", "layout"):
        if key in doc:
            doc[key] = copy.deepcopy(doc[key])
    layout = doc.setdefault("layout", {})
    if not isinstance(layout, dict):
        return doc  # leave it for the shape check to report
    layout_nodes = layout.setdefault("nodes", {})
    nodes = doc.get("nodes")
    if isinstance(nodes, dict):
        for nid, node in nodes.items():
            if isinstance(node, dict):
                for key in ("pos", "size", "color", "collapsed"):
                    if key in node:
                        layout_nodes.setdefault(nid, {})[key] = node.pop(key)
    links = doc.get("links")
    if isinstance(links, list):
        doc["links"] = [
            {"from": {"node": l[0], "output": l[1]}, "to": {"node": l[2], "input": l[3]}}
            if isinstance(l, list) and len(l) == 4 else l
            for l in links
        ]
    return doc


_KNOWN_ENDPOINTS = {"http://127.0.0.1:11434/v1": "ollama-local", "http://localhost:11434/v1":
                    "ollama-local", "https://api.openai.com/v1": "openai"}


def _v2_to_v3(doc: dict[str, Any]) -> dict[str, Any]:
    nodes = doc.get("nodes")
    if not isinstance(nodes, dict):
        return doc
    doc["nodes"] = nodes = copy.deepcopy(nodes)
    for node in nodes.values():
        if not isinstance(node, dict) or node.get("type") != "Recaption":
            continue
        inputs = node.get("inputs")
        if not isinstance(inputs, dict):
            continue
        inputs.pop("api_key_env", None)
        url = inputs.get("base_url")
        if isinstance(url, str) and url.strip().rstrip("/") in _KNOWN_ENDPOINTS:
            inputs["provider"] = _KNOWN_ENDPOINTS[url.strip().rstrip("/")]
            del inputs["base_url"]
    return doc


def _v3_to_v4(doc: dict[str, Any]) -> dict[str, Any]:
    return doc  # subgraphs are new; every version-3 document is a valid version-4 document


# MIGRATIONS[v] turns a version-v document into a version-(v+1) document.
MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: _v1_to_v2, 2: _v2_to_v3, 3: _v3_to_v4}


def migrate(doc: dict[str, Any], version: int) -> dict[str, Any]:
    """Apply every step from `version` up to CURRENT_VERSION (newer documents pass unchanged).
    Steps may replace top-level entries of `doc` but copy anything nested before changing it."""
    while version < CURRENT_VERSION:
        doc = MIGRATIONS[version](doc)
        version += 1
    doc["version"] = max(version, CURRENT_VERSION)
    return doc
