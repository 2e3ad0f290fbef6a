"""Sane ranges for model configs read from files, checked before any module is built.

A config value read from a file (a safetensors metadata "config" entry, a config.json, or a size
inferred from tensor shapes and names) decides what a loader builds: `rope_max_seq_len` sizes RoPE
tables that are allocated for real even while the parameters wait on the meta device, and
`num_layers` makes that many Python modules. Unchecked, a damaged or hostile 5 MB file could make a
loader allocate gigabytes before anything notices. So every such value passes through here first:
its type, a range generous above every released model of the architecture (the bounds below name
the real values), and, where the tensors show it too, agreement with the tensor shapes.

Invariant: every failure is a ModelLoadError naming the file, the key, the value found and what is
allowed ("config value rope_max_seq_len = 1000000000 is outside the allowed range 1..8192").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from engine.models.safe_load import ModelLoadError

CONFIG = "config value"  # origin of a value read from metadata, a config.json or the caller
SHAPES = "its tensors give"  # origin of a value inferred from the weights themselves


@dataclass(frozen=True)
class Bound:
    """The allowed whole numbers lo..hi for one config key; `real` names released values."""

    lo: int
    hi: int
    real: str


# Wan DiT (WanTransformer3DModel). Released: 1.3B (dim 1536, 12 heads, 30 layers, ffn 8960),
# 2.2 TI2V 5B (3072, 24, 30, 14336), 14B (5120, 40, 40, 13824); heads 128 wide; patch (1, 2, 2).
DIT_BOUNDS = {
    "dim": Bound(1, 65536, "Wan: 1536, 3072 or 5120"),
    "num_layers": Bound(1, 256, "Wan: 30 or 40"),
    "num_attention_heads": Bound(1, 256, "Wan: 12, 24 or 40"),
    "attention_head_dim": Bound(1, 512, "Wan: 128"),  # with rope_max_seq_len: RoPE table size
    "in_channels": Bound(1, 1024, "Wan: 16, 36 or 48"),
    "out_channels": Bound(1, 1024, "Wan: 16 or 48"),
    "text_dim": Bound(1, 65536, "Wan: 4096, umt5-xxl's width"),
    "freq_dim": Bound(1, 16384, "Wan: 256"),
    "ffn_dim": Bound(1, 262144, "Wan: 8960, 13824 or 14336"),
    "patch_size": Bound(1, 64, "Wan: [1, 2, 2]"),  # each of (t, h, w)
    # RoPE positions per axis; Wan's 1024 already covers 4096 px and 1025 frames. The tables are
    # real float64 memory: 8192 x 512 x 8 B = 32 MB each at the bounds.
    "rope_max_seq_len": Bound(1, 8192, "Wan: 1024"),
    "image_dim": Bound(1, 16384, "Wan 2.1 I2V: 1280, CLIP ViT-H"),
    "added_kv_proj_dim": Bound(1, 65536, "Wan 2.1 I2V: 5120"),
    "pos_embed_seq_len": Bound(1, 16384, "Wan 2.1 FLF2V: 514"),
}
DIT_QK_NORMS = ("rms_norm_across_heads", "rms_norm", "layer_norm", None)

# Wan VAE (AutoencoderKLWan). Released: 2.1 (base 96, dim_mult [1, 2, 4, 4], 2 res blocks,
# z 16), 2.2 (base 160, decoder base 256, z 48, 2x2 patch: 12 input channels).
VAE_BOUNDS = {
    "base_dim": Bound(1, 4096, "Wan: 96 or 160"),
    "decoder_base_dim": Bound(1, 4096, "Wan 2.2: 256"),
    "z_dim": Bound(1, 1024, "Wan: 16 or 48"),
    "levels": Bound(1, 8, "Wan: 4"),
    "dim_mult": Bound(1, 64, "Wan: [1, 2, 4, 4]"),  # each level
    "num_res_blocks": Bound(1, 16, "Wan: 2"),
    "patch_size": Bound(1, 16, "Wan 2.2: 2"),
    "in_channels": Bound(1, 768, "Wan: 3, or 12 for 2.2"),  # 3 * patch^2
    "out_channels": Bound(1, 768, "Wan: 3, or 12 for 2.2"),
}

# T5 / UMT5 encoders read from a single file. Released: umt5-xxl (Wan: vocab 256384, d_model 4096,
# 64 heads of 64, d_ff 10240, 24 layers, 32 buckets), t5-v1.1 / t5-xxl (vocab 32128).
T5_BOUNDS = {
    "vocab_size": Bound(1, 1 << 20, "umt5: 256384, t5: 32128"),
    "d_model": Bound(1, 65536, "umt5-xxl: 4096"),
    "num_heads": Bound(1, 256, "umt5-xxl: 64"),
    "d_kv": Bound(1, 1024, "t5: 64"),
    "d_ff": Bound(1, 262144, "umt5-xxl: 10240"),
    "num_layers": Bound(1, 256, "umt5-xxl: 24"),
    "num_buckets": Bound(1, 4096, "t5: 32"),
}

# Keys of a transformers config.json (any nesting: CLIP keeps a "text_config"), for text encoder
# folders. Released: BERT/MiniLM (vocab 30522, 384-1024 wide, 6-24 layers, 512 positions),
# CLIP text (49408, 77 positions), XLM-R (250002), umt5-xxl (above), long encoders (8192 positions).
HF_TEXT_BOUNDS = {
    "vocab_size": Bound(1, 1 << 20, "BERT: 30522, umt5: 256384"),
    "hidden_size": Bound(1, 65536, "MiniLM: 384, umt5-xxl: 4096"),
    "d_model": Bound(1, 65536, "umt5-xxl: 4096"),
    "num_hidden_layers": Bound(1, 256, "MiniLM: 6, BERT-large: 24"),
    "num_layers": Bound(1, 256, "umt5-xxl: 24"),
    "num_attention_heads": Bound(1, 256, "MiniLM: 12, umt5-xxl: 64"),
    "num_heads": Bound(1, 256, "umt5-xxl: 64"),
    "intermediate_size": Bound(1, 262144, "MiniLM: 1536"),
    "d_ff": Bound(1, 262144, "umt5-xxl: 10240"),
    "d_kv": Bound(1, 1024, "t5: 64"),
    "max_position_embeddings": Bound(1, 131072, "BERT: 512, long encoders: 8192"),
    "relative_attention_num_buckets": Bound(1, 4096, "t5: 32"),
}


# ---- single values ------------------------------------------------------------------------------

def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_int(source: Any, key: str, value: Any, bound: Bound, origin: str = CONFIG) -> int:
    """`value` as an int within `bound`, or a ModelLoadError naming file, key and range."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ModelLoadError(source, f"{origin} {key} = {_show(value)}, which is not a whole "
                                     f"number; the allowed range is {bound.lo}..{bound.hi} "
                                     f"({bound.real})")
    if not bound.lo <= value <= bound.hi:
        raise ModelLoadError(source, f"{origin} {key} = {value}, outside the allowed range "
                                     f"{bound.lo}..{bound.hi} ({bound.real}); the file is damaged "
                                     "or not the model it claims to be")
    return value


def check_ints(source: Any, key: str, value: Any, bound: Bound, length: int | None = None,
               origin: str = CONFIG) -> list[int]:
    """A list of ints, each within `bound` (and `length` long when given)."""
    if not isinstance(value, (list, tuple)) or (length is not None and len(value) != length):
        want = f"{length} whole numbers" if length is not None else "a list of whole numbers"
        raise ModelLoadError(source, f"{origin} {key} = {_show(value)}, expected {want} in "
                                     f"{bound.lo}..{bound.hi} ({bound.real})")
    return [check_int(source, key, v, bound, origin) for v in value]


def check_real(source: Any, key: str, value: Any, lo: float, hi: float, real: str) -> float:
    """A finite number lo < value <= hi."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ModelLoadError(source, f"{CONFIG} {key} = {_show(value)}, expected a number above "
                                     f"{lo} and at most {hi} ({real})")
    if not lo < value <= hi:
        raise ModelLoadError(source, f"{CONFIG} {key} = {value}, expected a number above {lo} and "
                                     f"at most {hi} ({real})")
    return float(value)


def check_choice(source: Any, key: str, value: Any, choices: Iterable[Any]) -> Any:
    choices = tuple(choices)
    if value not in choices:
        raise ModelLoadError(source, f"unknown {key} {_show(value)} in its config; expected one "
                                     f"of {', '.join(repr(c) for c in choices)}")
    return value


def check_matches(source: Any, key: str, configured: Any, inferred: Any) -> None:
    """A config value the tensors also show must agree with them."""
    if configured != inferred:
        raise ModelLoadError(source, f"{CONFIG} {key} = {_show(configured)} but its tensors give "
                                     f"{_show(inferred)}: the config and the weights do not "
                                     "belong together")


def check_numbering(source: Any, what: str, ids: set[int], key: str, bound: Bound) -> int:
    """`ids` (block numbers from tensor names) must be 0..n-1 with n in `bound`; returns n."""
    n = max(ids) + 1 if ids else 0
    check_int(source, key, n, bound, SHAPES)
    if len(ids) != n:
        gap = min(set(range(n)) - ids)
        raise ModelLoadError(source, f"its {what} are not numbered 0..{n - 1}: {what} {gap} is "
                                     "missing (a damaged or partial file)")
    return n


# ---- whole configs ------------------------------------------------------------------------------

def check_shapes(source: Any, values: Mapping[str, Any], bounds: Mapping[str, Bound]) -> None:
    """Sizes inferred from tensor shapes (None = absent, allowed), each within its bound."""
    for key, value in values.items():
        if isinstance(value, (list, tuple)):
            check_ints(source, key, value, bounds[key], origin=SHAPES)
        elif value is not None:
            check_int(source, key, value, bounds[key], SHAPES)


def check_dit_overrides(source: Any, overrides: Mapping[str, Any], inferred: Mapping[str, Any],
                        prediction_types: Iterable[str]) -> dict[str, Any]:
    """Validate a Wan DiT's config entries; returns those the tensors cannot show (RoPE length,
    eps, qk_norm). Entries the tensors do show must agree with `inferred`."""
    out: dict[str, Any] = {}
    for key, value in overrides.items():
        if key == "patch_size":
            check_matches(source, key, check_ints(source, key, value, DIT_BOUNDS[key], 3),
                          list(inferred[key]))
        elif key in ("image_dim", "added_kv_proj_dim", "pos_embed_seq_len") and value is None:
            check_matches(source, key, value, inferred[key])
        elif key == "out_channels" and value is None:  # diffusers: out_channels or in_channels
            check_matches(source, key, inferred["in_channels"], inferred[key])
        elif key == "cross_attn_norm":
            check_matches(source, key, check_choice(source, key, value, (True, False)), inferred[key])
        elif key == "rope_max_seq_len":
            out[key] = check_int(source, key, value, DIT_BOUNDS[key])
        elif key == "eps":
            out[key] = check_real(source, key, value, 0.0, 0.1, "Wan: 1e-06")
        elif key == "qk_norm":
            out[key] = check_choice(source, key, value, DIT_QK_NORMS)
        elif key == "prediction_type":
            check_choice(source, key, value, prediction_types)
        elif key in DIT_BOUNDS:
            check_matches(source, key, check_int(source, key, value, DIT_BOUNDS[key]), inferred[key])
    return out


def check_dit_heads(source: Any, overrides: Mapping[str, Any],
                    width: int) -> tuple[int | None, int | None]:
    """(num_attention_heads, attention_head_dim) from the config, each in range and dividing the
    DiT's width (from patch_embedding.weight); None where the config gives none."""
    heads = overrides.get("num_attention_heads")
    head_dim = overrides.get("attention_head_dim")
    if heads is not None:
        heads = check_int(source, "num_attention_heads", heads, DIT_BOUNDS["num_attention_heads"])
    if head_dim is not None:
        head_dim = check_int(source, "attention_head_dim", head_dim, DIT_BOUNDS["attention_head_dim"])
    for key, value in (("num_attention_heads", heads), ("attention_head_dim", head_dim)):
        if value is not None and width % value:
            raise ModelLoadError(source, f"{CONFIG} {key} = {value} does not divide the DiT's "
                                         f"width {width} (patch_embedding.weight)")
    if heads is not None and head_dim is not None and heads * head_dim != width:
        raise ModelLoadError(source, f"{CONFIG} num_attention_heads = {heads} times "
                                     f"attention_head_dim = {head_dim} is not the DiT's width {width}")
    return heads, head_dim


def check_latent_stats(source: Any, key: str, values: Any, z_dim: int, positive: bool) -> list[float]:
    """Per-channel latent statistics: z_dim finite numbers (standard deviations above 0)."""
    if not isinstance(values, (list, tuple)) or len(values) != z_dim:
        got = f"{len(values)} values" if isinstance(values, (list, tuple)) else _show(values)
        raise ModelLoadError(source, f"{CONFIG} {key} has {got}; the VAE has z_dim {z_dim}, so it "
                                     f"needs {z_dim} values, one per latent channel")
    if not all(not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)
               for v in values):
        raise ModelLoadError(source, f"{CONFIG} {key} must hold {z_dim} finite numbers")
    if positive and min(values) <= 0:
        raise ModelLoadError(source, f"{CONFIG} {key} must hold standard deviations above 0, "
                                     f"found {min(values)}")
    return [float(v) for v in values]


def check_vae_overrides(source: Any, overrides: Mapping[str, Any], inferred: Mapping[str, Any]) -> None:
    """A Wan VAE's config entries that its tensors also show must agree with them."""
    for key in ("base_dim", "z_dim", "num_res_blocks", "in_channels", "out_channels"):
        if overrides.get(key) is not None:
            check_matches(source, key, check_int(source, key, overrides[key], VAE_BOUNDS[key]),
                          inferred[key])
    if overrides.get("dim_mult") is not None:
        check_matches(source, "dim_mult", check_ints(source, "dim_mult", overrides["dim_mult"],
                                                     VAE_BOUNDS["dim_mult"]), inferred["dim_mult"])
    if overrides.get("temperal_downsample") is not None:
        check_matches(source, "temperal_downsample", list(overrides["temperal_downsample"])
                      if isinstance(overrides["temperal_downsample"], (list, tuple))
                      else overrides["temperal_downsample"], inferred["temperal_downsample"])
    if "is_residual" in overrides:
        check_matches(source, "is_residual", overrides["is_residual"], inferred["is_residual"])


def check_hf_text_config(source: Any, config: Mapping[str, Any]) -> None:
    """Every size in a transformers config.json (nested configs included) within its bound."""
    for key, value in config.items():
        if isinstance(value, Mapping):
            check_hf_text_config(source, value)
        elif key in HF_TEXT_BOUNDS and value is not None:
            check_int(source, key, value, HF_TEXT_BOUNDS[key])
