"""Tiny random Wan LoRAs in the key layouts found in the wild, for tests and example workflows.

`lora_state` builds one LoRA for a tiny DiT of tests/tiny_models.py in Wan's original names
(no prefix); `in_format` rewrites it into another layout; `write_lightx2v` writes the layout of
lightx2v's distillation LoRAs (lora_down/lora_up/alpha pairs plus .diff/.diff_b for norms,
biases, modulation and the patch embedding) under ComfyUI's `diffusion_model.` prefix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from tests.tiny_models import DIT_VARIANTS

# Linear layers of a block in Wan's original names -> diffusers names
BLOCK_LINEARS = {"self_attn.q": "attn1.to_q", "self_attn.k": "attn1.to_k", "self_attn.v": "attn1.to_v",
                 "self_attn.o": "attn1.to_out.0", "cross_attn.q": "attn2.to_q",
                 "cross_attn.k": "attn2.to_k", "cross_attn.v": "attn2.to_v",
                 "cross_attn.o": "attn2.to_out.0", "ffn.0": "ffn.net.0.proj", "ffn.2": "ffn.net.2"}
FORMATS = ("comfyui", "original_ab", "kohya", "peft", "diffusers_prefixed")


def _linear_shapes(variant: str) -> dict[str, tuple[int, int]]:
    """Original module name -> (out, in) for every Linear a LoRA of this tiny model targets."""
    cfg = DIT_VARIANTS[variant]
    dim = cfg["num_attention_heads"] * cfg["attention_head_dim"]
    shapes = {}
    for i in range(cfg["num_layers"]):
        for name in BLOCK_LINEARS:
            out_f, in_f = dim, dim
            if name in ("cross_attn.k", "cross_attn.v"):
                in_f = dim
            if name == "ffn.0":
                out_f = cfg["ffn_dim"]
            if name == "ffn.2":
                in_f = cfg["ffn_dim"]
            shapes[f"blocks.{i}.{name}"] = (out_f, in_f)
    return shapes


def lora_state(variant: str = "t2v", rank: int = 4, seed: int = 1, scale: float = 0.05,
               alpha: float | None = 2.0, diff_b: bool = True, extras: bool = True,
               num_layers: int | None = None) -> dict[str, torch.Tensor]:
    """A LoRA in Wan's original names. Every block Linear gets a pair (+ alpha, + .diff_b);
    `extras` adds the non-block pairs and the .diff keys lightx2v carries (norms, modulation,
    the head, the patch embedding), which diffusers cannot read."""
    cfg = DIT_VARIANTS[variant]
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * scale

    dim = cfg["num_attention_heads"] * cfg["attention_head_dim"]
    shapes = _linear_shapes(variant)
    if num_layers is not None:  # a LoRA for a deeper model (more blocks)
        shapes = {f"blocks.{i}.{n}": (dim if n != "ffn.0" else cfg["ffn_dim"],
                                      dim if n != "ffn.2" else cfg["ffn_dim"])
                  for i in range(num_layers) for n in BLOCK_LINEARS}
    if extras:
        shapes.update({"text_embedding.0": (dim, cfg["text_dim"]), "time_embedding.0": (dim, cfg["freq_dim"]),
                       "time_projection.1": (6 * dim, dim), "head.head": (cfg["out_channels"] * 4, dim)})
    state = {}
    for name, (out_f, in_f) in shapes.items():
        state[f"{name}.lora_down.weight"] = rnd(rank, in_f)
        state[f"{name}.lora_up.weight"] = rnd(out_f, rank)
        if alpha is not None:
            state[f"{name}.alpha"] = torch.tensor(float(alpha))
        if diff_b:
            state[f"{name}.diff_b"] = rnd(out_f)
    if extras:
        for i in range(num_layers or cfg["num_layers"]):
            state[f"blocks.{i}.norm3.diff"] = rnd(dim)
            state[f"blocks.{i}.norm3.diff_b"] = rnd(dim)
            state[f"blocks.{i}.self_attn.norm_q.diff"] = rnd(dim)
            state[f"blocks.{i}.cross_attn.norm_k.diff"] = rnd(dim)
            state[f"blocks.{i}.modulation.diff"] = rnd(1, 6, dim)
        state["head.modulation.diff"] = rnd(1, 2, dim)
        state["patch_embedding.diff"] = rnd(dim, cfg["in_channels"], 1, 2, 2)
        state["patch_embedding.diff_b"] = rnd(dim)
    return state


def _diffusers_name(original: str) -> str:
    from engine.models.wan_dit import original_to_diffusers

    return original_to_diffusers({f"{original}.weight": torch.zeros(1)}).popitem()[0][: -len(".weight")]


def in_format(state: dict[str, torch.Tensor], fmt: str) -> dict[str, torch.Tensor]:
    """`state` (from lora_state, pairs only unless the format keeps .diff keys) in layout `fmt`:
    comfyui (diffusion_model. + lora_down/up/alpha), original_ab (no prefix, lora_A/B + alpha),
    kohya (lora_unet_blocks_0_self_attn_q.lora_down.weight + alpha), peft (transformer. + diffusers
    names + lora_A/B, alpha folded into the weights, diff_b as lora_B.bias), diffusers_prefixed
    (diffusion_model. + diffusers names + lora_A/B, alpha folded)."""
    out = {}
    for key, value in state.items():
        name, _, role = key.rpartition(".")
        if role == "weight":
            name, _, role = name.rpartition(".")
        if fmt == "comfyui":
            out[f"diffusion_model.{key}"] = value
        elif fmt == "original_ab":
            role = {"lora_down": "lora_A", "lora_up": "lora_B"}.get(role, role)
            out[f"{name}.{role}.weight" if role.startswith("lora_") else f"{name}.{role}"] = value
        elif fmt == "kohya":
            if role not in ("lora_down", "lora_up", "alpha"):
                raise ValueError(f"kohya files carry no {role}")
            flat = "lora_unet_" + name.replace(".", "_")
            out[f"{flat}.{role}.weight" if role != "alpha" else f"{flat}.alpha"] = value
        elif fmt in ("peft", "diffusers_prefixed"):
            if role == "alpha":
                continue
            prefix = "transformer." if fmt == "peft" else "diffusion_model."
            target = prefix + _diffusers_name(name)
            if role in ("lora_down", "lora_up"):
                alpha = state.get(f"{name}.alpha")
                rank = state[f"{name}.lora_down.weight"].shape[0]
                factor = float(alpha) / rank if alpha is not None and role == "lora_down" else 1.0
                out[f"{target}.{'lora_A' if role == 'lora_down' else 'lora_B'}.weight"] = value * factor
            elif role == "diff_b" and fmt == "peft":
                out[f"{target}.lora_B.bias"] = value
            else:
                raise ValueError(f"{fmt} test files carry no {role}")
        else:
            raise ValueError(fmt)
    return out


def merged_state(base: dict[str, torch.Tensor], lora: dict[str, torch.Tensor],
                 strength: float = 1.0) -> dict[str, torch.Tensor]:
    """The reference: `lora` (original names) merged by hand into `base` (diffusers keys):
    W + strength * alpha / rank * up @ down, bias + strength * diff_b, tensor + strength * diff."""
    from engine.models.wan_dit import original_to_diffusers

    merged = {k: v.clone() for k, v in base.items()}
    for key, value in lora.items():
        if key.endswith(".lora_down.weight"):
            name = key[: -len(".lora_down.weight")]
            up = lora[f"{name}.lora_up.weight"]
            alpha = lora.get(f"{name}.alpha")
            scale = float(alpha) / value.shape[0] if alpha is not None else 1.0
            target = original_to_diffusers({f"{name}.weight": value}).popitem()[0]
            merged[target] += strength * scale * (up @ value)
        elif key.endswith((".diff", ".diff_b")):
            name, _, role = key.rpartition(".")
            param = name if name.endswith("modulation") else f"{name}.{'weight' if role == 'diff' else 'bias'}"
            target = original_to_diffusers({param: value}).popitem()[0]
            merged[target] += strength * value
    return merged


def write_lora(path: Path, state: dict[str, torch.Tensor]) -> Path:
    from engine.models.safe_load import save_state_dict

    return save_state_dict({k: v.contiguous() for k, v in state.items()}, Path(path))


def write_lightx2v(path: Path, variant: str = "t2v", seed: int = 1) -> Path:
    """A lightx2v-style distillation LoRA (rank 8 here; rank 32 in the real file)."""
    return write_lora(path, in_format(lora_state(variant, rank=8, seed=seed, alpha=8.0), "comfyui"))


WORKFLOW_MODELS: dict[str, Callable[[Path], Path]] = {
    "loras/wan2.1_t2v_lightx2v_4steps_lora_rank32.safetensors": write_lightx2v,
}
