"""Frame conditioning: place known frames at the head, tail or both ends of a latent, and stitch back.

One mechanism covers every use: animate an image (head = 1 frame), extend a clip forward (head =
its last frames), extend it backward (tail = its first frames) and connect two clips (head = end of
clip A, tail = start of clip B). The sampler then keeps the known latent frames fixed.

The VAE's causal grid decides what can be placed (temporal = 4 for Wan):
- latent frame 0 holds pixel frame 0 alone; latent frame j >= 1 holds pixel frames 4j-3 .. 4j.
- head: 4k+1 pixel frames (1, 5, 9, ...) -> the first k+1 latent frames.
- tail: 4k pixel frames (4, 8, 12, ...) -> the last k latent frames.
- so a video of F = 4n+1 frames splits into head + generated + tail: 4m generated frames after a
  head, 4m+1 when there is no head (the video's first frame is then a new one).
The head is encoded on its own: a causal VAE gives exactly the latents it would give inside the full
video. A tail is encoded in place: the full-length video with the known frames at both ends and
mid-grey (0 in the VAE's [-1, 1] range) in between, as Wan's first-last-frame models do, so the tail
latents are computed at their place in the video (after causal context), not as the first frames of
a clip of their own.

Stitching contract (what `stitch` does): the decoded video has the generated length F; its first
`head_frames` frames re-create the clip they came from and its last `tail_frames` frames re-create
the clip after it. The stitched video is: clip before (all of it, original pixels) + the generated
frames strictly between head and tail + clip after (all of it). Extend forward: before = the clip;
extend backward: after = the clip; connect: before = clip A, after = clip B.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from engine.choices import CONDITIONING_MODES as MODES
from engine.errors import NodeError
from engine.models.interfaces import LatentGrid, VideoAutoencoder
from engine.noise import check_frames, check_size, init_noise
from engine.values import Latent, Video

GREY = 0.5  # fill for the unknown middle when a tail is encoded in place (0 in [-1, 1])


def fit_frames(frames: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Resize (..., H, W, 3) frames to cover width x height, then centre-crop to exactly that size."""
    h, w = frames.shape[-3:-1]
    if (w, h) == (width, height):
        return frames.float()
    lead = frames.shape[:-3]
    x = frames.reshape(-1, h, w, 3).permute(0, 3, 1, 2).float()  # (N, 3, H, W)
    scale = max(width / w, height / h)
    nh, nw = max(height, round(h * scale)), max(width, round(w * scale))
    x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)
    top, left = (nh - height) // 2, (nw - width) // 2
    x = x[:, :, top:top + height, left:left + width].clamp(0.0, 1.0)
    return x.permute(0, 2, 3, 1).reshape(*lead, height, width, 3)


def head_latent_frames(count: int, grid: LatentGrid) -> int:
    """Latent frames that `count` head pixel frames fill (count must be temporal*k + 1)."""
    check_frames(count, grid, input="head frames")
    return grid.latent_frames(count)


def tail_latent_frames(count: int, grid: LatentGrid) -> int:
    """Latent frames that `count` tail pixel frames fill (count must be a multiple of temporal)."""
    t = grid.temporal
    if count < t or count % t:
        below = max(t, count // t * t)
        raise NodeError(f"tail frames must be a multiple of {t} (each latent frame after the first "
                        f"holds {t} frames), e.g. {below} or {below + t}; got {count}",
                        input="tail frames")
    return count // t


def condition_latent(latent: Latent, vae: VideoAutoencoder, head: torch.Tensor | None = None,
                     tail: torch.Tensor | None = None) -> Latent:
    """`latent` with `head` / `tail` frames encoded and marked known.

    head / tail: (T, H, W, 3) frames shared by the batch, or (B, T, H, W, 3) one clip per item,
    float in [0, 1], any size (resized to cover and centre-cropped to the latent's pixel size).
    Returns a Latent whose samples hold the known latents at known frames, with frame_mask (B, T')
    and known (B, C, T', H', W'), and meta["condition"] = {"head_frames", "tail_frames"}.
    """
    grid = vae.grid
    batch, channels, frames, lh, lw = latent.samples.shape
    width, height = lw * grid.spatial, lh * grid.spatial
    n_frames = grid.pixel_frames(frames)
    head, tail = _as_clip(head, batch, "head"), _as_clip(tail, batch, "tail")
    n_head = head.shape[1] if head is not None else 0
    n_tail = tail.shape[1] if tail is not None else 0
    k_head = head_latent_frames(n_head, grid) if head is not None else 0
    k_tail = tail_latent_frames(n_tail, grid) if tail is not None else 0
    if k_head + k_tail >= frames:
        raise NodeError(f"{n_head} head + {n_tail} tail frames leave nothing to generate in a "
                        f"{n_frames}-frame video; use more frames or fewer known ones", input="frames")

    if tail is None:
        if head is None:
            return latent
        video = fit_frames(head, width, height)  # causal: the head alone encodes exactly
    else:
        items = max(c.shape[0] for c in (head, tail) if c is not None)
        video = torch.full((items, n_frames, height, width, 3), GREY)
        if head is not None:
            video[:, :n_head] = fit_frames(head, width, height)
        video[:, n_frames - n_tail:] = fit_frames(tail, width, height)
    z = vae.encode(video).float()  # (1 or B, C, T_enc, H', W')
    if z.shape[1] != channels or tuple(z.shape[-2:]) != (lh, lw):
        raise NodeError(f"the VAE encoded frames to {tuple(z.shape[1:])} but the latent is "
                        f"{tuple(latent.samples.shape[1:])}; make the latent with the same VAE",
                        input="vae")
    z = z.expand(batch, *z.shape[1:])

    known = torch.zeros_like(latent.samples, dtype=torch.float32)  # (B, C, T', H', W')
    mask = torch.zeros(batch, frames)  # (B, T')
    if latent.frame_mask is not None and latent.known is not None:  # keep earlier known frames
        mask = latent.frame_mask.float().expand(batch, frames).clone()
        known = latent.known.float().expand_as(known).clone()
    if k_head:
        known[:, :, :k_head] = z[:, :, :k_head]
        mask[:, :k_head] = 1.0
    if k_tail:
        known[:, :, frames - k_tail:] = z[:, :, z.shape[2] - k_tail:]
        mask[:, frames - k_tail:] = 1.0
    select = (mask > 0.5).view(batch, 1, frames, 1, 1)
    meta: dict[str, Any] = dict(latent.meta)
    meta["condition"] = {"head_frames": int(n_head), "tail_frames": int(n_tail)}
    return Latent(samples=torch.where(select, known, latent.samples.float()), frame_mask=mask,
                  known=known, fps=latent.fps, meta=meta)


def _as_clip(frames: torch.Tensor | None, batch: int, name: str) -> torch.Tensor | None:
    """(T, H, W, 3) or (B, T, H, W, 3) -> (1 or B, T, H, W, 3)."""
    if frames is None:
        return None
    if frames.ndim == 4:
        frames = frames.unsqueeze(0)
    if frames.ndim != 5 or frames.shape[-1] != 3 or frames.shape[0] not in (1, batch):
        raise NodeError(f"{name} frames must be (T, H, W, 3) or ({batch}, T, H, W, 3); "
                        f"got {tuple(frames.shape)}", input=name)
    return frames


def context_frames(mode: str, keep_frames: int) -> tuple[int, int]:
    """(head, tail) pixel frame counts for a VideoCondition mode.

    keep_frames is 4k+1; at the head all of them are used, at the tail one fewer (4k), because only
    the first latent frame of a video holds a single pixel frame.
    """
    if mode == "extend forward":
        return keep_frames, 0
    if mode == "extend backward":
        return 0, keep_frames - 1
    if mode == "connect":
        return keep_frames, keep_frames - 1
    raise NodeError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}", input="mode")


def video_condition(vae: VideoAutoencoder, video: Video, video_b: Video | None, mode: str,
                    keep_frames: int, generate_frames: int, width: int, height: int, seed: int,
                    batch: int = 1) -> Latent:
    """Noise for head + generate + tail frames with the context frames of the clip(s) known.

    extend forward: head = last keep_frames of `video`, then generate_frames new ones; extend
    backward: generate_frames + 1 new frames (a video's first frame is a latent frame of its own),
    then tail = first keep_frames-1 of `video`; connect: head = last keep_frames of `video`,
    generate_frames new, tail = first keep_frames-1 of `video_b`.
    width / height 0 take the clip's size rounded down to the grid. Stitch the decoded result with
    `stitch(decoded, before, after, head, tail)` using `context_frames(mode, keep_frames)`.
    """
    grid = vae.grid
    check_frames(keep_frames, grid, input="keep_frames")
    t = grid.temporal
    if generate_frames < t or generate_frames % t:
        below = max(t, generate_frames // t * t)
        raise NodeError(f"generate_frames must be a multiple of {t}, e.g. {below} or {below + t}; "
                        f"got {generate_frames}", input="generate_frames")
    n_head, n_tail = context_frames(mode, keep_frames)
    if mode != "extend forward" and n_tail == 0:
        raise NodeError(f"{mode} needs keep_frames of at least {t + 1} (the tail takes keep_frames-1)",
                        input="keep_frames")
    if mode == "connect" and video_b is None:
        raise NodeError("connect needs a second clip in video_b", input="video_b")
    m = grid.spatial * grid.patch
    width = width or max(m, video.size[0] // m * m)
    height = height or max(m, video.size[1] // m * m)
    check_size(width, height, grid)

    after_clip = video_b if mode == "connect" else video
    for name, clip, need in (("video", video, n_head), ("video_b" if mode == "connect" else "video",
                                                        after_clip, n_tail)):
        if need and clip.num_frames < need:
            raise NodeError(f"{name} has {clip.num_frames} frames but {need} are kept as context; "
                            "lower keep_frames", input=name)
    head = video.frames[video.num_frames - n_head:] if n_head else None
    tail = after_clip.frames[:n_tail] if n_tail else None
    # a video's first pixel frame is a latent frame of its own: with no head it is a new frame
    total = n_head + generate_frames + n_tail + (0 if n_head else 1)
    latent = init_noise(width, height, total, batch, seed, grid, fps=video.fps)
    return condition_latent(latent, vae, head=head, tail=tail)


def stitch(generated: Video, before: Video | None, after: Video | None, head_frames: int,
           tail_frames: int) -> Video:
    """Join a conditioned generation with the original clips (see the module docstring).

    The generated frames between the known head and tail are kept; `before` and `after` are used
    whole, resized to the generated size, so the original pixels replace the VAE's re-creations.
    """
    n = generated.num_frames
    if head_frames + tail_frames >= n:
        raise NodeError(f"the generated video has {n} frames, too few for {head_frames} head and "
                        f"{tail_frames} tail context frames; stitch the video VideoCondition made",
                        input="video")
    width, height = generated.size
    parts = []
    if before is not None:
        parts.append(fit_frames(before.frames, width, height))
    parts.append(generated.frames[head_frames:n - tail_frames].float())
    if after is not None:
        parts.append(fit_frames(after.frames, width, height))
    return Video(frames=torch.cat(parts), fps=generated.fps)
