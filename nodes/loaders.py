"""Model loader nodes: LoadDiT and LoadVAE (LoadTextEncoder lives in nodes/text.py).

Thin over engine.models: the node resolves the chosen name in the model folders, loads it with
architecture detection and records the model's identity (file, family, layout, sha256) in the run's
provenance. The loaded model is an output value that stays in the RAM cache between runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.choices import DEVICE_CHOICES, DTYPE_CHOICES
from engine.context import ExecutionContext
from engine.errors import NodeError
from engine.models.interfaces import ModelInfo
from engine.schema import Input, NodeSpec, NodeType, Output
from engine.sockets import SocketType as S


def resolve_model(ctx: ExecutionContext, kind: str, name: str, input_name: str) -> Path:
    """The file for `name` in the `kind` model folders, or a NodeError naming the input."""
    if ctx.model_paths is None:
        raise NodeError("no model folders are configured for this run", input=input_name)
    try:
        return ctx.model_paths.resolve(kind, name)
    except NodeError as exc:
        raise NodeError(str(exc), input=input_name) from None


def loader_device(ctx: ExecutionContext, device: str) -> Any:
    """The device a loader's model computes on: the run's for "auto", else the one forced (e.g. a
    text encoder on the CPU beside a DiT on the GPU); a NodeError on the `device` input when it is
    not available."""
    if device in ("", "auto"):
        return ctx.device
    from engine.devices import pick_device

    try:
        return pick_device(device)
    except (ValueError, RuntimeError) as exc:
        raise NodeError(str(exc), input="device") from None


def record_model(ctx: ExecutionContext, info: ModelInfo) -> None:
    """Put the model's identity into the run's provenance (embedded in every output)."""
    entry = {"path": Path(info.path).name, "family": info.family, "layout": info.layout,
             "sha256": info.sha256}
    weight_format = (info.config or {}).get("weight_format")
    if weight_format:  # DiTs: how the file stores its weights ("fp8_scaled", "gguf Q4_K", "bf16")
        entry["format"] = weight_format
    ctx.provenance.setdefault("models", {})[ctx.node_id] = entry


class LoadDiT(NodeType):
    """Load a diffusion transformer (Wan 2.1 / 2.2 T2V, I2V, TI2V) from the diffusion_models folder.

    The architecture, variant and key layout (Wan original, ComfyUI or diffusers) are detected
    from the file. Files: fp32/fp16/bf16 and fp8 (e4m3fn, e5m2) safetensors, ComfyUI's
    *_fp8_scaled files, and GGUF files (Q8_0, Q6_K, Q5_K, Q4_K and the other llama.cpp types
    city96's Wan GGUFs use). dtype: auto = bf16 on a GPU and on CPUs with fast bf16 (AMX or
    AVX512-BF16), fp32 on other CPUs (the log says which and why), and an fp8 or fp8_scaled file
    keeps its 8-bit weights as stored (as ComfyUI does: dequantising would double the RAM it
    needs); fp32/fp16/bf16 compute in that precision, and fp8 files are dequantised (weight x
    scale) once while loading; fp8 holds
    the weights in 8 bits and upcasts each layer as it runs (an fp8 or fp8_scaled file stays as
    stored, about 1 byte per parameter; others are cast to e4m3fn). GGUF weights always stay
    quantised and are dequantised layer by layer; dtype sets only the compute precision.
    Only safetensors, GGUF or weights-only checkpoints load. Weights go from the file to their
    final dtype one tensor at a time, so loading needs about the final size in RAM.
    """

    spec = NodeSpec(
        name="LoadDiT", display_name="Load DiT", category="loaders", description=__doc__,
        inputs=(
            Input("model", S.STRING, "", file_kind="diffusion_models",
                  tooltip="a file (or diffusers folder) in a diffusion_models model folder"),
            Input("dtype", S.STRING, "auto", choices=DTYPE_CHOICES,
                  tooltip="compute precision; auto = bf16 on a GPU and on CPUs with fast bf16 "
                          "(AMX / AVX512-BF16), fp32 on other CPUs (the log says which and why); an "
                          "fp8 file stays 8-bit under auto. fp8 keeps any file's weights in 8 bits; "
                          "fp32/fp16/bf16 dequantise fp8 files. GGUF files always stay quantised."),
            Input("device", S.STRING, "auto", choices=DEVICE_CHOICES,
                  tooltip="where it computes; auto = the run's device (CUDA when present)"),
        ),
        outputs=(Output("model", S.DIT),),
    )

    @classmethod
    def execute(cls, ctx: ExecutionContext, model: str, dtype: str = "auto",
                device: str = "auto") -> dict[str, Any]:
        from engine.dtypes import explain_dtype
        from engine.models.wan_dit import load_dit

        path = resolve_model(ctx, "diffusion_models", model, "model")
        target = loader_device(ctx, device)
        why = explain_dtype(dtype, target, "dit")[1]
        ctx.progress(0.0, f"loading {path.name}")
        dit = load_dit(path, device=target, dtype=dtype)
        kept = (dit.info.config or {}).get("dtype_reason")  # auto on an fp8 file stays 8-bit
        ctx.log("info", f"{path.name}: {kept or why}")
        record_model(ctx, dit.info)
        fmt = (dit.info.config or {}).get("weight_format")
        ctx.progress(1.0, f"{dit.info.family} ({dit.info.layout} layout"
                          f"{', ' + fmt + ' weights' if fmt else ''})")
        return {"model": dit}


class LoadVAE(NodeType):
    """Load a video VAE (Wan 2.1 or Wan 2.2) from the vae folder.

    The version and key layout are detected from the file; the VAE fixes the latent grid (channels,
    4x temporal and 8x or 16x spatial compression) that noise, conditioning and decoding share.
    """

    spec = NodeSpec(
        name="LoadVAE", display_name="Load VAE", category="loaders", description=__doc__,
        inputs=(
            Input("vae", S.STRING, "", file_kind="vae",
                  tooltip="a file (or diffusers folder) in a vae model folder"),
            Input("dtype", S.STRING, "auto", choices=DTYPE_CHOICES[:4],
                  tooltip="weight precision; auto = fp32 (the decoder is precision-sensitive)"),
        ),
        outputs=(Output("vae", S.VAE),),
    )

    @classmethod
    def execute(cls, ctx: ExecutionContext, vae: str, dtype: str = "auto") -> dict[str, Any]:
        from engine.models.wan_vae import load_vae

        path = resolve_model(ctx, "vae", vae, "vae")
        ctx.progress(0.0, f"loading {path.name}")
        model = load_vae(path, device=ctx.device, dtype=dtype)
        record_model(ctx, model.info)
        ctx.progress(1.0, model.info.family)
        return {"vae": model}
