"""Noise init and DiT denoise nodes: thin wrappers over engine.noise and engine.sampling, which
(with torch) are imported when a node runs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine.choices import SAMPLERS, SCHEDULERS
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
    This seed draws the starting noise; DiTDenoise's seed (when not 0, with add_noise on) varies
    it, so either seed changes the video.
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
            Input("seed", S.INT, 0, min=0, max=MAX_SEED, seed=True,
                  tooltip="draws the starting noise; DiTDenoise's seed (not 0) re-draws it from "
                          "both seeds, so either one changes the video"),
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
    a clean latent from VAEEncode (SDEdit: video-to-video) and runs int(steps * denoise) steps. cfg 1
    skips the negative prompt and halves the cost. The preview shows the middle frame of the
    current clean estimate, the whole clip, through the model family's latent-to-RGB projection.

    Samplers: unipc (Wan's own: UniPC bh2, 2nd order, as diffusers' WanPipeline), uni_pc (ComfyUI's
    default for Wan: UniPC bh1), uni_pc_bh2, euler, dpmpp_2m, lcm (distilled 4-8 step models, cfg 1).
    Schedulers: default (the sampler's diffusers schedule) or ComfyUI's simple / normal / beta, all
    under shift (ComfyUI's ModelSamplingSD3 shift).

    Wan 2.2 A14B: link the low-noise expert to model_low_noise; steps with timestep below
    boundary * 1000 use it (and cfg_low_noise), one expert on the device at a time. Or chain two
    nodes as in ComfyUI's KSamplerAdvanced: the first with end_step k and return_with_leftover_noise,
    the second with start_step k and add_noise off.

    Seeds: this node's seed draws all noise the node adds: SDEdit noise, add_noise, lcm re-noising,
    known-frame noise. On a pure-noise latent (NoiseInit), seed 0 keeps NoiseInit's noise (graphs
    saved before this seed mattered run unchanged) and any other seed re-draws it from both seeds,
    so changing either NoiseInit's or this seed changes the video.
    """

    spec = NodeSpec(
        name="DiTDenoise",
        display_name="DiT Denoise",
        category="sampling",
        description="Flow-matching sampling loop with guidance, frame masks, SDEdit strength, step "
                    "ranges and Wan 2.2's two experts.",
        version=2,
        inputs=(
            Input("model", S.DIT, tooltip="the DiT; with model_low_noise: the high-noise expert"),
            Input("conditioning", S.CONDITIONING),
            Input("latent", S.LATENT),
            Input("steps", S.INT, 30, min=1, max=200),
            Input("cfg", S.FLOAT, 5.0, min=0.0, max=30.0, step=0.1,
                  tooltip="guidance scale; 1 turns the negative prompt off"),
            Input("shift", S.FLOAT, 5.0, min=0.1, max=20.0, step=0.1,
                  tooltip="sigma shift (ComfyUI's ModelSamplingSD3): Wan uses 3 at 480p, 5 at "
                          "720p; ComfyUI's Wan 2.2 templates use 8"),
            Input("sampler", S.STRING, "unipc", choices=SAMPLERS,
                  tooltip="unipc: Wan's own (UniPC bh2, 2nd order, diffusers' WanPipeline); "
                          "uni_pc: ComfyUI's default for Wan (UniPC bh1, 3rd order); uni_pc_bh2: "
                          "ComfyUI's bh2 variant; euler; dpmpp_2m: DPM-Solver++(2M); lcm: for "
                          "distilled LoRAs at 4-8 steps with cfg 1"),
            Input("scheduler", S.STRING, "default", choices=SCHEDULERS,
                  tooltip="default: the sampler's own diffusers schedule; simple / normal / beta: "
                          "ComfyUI's (simple is what its Wan templates use)"),
            Input("seed", S.INT, 0, min=0, max=MAX_SEED, seed=True,
                  tooltip="all noise this node draws (SDEdit, add_noise, lcm); on NoiseInit's "
                          "noise: 0 keeps it, any other seed re-draws it from both seeds"),
            Input("denoise", S.FLOAT, 1.0, min=0.0, max=1.0, step=0.01,
                  tooltip="below 1: keep that much of a clean input (video-to-video)"),
            Input("start_step", S.INT, 0, min=0, max=10000,
                  tooltip="first step of the schedule to run (continue a chain: the previous "
                          "node's end_step)"),
            Input("end_step", S.INT, 10000, min=-1, max=10000,
                  tooltip="stop before this step; -1 or 10000: run to the end"),
            Input("add_noise", S.BOOL, True,
                  tooltip="on: noise the latent at the first step (SDEdit; a non-zero seed "
                          "re-draws NoiseInit's noise). Off: continue a leftover-noise latent"),
            Input("return_with_leftover_noise", S.BOOL, False,
                  tooltip="with end_step before the end: return the latent still noisy (for a "
                          "second DiTDenoise with add_noise off) instead of finishing it"),
            Input("model_low_noise", S.DIT, optional=True,
                  tooltip="Wan 2.2 A14B low-noise expert: takes the steps below the boundary"),
            Input("boundary", S.FLOAT, -1.0, min=-1.0, max=1.0, step=0.005,
                  tooltip="switch to model_low_noise when timestep < boundary * 1000; -1: from "
                          "the model (0.875 text-to-video, 0.9 image-to-video)"),
            Input("cfg_low_noise", S.FLOAT, -1.0, min=-1.0, max=30.0, step=0.1,
                  tooltip="guidance scale of the low-noise expert; -1: same as cfg"),
        ),
        outputs=(Output("latent", S.LATENT),),
    )

    @classmethod
    def execute(cls, ctx: ExecutionContext, *, model: Any, conditioning: Conditioning,
                latent: Latent, steps: int, cfg: float, shift: float, sampler: str, seed: int,
                denoise: float, scheduler: str = "default", start_step: int = 0,
                end_step: int = 10000, add_noise: bool = True,
                return_with_leftover_noise: bool = False, model_low_noise: Any = None,
                boundary: float = -1.0, cfg_low_noise: float = -1.0) -> dict[str, Any]:
        from engine.previews import clip_preview
        from engine.sampling import sample

        cls._check_model(model, latent, conditioning, "model")
        if model_low_noise is not None:
            cls._check_model(model_low_noise, latent, conditioning, "model_low_noise")
            if (model_low_noise.in_channels, model_low_noise.out_channels) != (
                    model.in_channels, model.out_channels):
                raise NodeError("the two experts differ in shape (high-noise "
                                f"{model.in_channels}->{model.out_channels} channels, low-noise "
                                f"{model_low_noise.in_channels}->{model_low_noise.out_channels}); "
                                "load the high- and low-noise files of one Wan 2.2 model",
                                input="model_low_noise")
        if boundary != -1.0 and not 0.0 <= boundary <= 1.0:
            raise NodeError(f"boundary must be -1 (from the model) or between 0 and 1; got "
                            f"{boundary}", input="boundary")
        if cfg_low_noise != -1.0 and cfg_low_noise < 0.0:
            raise NodeError(f"cfg_low_noise must be -1 (same as cfg) or 0 and up; got "
                            f"{cfg_low_noise}", input="cfg_low_noise")

        def progress(step: int, total: int, x0: torch.Tensor) -> None:
            clip = clip_preview(x0[0])  # (T', H', W', 3) uint8: per-family latent -> RGB
            ctx.progress(step / total, f"step {step}/{total}", clip.unsqueeze(0))

        from engine.memory import settings_scope

        with settings_scope(ctx.settings):  # VRAM budget, block swap, batch_cfg, compile
            out = sample(model, latent, conditioning, steps=steps, cfg=cfg, shift=shift,
                         sampler=sampler, seed=seed, denoise=denoise, progress=progress,
                         check_interrupt=ctx.check_interrupt, scheduler=scheduler,
                         start_step=start_step, end_step=end_step, add_noise=add_noise,
                         return_with_leftover_noise=return_with_leftover_noise,
                         model_low_noise=model_low_noise,
                         boundary=None if boundary == -1.0 else boundary,
                         cfg_low_noise=None if cfg_low_noise == -1.0 else cfg_low_noise)
        return {"latent": out}

    @staticmethod
    def _check_model(model: Any, latent: Latent, conditioning: Conditioning, input: str) -> None:
        channels = latent.samples.shape[1]
        if model.in_channels != model.out_channels and latent.channel_cond is None:
            raise NodeError(f"this DiT takes {model.in_channels} input channels for "
                            f"{model.out_channels} latent channels (an image-channel I2V/FLF2V "
                            "model): give it the latent from Wan Image To Video, which adds the "
                            "start/end image channels", input="latent")
        if channels != model.out_channels:
            raise NodeError(f"the latent has {channels} channels but the DiT works on "
                            f"{model.out_channels}; use the VAE that belongs to this DiT",
                            input="latent" if input == "model" else input)
        if conditioning.embeds.shape[-1] != model.text_dim:
            raise NodeError(f"the conditioning is {conditioning.embeds.shape[-1]} wide but the DiT "
                            f"expects {model.text_dim}; use the text encoder that belongs to it",
                            input="conditioning" if input == "model" else input)
