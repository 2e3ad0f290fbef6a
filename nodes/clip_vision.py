"""CLIP vision nodes: load a CLIP vision encoder and encode images into CLIP tokens.

Thin over engine.models.clip_vision (imported when a node runs, with torch). Wan 2.1 I2V-14B and
FLF2V-14B take the tokens through Wan Image To Video; Wan 2.2 models need no CLIP vision.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine.choices import CLIP_VISION_DTYPE_CHOICES as TEXT_ENCODER_DTYPE_CHOICES
from engine.context import ExecutionContext
from engine.schema import Input, NodeSpec, NodeType, Output
from engine.sockets import SocketType as S
from nodes.loaders import record_model, resolve_model

if TYPE_CHECKING:
    import torch

CROP_MODES = ("center", "none")  # engine.models.clip_vision.CROP_MODES, kept torch-free here


class LoadCLIPVision(NodeType):
    """Load a CLIP vision encoder from the clip_vision folder (clip_vision_h.safetensors for Wan
    2.1 I2V / FLF2V).

    Reads ComfyUI's single-file layout (transformers keys), transformers model folders and
    open_clip checkpoints; the size is detected from the file. dtype auto picks half precision on
    a GPU and fp32 on the CPU.
    """

    spec = NodeSpec(
        name="LoadCLIPVision", display_name="Load CLIP Vision", category="loaders",
        description=__doc__,
        inputs=(
            Input("clip_name", S.STRING, "", file_kind="clip_vision",
                  tooltip="a file (or transformers folder) in a clip_vision model folder"),
            Input("dtype", S.STRING, "auto", choices=TEXT_ENCODER_DTYPE_CHOICES,
                  tooltip="auto = half precision on GPU, fp32 on CPU"),
        ),
        outputs=(Output("clip_vision", S.CLIP_VISION),),
    )

    @classmethod
    def execute(cls, ctx: ExecutionContext, clip_name: str, dtype: str = "auto") -> dict[str, Any]:
        from engine.models.clip_vision import load_clip_vision

        path = resolve_model(ctx, "clip_vision", clip_name, "clip_name")
        ctx.progress(0.0, f"loading {path.name}")
        model = load_clip_vision(path, device=ctx.device, dtype=dtype)
        record_model(ctx, model.info)
        ctx.progress(1.0, f"{model.info.family} ({model.info.layout} layout)")
        return {"clip_vision": model}


class CLIPVisionEncode(NodeType):
    """Encode images with a CLIP vision model into CLIP tokens (CLIP_VISION_OUTPUT).

    The image is resized so its shorter side is the model's input size (224 for ViT-H/14), then
    centre-cropped (crop "center") or squashed to a square (crop "none"), and normalised as CLIP
    expects. The output carries the penultimate hidden states, the tokens Wan conditions on.
    """

    spec = NodeSpec(
        name="CLIPVisionEncode", display_name="CLIP Vision Encode", category="conditioning",
        description=__doc__,
        inputs=(
            Input("clip_vision", S.CLIP_VISION),
            Input("image", S.IMAGE),
            Input("crop", S.STRING, "center", choices=CROP_MODES,
                  tooltip="center: crop the middle square; none: squash the whole image"),
        ),
        outputs=(Output("clip_vision_output", S.CLIP_VISION_OUTPUT),),
    )

    @classmethod
    def execute(cls, ctx: ExecutionContext, *, clip_vision: Any, image: torch.Tensor,
                crop: str = "center") -> dict[str, Any]:
        out = clip_vision.encode(image, crop=crop)
        return {"clip_vision_output": out}
