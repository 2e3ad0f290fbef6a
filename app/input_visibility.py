"""Which of a node's inputs apply to its current mode (e.g. Recaption's backend).

A node with a choice input (e.g. `backend`: builtin / local / openai) documents its mode-specific
inputs by starting their tooltip with the choices they belong to — "local: a causal LM folder",
"local/openai: 0 = greedy". Such an input is hidden (inspector and canvas) while the choice input
holds another value. Inputs that are linked, or whose tooltip names no choice, always show. The
rule reads only the schema, so node packs get it for free; hiding never changes a value or a run.
"""

from __future__ import annotations

import re
from typing import Any

_PREFIX = re.compile(r"^\s*([A-Za-z0-9_-]+(?:/[A-Za-z0-9_-]+)*)\s*:")


def applies_to(tooltip: str, choices: tuple[str, ...]) -> set[str] | None:
    """The choices a tooltip's prefix names, or None when it names none of `choices` only."""
    match = _PREFIX.match(tooltip or "")
    if match is None:
        return None
    names = set(match.group(1).split("/"))
    return names if names <= set(choices) else None


def hidden_inputs(spec: Any, values: dict[str, Any], linked: set[str] = frozenset()) -> set[str]:
    """Names of the inputs of `spec` that do not apply to the node's current choices."""
    if spec is None:
        return set()
    hidden: set[str] = set()
    selectors = [i for i in spec.inputs if i.choices and i.name not in linked]
    for selector in selectors:
        current = values.get(selector.name, selector.default)
        for ispec in spec.inputs:
            if ispec is selector or ispec.name in linked:
                continue
            names = applies_to(ispec.tooltip, selector.choices)
            if names is not None and current not in names:
                hidden.add(ispec.name)
    return hidden
