"""How a cached result becomes bytes on disk and back, with a checksum over those bytes.

Two payload kinds:
- "json": a result made only of JSON values (what save nodes return: no outputs, a list of
  files). Written as UTF-8 JSON, read back without importing torch, so a fully cached re-run
  starts fast.
- "safetensors": anything with tensors, arrays or registered value dataclasses
  (engine.values.flatten): tensors in a safetensors file, the rest as JSON in its metadata.

The checksum is SHA-256 of the exact payload bytes (1.1 GB/s here), kept in the cache index, so a
flipped byte anywhere in the file, header included, is detected on read.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from typing import Any

from engine.values import NotSpillable

JSON, SAFETENSORS = "json", "safetensors"
_META_KEY = "reelgraph"


class CorruptPayload(Exception):
    """The bytes on disk are not what was written."""


def checksum(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def is_plain_json(value: Any, depth: int = 0) -> bool:
    """Whether `value` survives a JSON round trip unchanged (no tuples, no non-finite floats)."""
    if depth > 64:
        return False
    if value is None or isinstance(value, (bool, int, str)):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if type(value) is list:
        return all(is_plain_json(v, depth + 1) for v in value)
    if type(value) is dict:
        return all(isinstance(k, str) and is_plain_json(v, depth + 1) for k, v in value.items())
    return False


def encode(value: Any) -> tuple[str, bytes]:
    """(kind, payload bytes). Raises NotSpillable for values that cannot live on disk (models)."""
    if is_plain_json(value):
        return JSON, json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode(
            "utf-8", "surrogatepass")
    from safetensors.torch import save

    from engine.values import flatten

    tensors: dict = {}
    meta = flatten(value, "v", tensors)
    return SAFETENSORS, save(tensors, metadata={_META_KEY: json.dumps(meta)})


def decode(kind: str, data: bytes) -> Any:
    """Inverse of `encode`; raises CorruptPayload for bytes that do not parse."""
    try:
        if kind == JSON:
            return json.loads(data.decode("utf-8", "surrogatepass"))
        if kind == SAFETENSORS:
            from safetensors.torch import load

            from engine.values import unflatten

            meta = json.loads(_safetensors_metadata(data)[_META_KEY])
            return unflatten(meta, load(data))
    except CorruptPayload:
        raise
    except Exception as exc:  # whatever a damaged file makes the parsers raise
        raise CorruptPayload(f"{type(exc).__name__}: {exc}") from None
    raise CorruptPayload(f"unknown payload kind {kind!r}")


def _safetensors_metadata(data: bytes) -> dict[str, str]:
    """The `__metadata__` of a safetensors buffer (8-byte little-endian header size, then JSON)."""
    if len(data) < 8:
        raise CorruptPayload("truncated safetensors header")
    (size,) = struct.unpack("<Q", data[:8])
    if size > len(data) - 8:
        raise CorruptPayload("safetensors header runs past the end of the file")
    return json.loads(data[8:8 + size]).get("__metadata__") or {}


__all__ = ["CorruptPayload", "JSON", "NotSpillable", "SAFETENSORS", "checksum", "decode", "encode",
           "is_plain_json"]
