"""Dtype policy: how a model computes and how its weights are held.

Invariants:
- A `DTypePolicy` says how a model computes (`compute`) and how its weights are held (`storage`:
  the compute dtype, or float8 weight storage upcast layer by layer where torch has float8).
  Precision-critical modules (norms, timestep embedders, modulation tables) stay float32, as
  diffusers keeps them when it loads in half precision.
- Casting is one tensor at a time: never a second copy of a model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from engine.choices import DTYPE_CHOICES  # lives there so node schemas need no torch
from engine.devices import pick_device

_NAMED = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def fp8_supported() -> bool:
    """Whether this torch build has a float8 dtype for weight storage."""
    return hasattr(torch, "float8_e4m3fn")


@dataclass(frozen=True)
class DTypePolicy:
    """How a model computes and stores its weights."""

    compute: torch.dtype = torch.float32
    storage: torch.dtype | None = None  # e.g. torch.float8_e4m3fn; None = weights in `compute`

    @property
    def weight_dtype(self) -> torch.dtype:
        return self.storage or self.compute

    @property
    def name(self) -> str:
        base = {v: k for k, v in _NAMED.items()}[self.compute]
        return f"fp8+{base}" if self.storage is not None else base


def dtype_policy(choice: str = "auto", device: torch.device | str | None = None,
                 kind: str = "dit") -> DTypePolicy:
    """The policy for `choice` (one of DTYPE_CHOICES) on `device` for a model `kind`
    ("dit", "vae", "text_encoder"). auto: bf16 on CUDA when supported (fp16 otherwise) for
    transformers, fp32 for the VAE (its decoder is sensitive, and diffusers' Wan examples run it in
    fp32), fp32 on the CPU and MPS."""
    device = pick_device(device)
    if choice not in DTYPE_CHOICES:
        raise ValueError(f"unknown dtype {choice!r}; expected one of {', '.join(DTYPE_CHOICES)}")
    half = torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float16
    if choice == "auto":
        if device.type != "cuda" or kind == "vae":
            return DTypePolicy(torch.float32)
        return DTypePolicy(half)
    if choice == "fp8":
        if not fp8_supported():
            raise ValueError("fp8 weight storage needs a torch build with float8 dtypes")
        return DTypePolicy(half if device.type == "cuda" else torch.float32, torch.float8_e4m3fn)
    if choice == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError("this GPU does not support bf16; choose fp16 or fp32")
    return DTypePolicy(_NAMED[choice])


def apply_dtype_policy(module: torch.nn.Module, policy: DTypePolicy,
                       keep_fp32: Sequence[str] = ()) -> torch.nn.Module:
    """Cast `module`'s parameters for `policy`, one tensor at a time (peak memory: one extra
    tensor, never a second copy of the model). Parameters whose dotted name contains one of
    `keep_fp32` as a component become float32 (diffusers' `_keep_in_fp32_modules` rule). Buffers
    (e.g. RoPE tables) are left as built. With float8 storage the weights are then held in float8
    and upcast per layer by diffusers' layerwise casting hooks. Layers marked `quantized_weights`
    (fp8 kept as stored, GGUF) are left alone: they dequantise their own weights per call."""
    keep = set(keep_fp32)
    # Layers that hold their own quantised weights (fp8 as stored, GGUF blocks: engine.models.
    # quantized / gguf_weights) dequantise per call; casting them here would undo that.
    quantized = {name for name, m in module.named_modules() if getattr(m, "quantized_weights", False)}
    for name, param in module.named_parameters():
        if quantized and name.rpartition(".")[0] in quantized:
            continue
        target = torch.float32 if keep.intersection(name.split(".")) else policy.compute
        if param.is_floating_point() and param.dtype != target:
            param.data = param.data.to(target)
    if policy.storage is not None:
        enable = getattr(module, "enable_layerwise_casting", None)
        if enable is None:
            raise ValueError(f"{type(module).__name__} does not support float8 weight storage")
        skip = tuple({type(module.get_submodule(n)) for n in quantized}) or None
        enable(storage_dtype=policy.storage, compute_dtype=policy.compute, skip_modules_classes=skip)
    return module
