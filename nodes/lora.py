"""LoadLoRA: apply a LoRA from the loras model folder to a DiT (thin over engine.models.lora)."""

from __future__ import annotations

from typing import Any

from engine.context import ExecutionContext
from engine.schema import Input, NodeSpec, NodeType, Output
from engine.sockets import SocketType as S
from nodes.loaders import record_model, resolve_model


class LoadLoRA(NodeType):
    """Apply a LoRA to a Wan DiT; chain several LoadLoRA nodes for a stack.

    Reads ComfyUI/Wan-original, kohya (lora_unet_...), diffusers/PEFT and lightx2v-style files
    (with .diff/.diff_b keys for norms, biases and modulation). strength scales the LoRA
    (alpha / rank as the file says); 0 gives the base model back exactly. The base model stays
    loaded and unchanged: the LoRA is added while the model runs, so changing strength or file
    re-runs only this node, cheaply. Text-encoder keys in a file are not applied (the log says so).
    A LoRA made for another model size or architecture is refused.
    """

    spec = NodeSpec(
        name="LoadLoRA", display_name="Load LoRA", category="loaders", description=__doc__,
        inputs=(
            Input("model", S.DIT, tooltip="the DiT (from LoadDiT or another LoadLoRA)"),
            Input("lora", S.STRING, "", file_kind="loras",
                  tooltip="a .safetensors file in a loras model folder"),
            Input("strength", S.FLOAT, 1.0, min=-4.0, max=4.0, step=0.05,
                  tooltip="how strongly the LoRA applies; 0 = off, negative inverts it"),
        ),
        outputs=(Output("model", S.DIT),),
    )

    @classmethod
    def execute(cls, ctx: ExecutionContext, model: Any, lora: str,
                strength: float = 1.0) -> dict[str, Any]:
        from engine.models.lora import apply_loras, load_lora

        path = resolve_model(ctx, "loras", lora, "lora")
        ctx.progress(0.0, f"reading {path.name}")
        lora_file = load_lora(path, model, input="lora")
        record_model(ctx, lora_file.info)
        if lora_file.skipped:
            ctx.log("warning", f"{path.name}: {len(lora_file.skipped)} text-encoder keys are not "
                               f"applied (e.g. {', '.join(lora_file.skipped[:2])}); only the DiT "
                               "part of this LoRA is used")
        ctx.progress(1.0, f"{lora_file.info.layout} LoRA, {len(lora_file.linear)} layers, "
                          f"strength {strength:g}")
        return {"model": apply_loras(model, [(lora_file, strength)])}
