"""The loaded Wan DiT: `WanDiT`, the `DiffusionModel` (engine.models.interfaces) over diffusers'
`WanTransformer3DModel`. Loading and key conversion live in engine.models.wan_dit.

Invariants of `WanDiT.predict_velocity`:
- Inputs and output are float32 CPU tensors (B, C, T, H, W); the module runs on its device/dtype.
- A timestep is (B,) for the whole clip or (B, T) per latent frame; per-frame values are expanded
  to every token of their frame (Wan 2.2 TI2V conditioning: known frames get t = 0).
- Padded text tokens (mask 0) are zeroed, as Wan's pipeline does, since the model attends to the
  whole context without a mask.
- What the network outputs is its `prediction_type`: "flow_prediction" (the velocity, every Wan
  release) or "sample" (the clean latent x0, as in JiT and the x0 runs of training/); a sample
  prediction is turned into the velocity (x_t - x0) / sigma here, so samplers see one contract.

Memory and speed (engine.memory):
- `plan_memory(latent_shape, guided)` asks the residency planner how the next `loaded()` runs under
  the current budgets and settings: the whole module on the device (through the model manager,
  which evicts idle models first), or block swap with the planned number of blocks streamed; it
  also says whether cfg may be batched. Without a plan, `loaded()` holds the whole module.
- Attention is diffusers' Wan processor, which calls `F.scaled_dot_product_attention`; nothing
  here restricts SDPA's backends, so on CUDA it picks flash / memory-efficient / cuDNN itself.
- `compile_blocks` (a setting, off by default) compiles each transformer block with torch.compile
  the first time the model is loaded; the first call's time (which includes compiling) is logged.
  It is skipped under block swap, whose hooks wrap each block's forward.
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import Any, Iterator

import torch

from engine.devices import on_device
from engine.dtypes import DTypePolicy
from engine.errors import NodeError
from engine.models.detect import PREDICTION_TYPES, TEXT_CONTEXT_LEN
from engine.models.interfaces import ModelInfo
from engine.models.safe_load import ModelLoadError

_LOG = logging.getLogger("reelgraph.memory")


class WanDiT:
    """A loaded Wan DiT satisfying `engine.models.interfaces.DiffusionModel`."""

    def __init__(self, module: torch.nn.Module, info: ModelInfo, variant: str,
                 device: torch.device, policy: DTypePolicy, offload: bool = True,
                 prediction_type: str = "flow_prediction"):
        if prediction_type not in PREDICTION_TYPES:
            raise ModelLoadError(info.path, f"unknown prediction_type {prediction_type!r}; this "
                                            f"loader knows {', '.join(PREDICTION_TYPES)}")
        cfg = module.config
        self.prediction_type = prediction_type
        self.module = module
        self.info = info
        self.variant = variant  # "t2v" | "i2v" | "flf2v" | "ti2v"
        self.in_channels = int(cfg.in_channels)
        self.out_channels = int(cfg.out_channels)
        self.text_dim = int(cfg.text_dim)
        self.patch_size = tuple(int(p) for p in cfg.patch_size)  # (t, h, w)
        self.needs_image_embeds = cfg.image_dim is not None  # Wan 2.1 I2V/FLF2V: CLIP image tokens
        # trained with per-frame timesteps (known frames at t = 0): read by engine.sampling
        self.frame_timesteps = variant == "ti2v"
        self.device = device
        self.policy = policy
        self.offload = offload
        self.memory_plan: Any = None  # engine.memory.planner.DiTPlan for the next loaded()
        self._streaming = False  # inside a block-swap loaded(): the hooks move the weights
        self._compiled = False
        self.compile_seconds: float | None = None  # first call after compiling (includes it)

    def __repr__(self) -> str:
        return f"WanDiT({self.info.family}, {self.info.path!r}, {self.policy.name} on {self.device})"

    def footprint(self, name: str | None = None) -> Any:
        """The planner's view of this model (engine.memory.planner.Footprint)."""
        from engine.memory.planner import Footprint
        from engine.memory.sizes import module_bytes

        blocks = list(getattr(self.module, "blocks", []))
        cfg = self.module.config
        quantised = [m.weight.nelement() for m in self.module.modules()
                     if getattr(m, "quantized_weights", False)]
        return Footprint(name=name or str(self), role="dit", weight_bytes=module_bytes(self.module),
                         block_bytes=max((module_bytes(b) for b in blocks), default=0),
                         blocks=len(blocks),
                         hidden=int(cfg.num_attention_heads) * int(cfg.attention_head_dim),
                         ffn=int(cfg.ffn_dim), compute_bytes=torch.tensor([], dtype=self.policy.compute).element_size(),
                         largest_layer=max(quantised, default=0))

    def plan_memory(self, latent_shape: tuple[int, ...], guided: bool, *, lora_bytes: int = 0,
                    batch_cfg: bool | None = None) -> Any:
        """Plan the next `loaded()` for latents of `latent_shape` (B, C, T', H', W') under the
        current budgets (engine.memory.budget); returns the DiTPlan and keeps it."""
        from engine.memory.budget import current_settings, detect_budgets
        from engine.memory.planner import Job, plan_dit

        settings = current_settings()
        b, _, t, h, w = latent_shape
        job = Job(width=w, height=h, frames=t, batch=b, cfg=5.0 if guided else 1.0, spatial=1,
                  temporal=1, patch=self.patch_size)
        if batch_cfg is None and settings.batch_cfg != "auto":
            batch_cfg = settings.batch_cfg == "on"
        self.memory_plan = plan_dit(self.footprint(), job, detect_budgets(self.device, settings),
                                    lora_bytes=lora_bytes, swap_blocks=settings.block_swap_blocks,
                                    batch_cfg=batch_cfg)
        return self.memory_plan

    @contextlib.contextmanager
    def loaded(self) -> Iterator["WanDiT"]:
        """Keep the weights on the device for a whole sampling loop: whole, or with the planned
        number of blocks streamed (block swap)."""
        plan = self.memory_plan
        if self._streaming or plan is None or not plan.block_swap:
            self._maybe_compile()
            with on_device(self.module, self.device, self.offload):
                yield self
            return
        from engine.memory.block_swap import block_swap
        from engine.memory.manager import MANAGER

        MANAGER.make_room(plan.peak_bytes, self.device)
        _LOG.info("%s: block swap, %d of %d blocks streamed", self, plan.swapped_blocks,
                  plan.swapped_blocks + plan.resident_blocks)
        with block_swap(self.module, self.device, plan.swapped_blocks,
                        pin=MANAGER._may_pin(plan.swapped_blocks * self.footprint().block_bytes)):
            self._streaming = True
            try:
                yield self
            finally:
                self._streaming = False

    def _maybe_compile(self) -> None:
        from engine.memory.budget import current_settings

        if self._compiled or not current_settings().compile_blocks:
            return
        for block in getattr(self.module, "blocks", []):
            block.compile()  # lazily: compiled on the first call
        self._compiled = True
        self.compile_seconds = -1.0  # the next call measures it

    @torch.no_grad()
    def predict_velocity(self, x: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor,
                         context_mask: torch.Tensor | None = None,
                         image_latent: torch.Tensor | None = None,
                         image_embeds: torch.Tensor | None = None) -> torch.Tensor:
        """Flow-matching velocity (see DiffusionModel). `image_embeds` (B, N, image_dim) are the
        CLIP image tokens that Wan 2.1 I2V/FLF2V models (with an `img_emb`) need."""
        noisy = x
        if image_latent is not None:
            x = torch.cat([x, image_latent.to(x.dtype)], dim=1)  # (B, C + C', T, H, W)
        self._check_input(x)
        batch, _, frames, height, width = x.shape
        t = self._token_timesteps(timestep, batch, frames, height, width)
        ctx = self._context(context, context_mask, batch)
        if self.needs_image_embeds and image_embeds is None:
            raise NodeError(f"{self.info.family} model {Path(self.info.path).name} needs CLIP image "
                            "embeddings (image_embeds) besides the image latent: connect a CLIP "
                            "Vision Encode to Wan Image To Video (clip_vision_start)")
        first_compiled = self.compile_seconds == -1.0
        started = time.perf_counter()
        held = (contextlib.nullcontext() if self._streaming
                else on_device(self.module, self.device, self.offload))
        with held:
            dtype = self.policy.compute
            out = self.module(
                hidden_states=x.to(self.device, dtype),
                timestep=t.to(self.device, torch.float32),
                encoder_hidden_states=ctx.to(self.device, dtype),
                encoder_hidden_states_image=(self._image_tokens(image_embeds).to(self.device, dtype)
                                             if self.needs_image_embeds else None),
                return_dict=False,
            )[0]
        out = out.float().cpu()  # (B, out_channels, T, H, W)
        if first_compiled:
            self.compile_seconds = time.perf_counter() - started
            _LOG.warning("torch.compile of %d transformer blocks: the first call took %.1f s "
                         "(compiling included)", len(self.module.blocks), self.compile_seconds)
        if self.prediction_type == "sample":
            out = self._velocity_from_sample(noisy.float(), out, timestep, batch, frames)
        return out

    def _image_tokens(self, image_embeds: torch.Tensor) -> torch.Tensor:
        """(B, N, D) CLIP tokens -> what diffusers' image embedder takes. A first-last-frame
        embedder (positional embedding over two images' tokens) folds row pairs (2B, n, D) into
        (B, 2n, D) itself, so the start-then-end tokens (B, 2n, D) are unfolded for it here."""
        pos = getattr(self.module.condition_embedder.image_embedder, "pos_embed", None)
        if pos is None:
            return image_embeds
        need = int(pos.shape[1])
        if image_embeds.ndim != 3 or image_embeds.shape[1] != need:
            got = image_embeds.shape[1] if image_embeds.ndim == 3 else tuple(image_embeds.shape)
            raise NodeError(f"{self.info.family} model {Path(self.info.path).name} takes the CLIP "
                            f"tokens of a start and an end image ({need} tokens), got {got}: connect "
                            "CLIP Vision Encode outputs to both clip_vision_start and clip_vision_end "
                            "of Wan Image To Video")
        return image_embeds.reshape(-1, need // 2, image_embeds.shape[-1])

    @staticmethod
    def _velocity_from_sample(noisy: torch.Tensor, x0: torch.Tensor, timestep: torch.Tensor | float,
                              batch: int, frames: int) -> torch.Tensor:
        """x_t = (1 - sigma) x0 + sigma noise, so the velocity noise - x0 is (x_t - x0) / sigma.
        Frames at sigma 0 (known, clean frames) get velocity 0: they stay where they are."""
        sigma = torch.as_tensor(timestep, dtype=torch.float32) / 1000.0
        sigma = sigma.reshape(-1, 1) if sigma.ndim <= 1 else sigma  # (B or 1, 1) or (B, T)
        sigma = sigma.expand(batch, frames).reshape(batch, 1, frames, 1, 1)
        velocity = (noisy - x0) / sigma.clamp(min=1e-6)
        return torch.where(sigma > 0, velocity, torch.zeros_like(velocity))

    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 5:
            raise NodeError(f"the DiT expects latents (B, C, T, H, W), got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_channels:
            extra = self.in_channels - x.shape[1]
            hint = (f"; this {self.variant.upper()} model needs image_latent with {extra} more "
                    "channels (mask + encoded image)" if extra > 0 else "")
            raise NodeError(f"{self.info.family} model takes {self.in_channels} input channels, got "
                            f"{x.shape[1]}{hint}")
        for size, p, axis in zip(x.shape[2:], self.patch_size, ("frames", "height", "width")):
            if size % p:
                fix = ("use a frame count whose latent length divides evenly" if axis == "frames" else
                       f"choose a video {axis} that is a multiple of {p} times the VAE's spatial "
                       "compression (16 px for reelgraph-tiny and Wan 2.1, 32 px for Wan 2.2 TI2V)")
                raise NodeError(f"latent {axis} {size} is not a multiple of the DiT patch size {p}; {fix}")

    def _token_timesteps(self, timestep: torch.Tensor | float, batch: int, frames: int,
                         height: int, width: int) -> torch.Tensor:
        """(B,) stays (B,); (B, T) per latent frame -> (B, tokens) for diffusers' per-token path."""
        t = torch.as_tensor(timestep, dtype=torch.float32)
        if t.ndim == 0:
            return t.expand(batch).clone()
        if t.ndim == 1:
            if t.shape[0] not in (1, batch):
                raise NodeError(f"timestep must be (B,) = ({batch},) or (B, T), got {tuple(t.shape)}")
            return t.expand(batch).clone()
        pt, ph, pw = self.patch_size
        if t.shape != (batch, frames):
            raise NodeError(f"per-frame timesteps must be (B, T) = {(batch, frames)}, got {tuple(t.shape)}")
        per_patch_frame = t[:, ::pt]  # (B, T / pt): a temporal patch takes its first frame's time
        tokens_per_frame = (height // ph) * (width // pw)
        return per_patch_frame.repeat_interleave(tokens_per_frame, dim=1)  # (B, T/pt * H/ph * W/pw)

    def _context(self, context: torch.Tensor, mask: torch.Tensor | None, batch: int) -> torch.Tensor:
        if context.ndim != 3 or context.shape[-1] != self.text_dim:
            raise NodeError(f"the DiT expects text embeddings (B, L, {self.text_dim}), got "
                            f"{tuple(context.shape)}; use a text encoder of width {self.text_dim}")
        if context.shape[0] != batch:
            context = context.expand(batch, -1, -1)
        if mask is not None:
            context = context * mask.to(context.dtype).reshape(-1, context.shape[1], 1)
        if self.needs_image_embeds:
            # diffusers splits image tokens off a context of exactly 512 text tokens
            length = context.shape[1]
            if length > TEXT_CONTEXT_LEN:
                raise NodeError(f"this model takes at most {TEXT_CONTEXT_LEN} text tokens, got {length}")
            context = torch.nn.functional.pad(context, (0, 0, 0, TEXT_CONTEXT_LEN - length))
        return context
