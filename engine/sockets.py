"""Socket types: the vocabulary that decides which outputs may feed which inputs.

Invariant: a link is legal only when `can_connect(output_type, input_type)` is true; the same check
runs when the studio draws a wire and when a graph file is loaded, and it returns a readable reason.
ANY exists for the few nodes that truly accept everything (Preview); it is never an output type of a
pipeline stage.
"""

from __future__ import annotations

from enum import Enum


class SocketType(str, Enum):
    """Data types carried by links. The string value is what graph files and the catalogue show."""

    TEXT = "TEXT"
    CONDITIONING = "CONDITIONING"
    LATENT = "LATENT"
    IMAGE = "IMAGE"
    VIDEO = "VIDEO"
    MASK = "MASK"
    DIT = "DIT"
    VAE = "VAE"
    TEXT_ENCODER = "TEXT_ENCODER"
    INTERPOLATOR = "INTERPOLATOR"
    LLM = "LLM"
    CLIP_VISION = "CLIP_VISION"
    CLIP_VISION_OUTPUT = "CLIP_VISION_OUTPUT"
    INT = "INT"
    FLOAT = "FLOAT"
    STRING = "STRING"
    BOOL = "BOOL"
    TENSOR = "TENSOR"
    ANY = "ANY"

    def __str__(self) -> str:
        return self.value


# Types a literal (widget) value can carry; everything else only arrives over a link.
LITERAL_TYPES = frozenset(
    {SocketType.INT, SocketType.FLOAT, SocketType.STRING, SocketType.BOOL, SocketType.TEXT}
)

# Implicit widenings: an INT output may feed a FLOAT input; TEXT and STRING are interchangeable.
_COMPATIBLE = {
    (SocketType.INT, SocketType.FLOAT),
    (SocketType.TEXT, SocketType.STRING),
    (SocketType.STRING, SocketType.TEXT),
}


def can_connect(output_type: SocketType, input_type: SocketType) -> tuple[bool, str]:
    """Whether an output of `output_type` may feed an input of `input_type`, with a reason if not."""
    if output_type == input_type or input_type == SocketType.ANY:
        return True, ""
    if (output_type, input_type) in _COMPATIBLE:
        return True, ""
    return False, f"needs {input_type.value}, got {output_type.value}"


def parse_socket_type(name: str) -> SocketType:
    """The SocketType for a name from a file or a node pack; raises ValueError naming the choices."""
    try:
        return SocketType(name)
    except ValueError:
        choices = ", ".join(t.value for t in SocketType)
        raise ValueError(f"unknown socket type {name!r}; expected one of {choices}") from None
