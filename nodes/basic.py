"""Primitive and utility nodes: constants, arithmetic, procedural images, debugging aids.

Thin by design: each `execute` is a few lines over torch. IMAGE values are float32 (B, H, W, 3)
in [0, 1] on the CPU (see engine/values.py). torch is imported by the nodes that compute on
images, when they run, so the registry loads without it.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

from engine.context import ExecutionContext
from engine.errors import NodeError
from engine.schema import Input, NodeSpec, NodeType, Output
from engine.sockets import SocketType as T

if TYPE_CHECKING:
    import torch


class Text(NodeType):
    """A block of text (a prompt, a caption, a file name) to feed into other nodes."""

    spec = NodeSpec(
        name="Text", category="primitives", description=__doc__,
        inputs=(Input("text", T.TEXT, "", multiline=True),),
        outputs=(Output("text", T.TEXT),),
    )

    @classmethod
    def execute(cls, ctx: ExecutionContext, text: str) -> dict[str, Any]:
        return {"text": text}


class JoinText(NodeType):
    """Join two texts with a separator (e.g. a style suffix onto a prompt)."""

    spec = NodeSpec(
        name="JoinText", category="primitives", description=__doc__,
        inputs=(Input("a", T.TEXT, ""), Input("b", T.TEXT, ""), Input("separator", T.STRING, " ")),
        outputs=(Output("text", T.TEXT),),
    )

    @classmethod
    def execute(cls, ctx: ExecutionContext, a: str, b: str, separator: str) -> dict[str, Any]:
        return {"text": separator.join(part for part in (a, b) if part)}


class Int(NodeType):
    """An integer constant (frames, steps, seeds) that several nodes can share."""

    spec = NodeSpec(
        name="Int", category="primitives", description=__doc__,
        inputs=(Input("value", T.INT, 0, min=-(2**63), max=2**63 - 1),),
        outputs=(Output("value", T.INT),),
    )

    @classmethod
    def execute(cls, ctx: ExecutionContext, value: int) -> dict[str, Any]:
        return {"value": value}


class Float(NodeType):
    """A floating-point constant (cfg, strength) that several nodes can share."""

    spec = NodeSpec(
        name="Float", category="primitives", description=__doc__,
        inputs=(Input("value", T.FLOAT, 0.0),),
        outputs=(Output("value", T.FLOAT),),
    )

    @classmethod
    def execute(cls, ctx: ExecutionContext, value: float) -> dict[str, Any]:
        return {"value": value}


_MATH = {
    "add": lambda a, b: a + b,
    "subtract": lambda a, b: a - b,
    "multiply": lambda a, b: a * b,
    "divide": lambda a, b: a / b,
    "power": lambda a, b: a ** b,
    "min": min,
    "max": max,
}


class MathFloat(NodeType):
    """Arithmetic on two numbers: add, subtract, multiply, divide, power, min, max."""

    spec = NodeSpec(
        name="MathFloat", category="primitives", description=__doc__,
        inputs=(Input("a", T.FLOAT, 0.0), Input("b", T.FLOAT, 0.0),
                Input("operation", T.STRING, "add", choices=tuple(_MATH))),
        outputs=(Output("result", T.FLOAT),),
    )

    @classmethod
    def execute(cls, ctx: ExecutionContext, a: float, b: float, operation: str) -> dict[str, Any]:
        if operation == "divide" and b == 0:
            raise NodeError("division by zero; give b a non-zero value", input="b")
        try:
            result = float(_MATH[operation](a, b))
        except (OverflowError, ValueError, ZeroDivisionError) as exc:
            raise NodeError(f"{operation}({a}, {b}) is undefined: {exc}") from None
        if not math.isfinite(result):
            raise NodeError(f"{operation}({a}, {b}) is not a finite number")
        return {"result": result}


def parse_color(text: str, input_name: str) -> torch.Tensor:
    """'#rrggbb' or 'r,g,b' (0-255) -> (3,) float tensor in [0, 1]."""
    import torch

    s = text.strip()
    try:
        if s.startswith("#") and len(s) == 7:
            rgb = [int(s[i:i + 2], 16) for i in (1, 3, 5)]
        else:
            rgb = [int(float(p)) for p in s.split(",")]
        if len(rgb) != 3 or not all(0 <= c <= 255 for c in rgb):
            raise ValueError
    except ValueError:
        raise NodeError(f"{text!r} is not a colour; write '#ff8800' or '255,136,0'",
                        input=input_name) from None
    return torch.tensor(rgb, dtype=torch.float32) / 255.0


class ImageGradient(NodeType):
    """A procedural gradient image between two colours: horizontal, vertical or radial."""

    spec = NodeSpec(
        name="ImageGradient", category="image", description=__doc__,
        inputs=(Input("width", T.INT, 256, min=1, max=8192), Input("height", T.INT, 256, min=1, max=8192),
                Input("color_a", T.STRING, "#000000"), Input("color_b", T.STRING, "#ffffff"),
                Input("direction", T.STRING, "horizontal", choices=("horizontal", "vertical", "radial"))),
        outputs=(Output("image", T.IMAGE),),
    )

    @classmethod
    def execute(cls, ctx: ExecutionContext, width: int, height: int, color_a: str, color_b: str,
                direction: str) -> dict[str, Any]:
        import torch

        a, b = parse_color(color_a, "color_a"), parse_color(color_b, "color_b")
        ys = torch.linspace(0, 1, height).view(height, 1).expand(height, width)
        xs = torch.linspace(0, 1, width).view(1, width).expand(height, width)
        if direction == "horizontal":
            t = xs
        elif direction == "vertical":
            t = ys
        else:
            t = torch.sqrt((xs - 0.5) ** 2 + (ys - 0.5) ** 2) / math.sqrt(0.5)
        image = a + (b - a) * t.unsqueeze(-1)  # (H, W, 3)
        return {"image": image.clamp(0, 1).unsqueeze(0).contiguous()}  # (1, H, W, 3)


_BLEND = {
    "normal": lambda a, b: b,
    "multiply": lambda a, b: a * b,
    "screen": lambda a, b: 1 - (1 - a) * (1 - b),
    "add": lambda a, b: (a + b).clamp(0, 1),
    "difference": lambda a, b: (a - b).abs(),
}


class ImageBlend(NodeType):
    """Blend image_b over image_a with a blend mode and an opacity (sizes must match)."""

    spec = NodeSpec(
        name="ImageBlend", category="image", description=__doc__,
        inputs=(Input("image_a", T.IMAGE), Input("image_b", T.IMAGE),
                Input("factor", T.FLOAT, 0.5, min=0.0, max=1.0, step=0.01),
                Input("mode", T.STRING, "normal", choices=tuple(_BLEND))),
        outputs=(Output("image", T.IMAGE),),
    )

    @classmethod
    def execute(cls, ctx: ExecutionContext, image_a: torch.Tensor, image_b: torch.Tensor,
                factor: float, mode: str) -> dict[str, Any]:
        if image_a.shape[1:] != image_b.shape[1:]:
            raise NodeError(f"image sizes differ: {tuple(image_a.shape[1:3])} vs "
                            f"{tuple(image_b.shape[1:3])} (H, W); resize one first", input="image_b")
        blended = _BLEND[mode](image_a, image_b)
        return {"image": (image_a * (1 - factor) + blended * factor).clamp(0, 1)}


class Delay(NodeType):
    """Wait for a number of steps, reporting progress each step, then pass the value through.
    Useful to test stop/interrupt behaviour and progress display."""

    spec = NodeSpec(
        name="Delay", category="utility", description=__doc__,
        inputs=(Input("value", T.INT, 0), Input("steps", T.INT, 10, min=1, max=100000),
                Input("step_seconds", T.FLOAT, 0.1, min=0.0, max=60.0)),
        outputs=(Output("value", T.INT),),
    )

    @classmethod
    def execute(cls, ctx: ExecutionContext, value: int, steps: int, step_seconds: float) -> dict[str, Any]:
        for step in range(steps):
            ctx.progress(step / steps, f"step {step + 1}/{steps}")  # raises Interrupted on stop
            time.sleep(step_seconds)
        ctx.progress(1.0)
        return {"value": value}


class RaiseError(NodeType):
    """Fail on purpose with a message when `enabled` — to test error handling of a graph."""

    spec = NodeSpec(
        name="RaiseError", category="utility", description=__doc__,
        inputs=(Input("value", T.INT, 0), Input("message", T.STRING, "failed on purpose"),
                Input("enabled", T.BOOL, True)),
        outputs=(Output("value", T.INT),),
    )

    @classmethod
    def execute(cls, ctx: ExecutionContext, value: int, message: str, enabled: bool) -> dict[str, Any]:
        if enabled:
            raise NodeError(message)
        return {"value": value}
