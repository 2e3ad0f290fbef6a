"""Dtype policy: how a model computes and how its weights are held.

Invariants:
- A `DTypePolicy` says how a model computes (`compute`) and how its weights are held (`storage`:
  the compute dtype, or float8 weight storage upcast layer by layer where torch has float8).
  Precision-critical modules (norms, timestep embedders, modulation tables) stay float32, as
  diffusers keeps them when it loads in half precision.
- Casting is one tensor at a time: never a second copy of a model. `param_targets` says, before any
  weight is read, which dtype each parameter ends in, so loaders (engine.models.wan_dit) convert
  every tensor straight from the file to that dtype and nothing is cast twice.
- `auto` computes in bf16 on CUDA (where supported) and on CPUs with fast bf16 matmuls (AMX or
  AVX512-BF16; `REELGRAPH_CPU_BF16=0/1` overrides the detection), fp32 on other CPUs; the VAE
  stays fp32. `explain_dtype` says what was chosen and why, for the loader nodes' logs.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import torch

from engine.choices import DTYPE_CHOICES  # lives there so node schemas need no torch
from engine.devices import pick_device

_NAMED = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
CPU_BF16_ENV = "REELGRAPH_CPU_BF16"  # "1": treat this CPU as fast in bf16, "0": as not (tests pin it)


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


def cpu_fast_bf16(env: str | None = None, flags: Iterable[str] | None = None) -> tuple[bool, str]:
    """(whether this CPU runs bf16 matmuls fast, why). Fast means AMX-BF16 or AVX512-BF16, where
    oneDNN's bf16 kernels beat fp32 (about 1.8x per Wan step with AMX); without them bf16 is
    emulated and slower than fp32. `env` (default: $REELGRAPH_CPU_BF16) "1"/"0" overrides the
    detection; `flags` (default: torch's CPU probes, then /proc/cpuinfo) is for tests."""
    env = os.environ.get(CPU_BF16_ENV) if env is None else env
    if env is not None and env.strip() != "":
        on = env.strip().lower() in ("1", "true", "yes", "on")
        return on, f"{CPU_BF16_ENV}={env.strip()}"
    found = set(flags) if flags is not None else _cpu_bf16_flags()
    for flag, label in (("amx_bf16", "AMX-BF16"), ("avx512_bf16", "AVX512-BF16")):
        if flag in found:
            return True, f"this CPU has {label}"
    return False, "this CPU has neither AMX-BF16 nor AVX512-BF16 (bf16 would be emulated, slower)"


@functools.lru_cache(maxsize=1)
def _cpu_bf16_flags() -> frozenset[str]:
    """The bf16-relevant CPU features: torch's own probes where it has them, else /proc/cpuinfo."""
    found: set[str] = set()
    cpu = getattr(torch, "cpu", None)
    for probe, flag in (("_is_amx_tile_supported", "amx_bf16"),
                        ("_is_avx512_bf16_supported", "avx512_bf16")):
        fn = getattr(cpu, probe, None)
        try:
            if fn is not None and fn():
                found.add(flag)
        except Exception:  # noqa: BLE001 - a private probe; fall back to cpuinfo
            pass
    if not found:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
                for line in f:
                    if line.startswith("flags"):
                        found |= {x for x in line.split(":", 1)[1].split()
                                  if x in ("amx_bf16", "avx512_bf16")}
                        break
        except OSError:
            pass  # not Linux: no fast bf16 assumed
    return frozenset(found)


def dtype_policy(choice: str = "auto", device: torch.device | str | None = None,
                 kind: str = "dit") -> DTypePolicy:
    """The policy for `choice` (one of DTYPE_CHOICES) on `device` for a model `kind`
    ("dit", "vae", "text_encoder"). auto: bf16 on CUDA when supported (fp16 otherwise) and on CPUs
    with fast bf16 (`cpu_fast_bf16`) for transformers, fp32 on other CPUs and MPS, fp32 for the
    VAE (its decoder is sensitive, and diffusers' Wan examples run it in fp32)."""
    return explain_dtype(choice, device, kind)[0]


def explain_dtype(choice: str = "auto", device: torch.device | str | None = None,
                  kind: str = "dit") -> tuple[DTypePolicy, str]:
    """`dtype_policy` plus one sentence saying what was chosen and why (for the loaders' logs)."""
    device = pick_device(device)
    if choice not in DTYPE_CHOICES:
        raise ValueError(f"unknown dtype {choice!r}; expected one of {', '.join(DTYPE_CHOICES)}")
    if device.type == "cuda":
        bf16_ok = torch.cuda.is_bf16_supported()
        half = torch.bfloat16 if bf16_ok else torch.float16
        why = "CUDA" if bf16_ok else "this GPU has no bf16"
    elif device.type == "cpu":
        fast, why = cpu_fast_bf16()
        half = torch.bfloat16 if fast else torch.float32
    else:
        half, why = torch.float32, f"{device.type} computes in fp32 here"
    if choice == "auto":
        if kind == "vae":
            policy, why = DTypePolicy(torch.float32), "the VAE decoder is precision-sensitive"
        else:
            policy = DTypePolicy(half)
        return policy, f"auto -> {policy.name} on {device.type} ({why})"
    if choice == "fp8":
        if not fp8_supported():
            raise ValueError("fp8 weight storage needs a torch build with float8 dtypes")
        policy = DTypePolicy(half, torch.float8_e4m3fn)
        return policy, f"fp8 weights, computing in {policy.name.split('+')[1]} ({why})"
    if choice == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError("this GPU does not support bf16; choose fp16 or fp32")
    return DTypePolicy(_NAMED[choice]), f"{choice} as chosen"


def keep_file_fp8(choice: Any, file_is_fp8: bool) -> tuple[bool, str]:
    """Whether a file's float8 weights stay in 8 bits as stored (upcast per layer as it runs):
    under `auto`, as ComfyUI loads fp8 files, because dequantising doubles the RAM a file needs
    (a 14B fp8 DiT is 14 GiB as stored, 28 in bf16; the scaled-fp8 UMT5-XXL 6.3, 11 in bf16).
    Weights the file stores in 16/32 bits are cast to the compute dtype as usual. (keep, why)."""
    if choice not in (None, "auto") or not file_is_fp8 or not fp8_supported():
        return False, ""
    return True, "the file stores fp8 weights: kept in 8 bits as stored, upcast per layer"


def layerwise_cast_modules(module: torch.nn.Module, skip: Iterable[str] = ()) -> set[str]:
    """Names of the submodules diffusers' `enable_layerwise_casting` would hold in the storage
    dtype (its traversal: skip by name pattern or listed name, else a supported layer type is
    cast whole, else recurse), so their weights can be converted once, straight from the file."""
    from diffusers.hooks._common import _GO_LC_SUPPORTED_PYTORCH_LAYERS
    from diffusers.hooks.layerwise_casting import DEFAULT_SKIP_MODULES_PATTERN

    patterns = tuple(DEFAULT_SKIP_MODULES_PATTERN) + tuple(
        getattr(module, "_keep_in_fp32_modules", None) or ()) + tuple(
        getattr(module, "_skip_layerwise_casting_patterns", None) or ())
    skipped = set(skip)
    out: set[str] = set()

    def walk(m: torch.nn.Module, prefix: str) -> None:
        if prefix in skipped or any(re.search(p, prefix) for p in patterns):
            return
        if isinstance(m, _GO_LC_SUPPORTED_PYTORCH_LAYERS):
            out.add(prefix)
            return
        for name, child in m.named_children():
            walk(child, f"{prefix}.{name}" if prefix else name)

    walk(module, "")
    return out


def param_targets(module: torch.nn.Module, policy: DTypePolicy, keep_fp32: Sequence[str] = (),
                  no_storage: Iterable[str] = ()) -> dict[str, torch.dtype]:
    """The dtype each floating parameter of `module` (meta or real) ends in under `policy`:
    float32 where a name component is in `keep_fp32` (diffusers' `_keep_in_fp32_modules` rule),
    the storage dtype in layers that layerwise casting holds in float8, else the compute dtype.
    Parameters of layers marked `quantized_weights` (they dequantise their own weights) have no
    entry; `no_storage` names layers that will become such layers (kept out of float8 casting)."""
    keep = set(keep_fp32)
    quantized = {name for name, m in module.named_modules() if getattr(m, "quantized_weights", False)}
    stored = (layerwise_cast_modules(module, skip=quantized | set(no_storage))
              if policy.storage is not None else set())
    out: dict[str, torch.dtype] = {}
    for name, param in module.named_parameters():
        owner = name.rpartition(".")[0]
        if owner in quantized or not param.is_floating_point():
            continue
        if owner in stored:
            out[name] = policy.storage  # type: ignore[assignment]
        elif keep.intersection(name.split(".")):
            out[name] = torch.float32
        else:
            out[name] = policy.compute
    return out


def apply_dtype_policy(module: torch.nn.Module, policy: DTypePolicy,
                       keep_fp32: Sequence[str] = ()) -> torch.nn.Module:
    """Cast `module`'s parameters for `policy`, one tensor at a time (peak memory: one extra
    tensor, never a second copy of the model), each straight to its `param_targets` dtype: weights
    already loaded in their final dtype are not touched. Buffers (e.g. RoPE tables) are left as
    built. With float8 storage the weights are held in float8 and upcast per layer by diffusers'
    layerwise casting hooks. Layers marked `quantized_weights` (fp8 kept as stored, GGUF) are left
    alone: they dequantise their own weights per call."""
    # Straight to each parameter's final dtype (float8 too): no compute-dtype copy first.
    # Layers that hold their own quantised weights (fp8 as stored, GGUF blocks: engine.models.
    # quantized / gguf_weights) dequantise per call and have no target; casting them would undo that.
    quantized = {name for name, m in module.named_modules() if getattr(m, "quantized_weights", False)}
    enable = getattr(module, "enable_layerwise_casting", None)
    if policy.storage is not None and enable is None:
        raise ValueError(f"{type(module).__name__} does not support float8 weight storage")
    targets = param_targets(module, policy, keep_fp32)
    for name, param in module.named_parameters():
        target = targets.get(name)
        if target is not None and param.dtype != target:
            param.data = param.data.to(target)
    if policy.storage is not None:
        skip = tuple({type(module.get_submodule(n)) for n in quantized}) or None
        enable(storage_dtype=policy.storage, compute_dtype=policy.compute, skip_modules_classes=skip)
    return module
