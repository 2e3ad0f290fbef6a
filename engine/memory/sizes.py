"""How big models and their working memory are.

- `module_bytes`: bytes a loaded module holds (parameters and buffers at their stored dtype, so fp8
  and GGUF layers count their 8-bit storage; a layer may report its own with `storage_bytes()`).
- `wan_dit_footprint`, `umt5_xxl_footprint`, `wan_vae_footprint`: the real sizes of the released
  models, computed by building them from their diffusers / transformers configs on the meta device
  (no allocation), under a storage policy (fp32 / bf16 / fp8 weights).
- `dit_activation_bytes`, `vae_decode_bytes`: working-memory estimates for one forward pass.
"""

from __future__ import annotations

import functools
from typing import Any

import torch

from engine.memory.planner import Footprint

# diffusers' WanTransformer3DModel configs of the released models (Wan-AI/*-Diffusers)
WAN_CONFIGS: dict[str, dict[str, Any]] = {
    "wan2.1-t2v-1.3b": dict(num_attention_heads=12, attention_head_dim=128, num_layers=30,
                            ffn_dim=8960, in_channels=16, out_channels=16, text_dim=4096,
                            freq_dim=256, patch_size=(1, 2, 2), cross_attn_norm=True,
                            qk_norm="rms_norm_across_heads", eps=1e-6),
    "wan2.1-t2v-14b": dict(num_attention_heads=40, attention_head_dim=128, num_layers=40,
                           ffn_dim=13824, in_channels=16, out_channels=16, text_dim=4096,
                           freq_dim=256, patch_size=(1, 2, 2), cross_attn_norm=True,
                           qk_norm="rms_norm_across_heads", eps=1e-6),
}
WAN_CONFIGS["wan2.2-a14b-expert"] = dict(WAN_CONFIGS["wan2.1-t2v-14b"])  # each A14B expert
WAN_CONFIGS["wan2.1-i2v-14b"] = dict(WAN_CONFIGS["wan2.1-t2v-14b"], in_channels=36, image_dim=1280,
                                     added_kv_proj_dim=5120)

_FLOAT_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2, "fp8": 1}


def module_bytes(module: torch.nn.Module) -> int:
    """Bytes held by `module`'s parameters and buffers as stored (a submodule with a
    `storage_bytes()` method reports its own, e.g. a packed quantised layer)."""
    total = 0
    seen: set[int] = set()
    for sub in module.modules():
        own = getattr(sub, "storage_bytes", None)
        if callable(own) and sub is not module:
            total += int(own())
            seen.update(id(t) for t in sub.parameters())
            seen.update(id(t) for t in sub.buffers())
    for tensor in (*module.parameters(), *module.buffers()):
        if id(tensor) not in seen:
            seen.add(id(tensor))
            total += tensor.element_size() * tensor.nelement()
    return total


def _policy_bytes(module: torch.nn.Module, storage: str, compute: str) -> int:
    """Bytes of a meta module whose Linear weights are stored as `storage`, the rest as `compute`
    (fp8 files keep norms, biases and modulation in higher precision)."""
    linear_weights = {id(m.weight) for m in module.modules() if isinstance(m, torch.nn.Linear)}
    total = 0
    for p in module.parameters():
        dtype = storage if id(p) in linear_weights else compute
        total += p.nelement() * _FLOAT_BYTES[dtype]
    total += sum(b.nelement() * _FLOAT_BYTES[compute] for b in module.buffers())
    return total


@functools.lru_cache(maxsize=None)
def _meta_wan(name: str) -> torch.nn.Module:
    from diffusers import WanTransformer3DModel

    with torch.device("meta"):
        return WanTransformer3DModel(**WAN_CONFIGS[name])


def wan_param_count(name: str) -> int:
    return sum(p.nelement() for p in _meta_wan(name).parameters())


def wan_dit_footprint(name: str, storage: str = "bf16", compute: str = "bf16",
                      label: str | None = None) -> Footprint:
    """The footprint of the released Wan DiT `name` (a WAN_CONFIGS key) stored as `storage`."""
    module = _meta_wan(name)
    cfg = WAN_CONFIGS[name]
    block = _policy_bytes(module.blocks[0], storage, compute)
    return Footprint(name=label or f"{name} {storage}", role="dit",
                     weight_bytes=_policy_bytes(module, storage, compute), block_bytes=block,
                     blocks=len(module.blocks),
                     hidden=cfg["num_attention_heads"] * cfg["attention_head_dim"],
                     ffn=cfg["ffn_dim"], compute_bytes=_FLOAT_BYTES[compute],
                     largest_layer=_largest_linear(module) if storage == "fp8" else 0)


def _largest_linear(module: torch.nn.Module) -> int:
    """Elements of the biggest Linear weight: an fp8 layer upcasts one of these per call."""
    return max((m.weight.nelement() for m in module.modules() if isinstance(m, torch.nn.Linear)),
               default=0)


@functools.lru_cache(maxsize=None)
def _meta_umt5() -> torch.nn.Module:
    from transformers import UMT5Config, UMT5EncoderModel

    config = UMT5Config(vocab_size=256384, d_model=4096, d_kv=64, d_ff=10240, num_layers=24,
                        num_heads=64, feed_forward_proj="gated-gelu")
    with torch.device("meta"):
        return UMT5EncoderModel(config)


def umt5_xxl_footprint(storage: str = "bf16", compute: str = "bf16") -> Footprint:
    """Wan's text encoder (the UMT5-XXL encoder, 5.7B parameters). Its embedding stays in the
    compute dtype in fp8 files."""
    module = _meta_umt5()
    total = _policy_bytes(module, storage, compute)
    return Footprint(name=f"umt5-xxl {storage}", role="text_encoder", weight_bytes=total,
                     compute_bytes=_FLOAT_BYTES[compute])


@functools.lru_cache(maxsize=None)
def _meta_vae() -> torch.nn.Module:
    from diffusers import AutoencoderKLWan

    with torch.device("meta"):
        return AutoencoderKLWan()  # diffusers' defaults are Wan 2.1's VAE


def wan_vae_footprint(dtype: str = "fp32") -> Footprint:
    module = _meta_vae()
    return Footprint(name=f"wan2.1-vae {dtype}", role="vae",
                     weight_bytes=_policy_bytes(module, dtype, dtype),
                     compute_bytes=_FLOAT_BYTES[dtype])
