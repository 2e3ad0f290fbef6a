"""Declarative node schema: what a node type accepts, produces and how the studio should show it.

A node type is a class deriving from `NodeType` with a class attribute `spec: NodeSpec` and a
stateless `execute(ctx, **inputs) -> dict[str, Any]` classmethod. Nothing is stored on instances;
the executor never instantiates node classes. Specs are frozen so a registry can be shared safely.

Inputs are keyed by name. An input with a literal type (INT, FLOAT, STRING, TEXT, BOOL) is a widget
whose value lives in the graph file; any input may instead be fed by a link.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from engine.sockets import LITERAL_TYPES, SocketType

if TYPE_CHECKING:
    from engine.context import ExecutionContext

_MISSING = object()


@dataclass(frozen=True)
class InputSpec:
    """One named input of a node type.

    `file_kind` marks a STRING input that names a file: a model folder kind (e.g. "diffusion_models")
    or "input" for user media. The signature cache then includes the file's size and mtime, and the
    studio offers a file chooser.
    """

    name: str
    type: SocketType
    default: Any = None
    min: float | None = None
    max: float | None = None
    step: float | None = None
    choices: tuple[str, ...] | None = None
    multiline: bool = False
    optional: bool = False
    tooltip: str = ""
    file_kind: str | None = None
    seed: bool = False  # the studio offers "randomize after run"
    # with `file_kind`: an empty value makes the node pick a file from the folder itself, so the
    # folder's contents are part of the cache key (without it, an empty value reads no file)
    picks_from_folder: bool = False
    link_only: bool = False  # no widget even for a literal type

    @property
    def has_widget(self) -> bool:
        return self.type in LITERAL_TYPES and not self.link_only

    @property
    def required(self) -> bool:
        """Required inputs must be linked or (for widgets) have a value or default."""
        return not self.optional

    def check_value(self, value: Any) -> str | None:
        """Why `value` is not acceptable for this input, or None when it is."""
        t = self.type
        if t == SocketType.BOOL:
            if not isinstance(value, bool):
                return f"expected true/false, got {_json_kind(value)}"
            return None
        if t == SocketType.INT:
            if isinstance(value, bool) or not isinstance(value, int):
                if isinstance(value, float) and value.is_integer():
                    return "expected an integer, got a float with a decimal point"
                return f"expected an integer, got {_json_kind(value)}"
        elif t == SocketType.FLOAT:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return f"expected a number, got {_json_kind(value)}"
            if not math.isfinite(value):
                return "expected a finite number"
        elif t in (SocketType.STRING, SocketType.TEXT):
            if not isinstance(value, str):
                return f"expected a string, got {_json_kind(value)}"
            why = unicode_problem(value)
            if why:
                return why
            if self.choices is not None and value not in self.choices:
                return f"{value!r} is not one of {', '.join(map(repr, self.choices))}"
            return None
        else:
            return f"{t.value} inputs cannot hold a value; link an output to it"
        if self.min is not None and value < self.min:
            return f"{value} is below the minimum {_fmt(self.min)}"
        if self.max is not None and value > self.max:
            return f"{value} is above the maximum {_fmt(self.max)}"
        return None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "type": self.type.value}
        for key in ("default", "min", "max", "step", "tooltip", "file_kind"):
            value = getattr(self, key)
            if value not in (None, ""):
                out[key] = value
        if self.choices is not None:
            out["choices"] = list(self.choices)
        for flag in ("multiline", "optional", "seed", "link_only"):
            if getattr(self, flag):
                out[flag] = True
        return out


@dataclass(frozen=True)
class OutputSpec:
    """One named output of a node type."""

    name: str
    type: SocketType
    tooltip: str = ""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "type": self.type.value}
        if self.tooltip:
            out["tooltip"] = self.tooltip
        return out


@dataclass(frozen=True)
class NodeSpec:
    """The full schema of a node type.

    `version` is part of every cache key: bump it when `execute` changes its results.
    `is_output` marks sinks (save, preview) that a run executes by default.
    `cacheable=False` re-runs the node every time (e.g. a remote recaptioner).
    `legacy_names` keeps graph files that used an old type name loading after a rename.
    """

    name: str
    category: str
    description: str
    inputs: tuple[InputSpec, ...] = ()
    outputs: tuple[OutputSpec, ...] = ()
    version: int = 1
    is_output: bool = False
    cacheable: bool = True
    legacy_names: tuple[str, ...] = ()
    display_name: str = ""

    def __post_init__(self) -> None:
        names = [i.name for i in self.inputs]
        if len(set(names)) != len(names):
            raise ValueError(f"node type {self.name}: duplicate input names {names}")
        outs = [o.name for o in self.outputs]
        if len(set(outs)) != len(outs):
            raise ValueError(f"node type {self.name}: duplicate output names {outs}")
        # name lookups run for every input of every node when validating: index them once
        object.__setattr__(self, "_inputs_by_name", {i.name: i for i in self.inputs})
        object.__setattr__(self, "_outputs_by_name", {o.name: o for o in self.outputs})

    def input(self, name: str) -> InputSpec | None:
        return self._inputs_by_name.get(name)  # type: ignore[attr-defined]

    def output(self, name: str) -> OutputSpec | None:
        return self._outputs_by_name.get(name)  # type: ignore[attr-defined]

    @property
    def title(self) -> str:
        return self.display_name or self.name

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "display_name": self.title,
            "category": self.category,
            "description": self.description,
            "version": self.version,
            "is_output": self.is_output,
            "cacheable": self.cacheable,
            "inputs": [i.to_json() for i in self.inputs],
            "outputs": [o.to_json() for o in self.outputs],
        }


class NodeType:
    """Base class of node types. Subclasses set `spec` and implement `execute` as a classmethod.

    `execute` receives the execution context and every input by name (defaults filled in, optional
    unconnected inputs as None) and returns a dict with one entry per output name.
    """

    spec: ClassVar[NodeSpec]

    @classmethod
    def execute(cls, ctx: "ExecutionContext", **inputs: Any) -> dict[str, Any]:
        raise NotImplementedError(f"{cls.__name__}.execute is not implemented")


# Short constructors so node modules read like a schema (in the spirit of ComfyUI's V3 io.*).
def Input(name: str, type: SocketType, default: Any = None, **kw: Any) -> InputSpec:  # noqa: N802
    if "choices" in kw and kw["choices"] is not None:
        kw["choices"] = tuple(kw["choices"])
    return InputSpec(name=name, type=type, default=default, **kw)


def Output(name: str, type: SocketType, tooltip: str = "") -> OutputSpec:  # noqa: N802
    return OutputSpec(name=name, type=type, tooltip=tooltip)


def unicode_problem(text: str) -> str | None:
    """Why `text` cannot be stored as UTF-8 (a lone surrogate, e.g. from a non-UTF-8 byte in a
    command-line argument or file), or None. Such text would pass here and fail later when a
    file, a cache key or a manifest line is written."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = text[exc.start]
        return (f"contains {ascii(bad)} at position {exc.start}, which is not valid Unicode text "
                "(was the file or command-line argument not UTF-8?); retype that character")
    return None


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)
