"""GGUF weight files (llama.cpp's format) as city96's ComfyUI-GGUF converter writes them for Wan.

Layout of those files: `general.architecture = "wan"`, tensor names in Wan's original layout
(`blocks.0.self_attn.q.weight`, no prefix; a `model.diffusion_model.` prefix is accepted too), shapes
stored in ggml order (reversed); large 2-D weights quantised (Q8_0, Q6_K, Q5_K, Q4_K, ...), 1-D and
small tensors and `.modulation` in F32, the rest F16/BF16. GGUF tensors were limited to 4 dims, so
the converter adds Wan's 5-D `patch_embedding.weight` back as an F32 tensor afterwards, and where it
had to flatten a tensor it stores the real shape as `comfy.gguf.orig_shape.<name>` (int32 array);
both are honoured here.

Invariants:
- Reading is header first (`gguf_shapes`): names, logical shapes and types, with every tensor's
  bytes checked to lie inside the file, so detection works from shapes exactly as for safetensors
  and a truncated file is named before anything is built.
- Quantised weights stay quantised in memory (`GGUFLinear`, an nn.Linear subclass holding the raw
  blocks) and are dequantised per layer at call time, in float32, with diffusers' torch ports of
  the ggml dequantisers (diffusers.quantizers.gguf.utils); F32/F16/BF16 tensors become ordinary
  tensors.
- An unsupported quantisation type is a ModelLoadError naming the file, the tensor, the type and
  the supported types.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.models.safe_load import ModelLoadError

ORIG_SHAPE_KEY = "comfy.gguf.orig_shape."
ARCHITECTURE_KEY = "general.architecture"
GGUF_MAGIC = b"GGUF"


def _types() -> tuple[dict[int, torch.dtype], dict[int, Any]]:
    """(plain type -> torch dtype, quantised type -> diffusers' torch dequantiser)."""
    import gguf
    from diffusers.quantizers.gguf.utils import dequantize_functions

    q = gguf.GGMLQuantizationType
    plain = {q.F32: torch.float32, q.F16: torch.float16, q.BF16: torch.bfloat16}
    quant = {t: fn for t, fn in dequantize_functions.items() if t not in plain}
    return plain, quant


def supported_types() -> list[str]:
    plain, quant = _types()
    return [t.name for t in (*plain, *quant)]


@dataclass
class GGUFTensor:
    """One tensor of a GGUF file: its ggml type, logical (torch-order) shape and data: raw blocks
    (uint8, one row of blocks per output row) when quantised, else a float tensor of `shape`."""

    name: str
    qtype: int
    type_name: str
    shape: tuple[int, ...]
    data: torch.Tensor
    quantized: bool

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        if not self.quantized:
            return self.data.to(dtype)
        return dequantize_blocks(self.data, self.qtype, self.shape, dtype)


def dequantize_blocks(raw: torch.Tensor, qtype: int, shape: tuple[int, ...],
                      dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Raw ggml blocks -> a tensor of `shape`, computed in float32 then cast to `dtype`."""
    import gguf

    _, quant = _types()
    block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
    blocks = raw.reshape(-1, type_size)
    # float32 math (diffusers' default would be float16) so results equal ggml's own reference
    out = quant[qtype](blocks, block_size, type_size, dtype=torch.float32)
    return out.reshape(shape).to(dtype)


def _reader(path: Path) -> Any:
    import gguf

    if not path.is_file():
        raise ModelLoadError(path, "the file does not exist")
    size = path.stat().st_size
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != GGUF_MAGIC:
        raise ModelLoadError(path, f"not a GGUF file (it starts with {magic!r}, not {GGUF_MAGIC!r})")
    try:
        reader = gguf.GGUFReader(str(path), "r")
    except Exception as exc:  # noqa: BLE001 - the reader meets damaged bytes with any error type
        raise ModelLoadError(path, f"truncated or damaged GGUF file ({size} bytes; the reader "
                                   f"stopped with {type(exc).__name__}: {exc}); download it again"
                             ) from None
    for t in reader.tensors:
        end = int(t.data_offset) + int(t.n_bytes)
        if end > size:
            raise ModelLoadError(path, f"truncated GGUF file: tensor {t.name!r} ends at byte {end} "
                                       f"but the file has {size} bytes; download it again")
    return reader


def _field_str(reader: Any, key: str) -> str | None:
    field = reader.get_field(key)
    if field is None or not field.data:
        return None
    return bytes(field.parts[field.data[0]]).decode("utf-8", errors="replace")


def _orig_shape(reader: Any, name: str, path: Path) -> tuple[int, ...] | None:
    field = reader.get_field(ORIG_SHAPE_KEY + name)
    if field is None:
        return None
    try:
        return tuple(int(field.parts[i][0]) for i in field.data)
    except (IndexError, TypeError, ValueError):
        raise ModelLoadError(path, f"damaged metadata {ORIG_SHAPE_KEY}{name}: expected an array of "
                                   "integers") from None


def _shape(reader: Any, t: Any, path: Path) -> tuple[int, ...]:
    stored = tuple(int(d) for d in reversed([int(x) for x in t.shape]))  # ggml order -> torch order
    shape = _orig_shape(reader, t.name, path) or stored
    if math.prod(shape) != int(t.n_elements):
        raise ModelLoadError(path, f"tensor {t.name!r}: its recorded shape {list(shape)} does not "
                                   f"hold its {int(t.n_elements)} elements")
    return shape


def _check_type(path: Path, t: Any) -> tuple[int, str]:
    import gguf

    plain, quant = _types()
    qtype = int(t.tensor_type)
    try:
        name = gguf.GGMLQuantizationType(qtype).name
    except ValueError:
        name = f"type {qtype}"
    if qtype not in plain and qtype not in quant:
        raise ModelLoadError(path, f"tensor {t.name!r} is quantised as {name}, which Reelgraph cannot "
                                   f"read; supported GGUF types: {', '.join(supported_types())}. "
                                   "Use a file quantised with one of those")
    return qtype, name


def gguf_architecture(path: Path | str) -> str | None:
    """The file's `general.architecture` ("wan" for city96's Wan files), or None."""
    return _field_str(_reader(Path(path)), ARCHITECTURE_KEY)


def gguf_shapes(path: Path | str) -> dict[str, tuple[int, ...]]:
    """name -> logical shape of every tensor, from the header only (no tensor data is read)."""
    path = Path(path)
    reader = _reader(path)
    return {t.name: _shape(reader, t, path) for t in reader.tensors}


def read_gguf(path: Path | str) -> tuple[dict[str, GGUFTensor], str | None]:
    """(tensors by name, architecture). Types are checked for every tensor before any is copied;
    quantised tensors are copied out of the memory map as raw blocks, one at a time."""
    import gguf

    path = Path(path)
    reader = _reader(path)
    plain, _ = _types()
    checked = [(t, *_check_type(path, t), _shape(reader, t, path)) for t in reader.tensors]
    tensors: dict[str, GGUFTensor] = {}
    for t, qtype, type_name, shape in checked:
        raw = np.array(t.data, copy=True)  # out of the read-only memory map
        if qtype in plain:
            data = torch.from_numpy(raw.view(np.uint8).copy()).view(plain[qtype]).reshape(shape)
            tensors[t.name] = GGUFTensor(t.name, qtype, type_name, shape, data, False)
        else:
            block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
            if shape[-1] % block_size:
                raise ModelLoadError(path, f"tensor {t.name!r} ({type_name}) has rows of {shape[-1]} "
                                           f"values, not a multiple of the block size {block_size}")
            rows = math.prod(shape[:-1]) if len(shape) > 1 else 1
            data = torch.from_numpy(raw.view(np.uint8)).reshape(rows, -1)
            tensors[t.name] = GGUFTensor(t.name, qtype, type_name, shape, data, True)
    return tensors, _field_str(reader, ARCHITECTURE_KEY)


class GGUFLinear(torch.nn.Linear):
    """A Linear whose weight stays in ggml blocks (`weight`: uint8, one row of blocks per output
    feature) and is dequantised (float32 math) to the input's dtype on every call."""

    quantized_weights = True

    def __init__(self, tensor: GGUFTensor, bias: torch.Tensor | None, compute_dtype: torch.dtype):
        out_features, in_features = tensor.shape
        with torch.device("meta"):  # no throw-away random init
            super().__init__(in_features, out_features, bias=bias is not None)
        self.weight = torch.nn.Parameter(tensor.data, requires_grad=False)
        if bias is not None:
            self.bias = torch.nn.Parameter(bias.to(compute_dtype), requires_grad=False)
        self.quant_type = tensor.qtype
        self.quant_name = tensor.type_name
        self.compute_dtype = compute_dtype

    def dequantized_weight(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        return dequantize_blocks(self.weight, self.quant_type, (self.out_features, self.in_features),
                                 dtype or self.compute_dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.bias.to(x.dtype) if self.bias is not None else None
        return torch.nn.functional.linear(x, self.dequantized_weight(x.dtype), bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, gguf={self.quant_name}"


def type_counts(tensors: dict[str, GGUFTensor]) -> dict[str, int]:
    """ggml type name -> number of tensors of that type (for provenance)."""
    counts: dict[str, int] = {}
    for t in tensors.values():
        counts[t.type_name] = counts.get(t.type_name, 0) + 1
    return counts


def main_quant_type(tensors: dict[str, GGUFTensor]) -> str:
    """The type holding most of the parameters among quantised tensors (else among all)."""
    pool = [t for t in tensors.values() if t.quantized] or list(tensors.values())
    params: dict[str, int] = {}
    for t in pool:
        params[t.type_name] = params.get(t.type_name, 0) + math.prod(t.shape)
    return max(params, key=params.__getitem__) if params else "empty"
