"""Image-channel conditioning: how Wan 2.1 I2V-14B / FLF2V-14B and Wan 2.2 I2V-A14B see their
start (and end) frames.

These models take 36 input channels: the 16 noisy latent channels, then 4 mask channels and the
16 channels of an encoded "condition video" (`Latent.channel_cond`, concatenated at every model
call by the DiT). The condition video has the video's length and size, the start image at frame 0,
the end image at the last frame and zeros (in the VAE's [-1, 1] range: mid-grey) everywhere else;
it is VAE-encoded whole, so the end frame is encoded at its place after causal context.

Mask channels (B, 4, T', H', W'): pixel frame 0 is repeated `temporal` times so the F = 4n+1
pixel frames fill 4T' slots; slot 4j + c (latent frame j, channel c) is 1 where the pixel frame in
that slot is known. A start image makes latent frame 0 all ones; an end image sets channel 3 of the
last latent frame. This is the layout of Wan's and diffusers' WanImageToVideoPipeline.prepare_latents.

Models with a CLIP image embedder (`img_emb`, Wan 2.1) also take the CLIP penultimate hidden states
as `Conditioning.image_embeds`: one image's 257 tokens, or for start + end the start's tokens then
the end's (514), which the FLF2V model adds its positional embedding to.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from engine.conditioning import fit_frames
from engine.errors import NodeError
from engine.models.interfaces import LatentGrid, VideoAutoencoder
from engine.noise import check_frames, init_noise
from engine.values import ClipVisionOutput, Conditioning, Latent

MASK_CHANNELS = 4  # = the VAE's temporal compression for every Wan image-channel model


def channel_mask(frames: int, grid: LatentGrid, latent_hw: tuple[int, int], start: bool,
                 end: bool) -> torch.Tensor:
    """(1, temporal, T', H', W') known-frame mask in the DiT's channel layout (module docstring)."""
    t = grid.temporal
    latent_frames = grid.latent_frames(frames)
    known = torch.zeros(frames)
    if start:
        known[0] = 1.0
    if end:
        known[-1] = 1.0
    slots = torch.cat([known[:1].repeat(t), known[1:]])  # (t * T',): frame 0 fills t slots
    mask = slots.view(latent_frames, t).t()  # (t, T'): channel c of latent frame j = slot t*j + c
    return mask.view(1, t, latent_frames, 1, 1).expand(1, t, latent_frames, *latent_hw).clone()


def condition_video(vae: VideoAutoencoder, width: int, height: int, frames: int,
                    start: torch.Tensor | None, end: torch.Tensor | None) -> torch.Tensor:
    """Encoded condition video (N, C, T', H', W'), N = 1 or the images' batch.

    start / end: (N, H, W, 3) in [0, 1], any size (resized to cover and centre-cropped).
    """
    items = max(x.shape[0] for x in (start, end) if x is not None)
    video = torch.full((items, frames, height, width, 3), 0.5)  # 0.5 -> 0 in the VAE's [-1, 1]
    if start is not None:
        video[:, 0] = fit_frames(start, width, height)
    if end is not None:
        video[:, frames - 1] = fit_frames(end, width, height)
    return vae.encode(video).float()


def image_embeds(start: ClipVisionOutput | None, end: ClipVisionOutput | None
                 ) -> torch.Tensor | None:
    """CLIP tokens for the DiT: one output's penultimate hidden states, or start's then end's."""
    parts = [o.penultimate_hidden_states.float() for o in (start, end) if o is not None]
    if not parts:
        return None
    if len(parts) == 2:
        a, b = parts
        if a.shape[0] != b.shape[0]:
            if a.shape[0] == 1:
                a = a.expand(b.shape[0], -1, -1)
            elif b.shape[0] == 1:
                b = b.expand(a.shape[0], -1, -1)
            else:
                raise NodeError(f"clip_vision_start encodes {a.shape[0]} images but clip_vision_end "
                                f"{b.shape[0]}; give one image or the same number to both",
                                input="clip_vision_end")
        if a.shape[-1] != b.shape[-1]:
            raise NodeError("clip_vision_start and clip_vision_end come from different CLIP vision "
                            f"models (widths {a.shape[-1]} and {b.shape[-1]}); use one model",
                            input="clip_vision_end")
        return torch.cat([a, b], dim=1)  # (B, 2N, D): start tokens, then end tokens
    return parts[0]


def _as_images(image: torch.Tensor | None, name: str) -> torch.Tensor | None:
    if image is None:
        return None
    if image.ndim == 3:
        image = image.unsqueeze(0)
    if image.ndim != 4 or image.shape[-1] != 3:
        raise NodeError(f"{name} must be an image (B, H, W, 3); got shape {tuple(image.shape)}",
                        input=name)
    return image.float()


def wan_image_to_video(vae: VideoAutoencoder, conditioning: Conditioning, *, width: int,
                       height: int, frames: int, batch: int, seed: int, fps: float = 16.0,
                       start_image: torch.Tensor | None = None,
                       end_image: torch.Tensor | None = None,
                       clip_vision_start: ClipVisionOutput | None = None,
                       clip_vision_end: ClipVisionOutput | None = None
                       ) -> tuple[Conditioning, Latent]:
    """Conditioning with the CLIP image tokens, and seeded noise carrying the image channels.

    A batch of B > 1 images makes B videos (seed + k for item k) unless `batch` says otherwise;
    a single image is shared by the whole batch.
    """
    start, end = _as_images(start_image, "start_image"), _as_images(end_image, "end_image")
    if start is None and end is None:
        raise NodeError("Wan Image To Video needs a start_image, an end_image or both; connect a "
                        "Load Image (for text-to-video use Noise Init and a T2V model)",
                        input="start_image")
    check_frames(frames, vae.grid)
    if end is not None and frames < vae.grid.temporal + 1:
        raise NodeError(f"an end image needs at least {vae.grid.temporal + 1} frames (the first "
                        "and last frames must be different latent frames)", input="frames")
    counts = {x.shape[0] for x in (start, end) if x is not None} - {1}
    if len(counts) > 1:
        raise NodeError(f"start_image has {start.shape[0]} images and end_image {end.shape[0]}; "
                        "give one image or the same number to both", input="end_image")
    images = counts.pop() if counts else 1
    if images > 1 and batch not in (1, images):
        raise NodeError(f"{images} images make {images} videos, but batch is {batch}; set batch "
                        f"to 1 or {images}", input="batch")
    batch = max(batch, images)

    latent = init_noise(width, height, frames, batch, seed, vae.grid, fps=fps)
    _, channels, latent_frames, lh, lw = latent.samples.shape
    z = condition_video(vae, width, height, frames, start, end)  # (1 or B, C, T', H', W')
    if tuple(z.shape[1:]) != (channels, latent_frames, lh, lw):
        raise NodeError(f"the VAE encoded the images to {tuple(z.shape[1:])} but the latent is "
                        f"{tuple(latent.samples.shape[1:])}", input="vae")
    mask = channel_mask(frames, vae.grid, (lh, lw), start is not None, end is not None)
    cond_channels = torch.cat([mask.expand(z.shape[0], -1, -1, -1, -1), z], dim=1)
    meta: dict[str, Any] = dict(latent.meta)
    meta["image_channels"] = {"start": start is not None, "end": end is not None}
    latent = dataclasses.replace(latent, meta=meta,
                                 channel_cond=cond_channels.expand(batch, -1, -1, -1, -1).clone())

    embeds = image_embeds(clip_vision_start, clip_vision_end)
    if embeds is not None:
        if embeds.shape[0] not in (1, batch):
            raise NodeError(f"the CLIP vision output holds {embeds.shape[0]} images but the batch "
                            f"is {batch}; encode one image or one per video",
                            input="clip_vision_start")
        conditioning = dataclasses.replace(conditioning, image_embeds=embeds)
    return conditioning, latent
