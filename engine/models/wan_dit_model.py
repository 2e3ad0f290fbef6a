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
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

import torch

from engine.devices import on_device
from engine.dtypes import DTypePolicy
from engine.errors import NodeError
from engine.models.detect import PREDICTION_TYPES, TEXT_CONTEXT_LEN
from engine.models.interfaces import ModelInfo
from engine.models.safe_load import ModelLoadError


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

    def __repr__(self) -> str:
        return f"WanDiT({self.info.family}, {self.info.path!r}, {self.policy.name} on {self.device})"

    @contextlib.contextmanager
    def loaded(self) -> Iterator["WanDiT"]:
        """Keep the weights on the device for a whole sampling loop."""
        with on_device(self.module, self.device, self.offload):
            yield self

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
        with on_device(self.module, self.device, self.offload):
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
