"""Noise init and DiT denoise nodes: thin wrappers over engine.noise and engine.sampling, which
(with torch) are imported when a node runs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine.choices import SAMPLERS
from engine.context import ExecutionContext
from engine.errors import NodeError
from engine.schema import Input, NodeSpec, NodeType, Output
from engine.sockets import SocketType as S
from engine.values import Conditioning, Latent

if TYPE_CHECKING:
    import torch

MAX_SEED = 2**64 - 1


class NoiseInit(NodeType):
    """Seeded noise on the VAE's spacetime latent grid: the start of a text-to-video generation.

    frames must be 4n+1 (1 makes a still image); width and height multiples of 16 for Wan. Noise
    is drawn on the CPU, so a seed gives the same video on any device; batch item k uses seed + k.
    """

    spec = NodeSpec(
        name="NoiseInit",
        display_name="Noise Init",
        category="sampling",
        description="Seeded noise for a video of the given size on the VAE's latent grid.",
        inputs=(
            Input("vae", S.VAE, tooltip="the VAE whose latent grid the noise lives on"),
            Input("width", S.INT, 832, min=16, max=4096, step=16),
            Input("height", S.INT, 480, min=16, max=4096, step=16),
            Input("frames", S.INT, 81, min=1, max=1025, step=4, tooltip="4n+1; 1 makes an image"),
            Input("batch", S.INT, 1, min=1, max=64),
            Input("seed", S.INT, 0, min=0, max=MAX_SEED, seed=True),
            Input("fps", S.FLOAT, 16.0, min=1.0, max=120.0, step=1.0),
        ),
        outputs=(Output("latent", S.LATENT),),
    )

    @classmethod
    def execute(cls, ctx: ExecutionContext, *, vae: Any, width: int, height: int, frames: int,
                batch: int, seed: int, fps: float) -> dict[str, Any]:
        from engine.noise import init_noise

        return {"latent": init_noise(width, height, frames, batch, seed, vae.grid, fps=fps)}


class DiTDenoise(NodeType):
    """Denoise a latent with a diffusion transformer under text conditioning (flow matching).

    Frames the latent marks as known (ImageToVideo, VideoCondition) stay fixed. denoise < 1 refines
    a clean latent from VAEEncode (SDEdit: video-to-video) and runs int(steps * denoise) steps; the
    seed draws that noise. cfg 1 skips the negative prompt and halves the cost. The preview shows
    the middle frame of the current clean estimate through a fixed colour projection.
    """

    spec = NodeSpec(
        name="DiTDenoise",
        display_name="DiT Denoise",
        category="sampling",
        description="Flow-matching sampling loop with guidance, frame masks and SDEdit strength.",
        inputs=(
            Input("model", S.DIT),
            Input("conditioning", S.CONDITIONING),
            Input("latent", S.LATENT),
            Input("steps", S.INT, 30, min=1, max=200),
            Input("cfg", S.FLOAT, 5.0, min=0.0, max=30.0, step=0.1,
                  tooltip="guidance scale; 1 turns the negative prompt off"),
            Input("shift", S.FLOAT, 5.0, min=0.1, max=20.0, step=0.1,
                  tooltip="sigma shift: Wan uses 3 at 480p, 5 at 720p"),
            Input("sampler", S.STRING, "unipc", choices=SAMPLERS),
            Input("seed", S.INT, 0, min=0, max=MAX_SEED, seed=True,
                  tooltip="noise for clean latents and SDEdit; unused when the latent is noise"),
            Input("denoise", S.FLOAT, 1.0, min=0.0, max=1.0, step=0.01,
                  tooltip="below 1: keep that much of a clean input (video-to-video)"),
        ),
        outputs=(Output("latent", S.LATENT),),
    )

    @classmethod
    def execute(cls, ctx: ExecutionContext, *, model: Any, conditioning: Conditioning,
                latent: Latent, steps: int, cfg: float, shift: float, sampler: str, seed: int,
                denoise: float) -> dict[str, Any]:
        from engine.sampling import latent_preview, sample

        channels = latent.samples.shape[1]
        if model.in_channels != model.out_channels and latent.channel_cond is None:
            raise NodeError(f"this DiT takes {model.in_channels} input channels for "
                            f"{model.out_channels} latent channels (an image-channel I2V/FLF2V "
                            "model): give it the latent from Wan Image To Video, which adds the "
                            "start/end image channels", input="latent")
        if channels != model.out_channels:
            raise NodeError(f"the latent has {channels} channels but the DiT works on "
                            f"{model.out_channels}; use the VAE that belongs to this DiT",
                            input="latent")
        if conditioning.embeds.shape[-1] != model.text_dim:
            raise NodeError(f"the conditioning is {conditioning.embeds.shape[-1]} wide but the DiT "
                            f"expects {model.text_dim}; use the text encoder that belongs to it",
                            input="conditioning")

        def progress(step: int, total: int, x0: torch.Tensor) -> None:
            frame = latent_preview(x0[0, :, x0.shape[2] // 2])  # (H', W', 3)
            ctx.progress(step / total, f"step {step}/{total}", frame.unsqueeze(0))

        out = sample(model, latent, conditioning, steps=steps, cfg=cfg, shift=shift,
                     sampler=sampler, seed=seed, denoise=denoise, progress=progress,
                     check_interrupt=ctx.check_interrupt)
        return {"latent": out}
