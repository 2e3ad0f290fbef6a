"""Seed controls, as ComfyUI users know them: what happens to a seed input after each queued run.

    fixed      the value stays (the default: a graph re-runs exactly, from the cache)
    increment  +1 (wraps from the maximum to the minimum)
    decrement  -1 (wraps from the minimum to the maximum)
    randomize  a new random value in the input's range

The control is per seed input and lives in the node's layout entry (layout never affects a run or
a cache key): `"seed_control": {"seed": "increment"}`. Randomize is also listed in the older
`"randomize": ["seed"]` list, which earlier files use and earlier studios read; a file with only
that list loads as "randomize". The studio applies the controls only after a run has passed
validation and been queued (app.main_window), as one undo step, so a refused run leaves every
seed as it was and the queued snapshot keeps the value it was queued with.
"""

from __future__ import annotations

import random
from typing import Any

MODES = ("fixed", "increment", "decrement", "randomize")
SEED_MAX = 2**32 - 1
# What each mode looks like on the canvas widget (next to the value) and in menus
GLYPHS = {"fixed": "", "increment": "+1", "decrement": "−1", "randomize": "🎲"}


def mode_of(layout_entry: dict[str, Any], name: str) -> str:
    """The control of input `name` in a node's layout entry."""
    controls = layout_entry.get("seed_control")
    if isinstance(controls, dict) and controls.get(name) in MODES:
        return controls[name]
    randomize = layout_entry.get("randomize")
    return "randomize" if isinstance(randomize, list) and name in randomize else "fixed"


def next_mode(mode: str) -> str:
    """The mode after `mode` when the canvas control is clicked (fixed -> randomize -> increment
    -> decrement -> fixed): the first click gives what the dice always meant."""
    order = ("fixed", "randomize", "increment", "decrement")
    return order[(order.index(mode) + 1) % len(order)] if mode in order else "randomize"


def layout_values(layout_entry: dict[str, Any], name: str, mode: str) -> tuple[Any, Any]:
    """The node's new ("seed_control", "randomize") layout values after setting `name` to `mode`
    (None where the key should be removed)."""
    controls = dict(layout_entry.get("seed_control") or {}) if isinstance(
        layout_entry.get("seed_control"), dict) else {}
    randomize = [n for n in (layout_entry.get("randomize") or []) if n != name] if isinstance(
        layout_entry.get("randomize"), list) else []
    controls.pop(name, None)
    if mode != "fixed":
        controls[name] = mode
    if mode == "randomize":
        randomize.append(name)
    return (controls or None), (randomize or None)


def next_value(mode: str, value: Any, lo: int, hi: int, rng: random.Random) -> int | None:
    """The seed after a queued run under `mode`, or None when it stays."""
    if mode == "randomize":
        return rng.randint(lo, max(lo, hi))
    current = int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else lo
    if mode == "increment":
        return lo if current >= hi else current + 1
    if mode == "decrement":
        return hi if current <= lo else current - 1
    return None


def bounds(spec: Any) -> tuple[int, int]:
    """(min, max) of a seed input, capped to the 32-bit range every seed fits."""
    lo = int(spec.min) if spec is not None and spec.min is not None else 0
    hi = int(min(spec.max, SEED_MAX)) if spec is not None and spec.max is not None else SEED_MAX
    return lo, hi
