"""Image and video conditioning nodes: known frames placed on the latent grid, and the stitch back.

Thin wrappers over engine.conditioning, whose module docstring states the grid rules and the
stitching contract. engine.conditioning and engine.noise (torch) are imported when a node runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine.choices import CONDITIONING_MODES as MODES
from engine.context import ExecutionContext
from engine.errors import NodeError
from engine.schema import Input, NodeSpec, NodeType, Output
from engine.sockets import SocketType as S
from engine.values import ClipVisionOutput, Conditioning, Video

if TYPE_CHECKING:
    import torch

MAX_SEED = 2**64 - 1

_MODE_TIP = ("extend forward: continue after the clip; extend backward: lead into the clip; "
             "connect: bridge the end of video to the start of video_b")
_KEEP_TIP = ("context frames taken from the clip, 4n+1; at a tail (extend backward, connect's "
             "video_b) one fewer is used, since only a video's first latent holds a single frame")


class ImageToVideo(NodeType):
    """Animate an image: noise for a video whose first frame is the image, held fixed while denoising.

    The image is resized to cover width x height and centre-cropped. A batch of images gives one
    video per image (seed + k for item k).
    """

    spec = NodeSpec(
        name="ImageToVideo",
        display_name="Image to Video",
        category="conditioning",
        description="Latent noise with the image as the known first frame.",
        inputs=(
            Input("vae", S.VAE),
            Input("image", S.IMAGE),
            Input("width", S.INT, 832, min=16, max=4096, step=16),
            Input("height", S.INT, 480, min=16, max=4096, step=16),
            Input("frames", S.INT, 81, min=5, max=1025, step=4, tooltip="4n+1"),
            Input("seed", S.INT, 0, min=0, max=MAX_SEED, seed=True),
            Input("fps", S.FLOAT, 16.0, min=1.0, max=120.0, step=1.0),
        ),
        outputs=(Output("latent", S.LATENT),),
    )

    @classmethod
    def execute(cls, ctx: ExecutionContext, *, vae: Any, image: torch.Tensor, width: int,
                height: int, frames: int, seed: int, fps: float) -> dict[str, Any]:
        from engine.conditioning import condition_latent
        from engine.noise import init_noise

        if image.ndim == 3:
            image = image.unsqueeze(0)
        latent = init_noise(width, height, frames, image.shape[0], seed, vae.grid, fps=fps)
        # (B, H, W, 3) -> one 1-frame head clip per batch item (B, 1, H, W, 3)
        return {"latent": condition_latent(latent, vae, head=image.unsqueeze(1))}


class WanImageToVideo(NodeType):
    """Start and/or end frames for Wan 2.1 I2V-14B, FLF2V-14B and Wan 2.2 I2V-A14B (36-channel
    image-channel models).

    The latent is seeded noise (as Noise Init) carrying the encoded start/end images and a frame
    mask as extra channels; the conditioning gains the CLIP image tokens of clip_vision_start (and
    clip_vision_end for first-last-frame). Wan 2.1 models need the CLIP tokens (connect CLIP Vision
    Encode); Wan 2.2 I2V-A14B needs none. For Wan 2.2 TI2V-5B and reelgraph-tiny use Image to Video.
    """

    spec = NodeSpec(
        name="WanImageToVideo",
        display_name="Wan Image To Video",
        category="conditioning",
        description="Image channels and CLIP image tokens for Wan I2V / FLF2V models.",
        inputs=(
            Input("vae", S.VAE),
            Input("conditioning", S.CONDITIONING),
            Input("clip_vision_start", S.CLIP_VISION_OUTPUT, optional=True,
                  tooltip="CLIP Vision Encode of the start image (Wan 2.1 I2V / FLF2V)"),
            Input("clip_vision_end", S.CLIP_VISION_OUTPUT, optional=True,
                  tooltip="CLIP Vision Encode of the end image (Wan 2.1 FLF2V)"),
            Input("start_image", S.IMAGE, optional=True, tooltip="the video's first frame"),
            Input("end_image", S.IMAGE, optional=True, tooltip="the video's last frame"),
            Input("width", S.INT, 832, min=16, max=4096, step=16),
            Input("height", S.INT, 480, min=16, max=4096, step=16),
            Input("frames", S.INT, 81, min=5, max=1025, step=4, tooltip="4n+1"),
            Input("batch", S.INT, 1, min=1, max=64),
            Input("seed", S.INT, 0, min=0, max=MAX_SEED, seed=True,
                  tooltip="the starting noise; batch item k uses seed + k"),
            Input("fps", S.FLOAT, 16.0, min=1.0, max=120.0, step=1.0),
        ),
        outputs=(Output("conditioning", S.CONDITIONING), Output("latent", S.LATENT)),
    )

    @classmethod
    def execute(cls, ctx: ExecutionContext, *, vae: Any, conditioning: Conditioning,
                clip_vision_start: ClipVisionOutput | None = None,
                clip_vision_end: ClipVisionOutput | None = None,
                start_image: torch.Tensor | None = None, end_image: torch.Tensor | None = None,
                width: int, height: int, frames: int, batch: int, seed: int,
                fps: float) -> dict[str, Any]:
        from engine.image_channels import wan_image_to_video

        cond, latent = wan_image_to_video(
            vae, conditioning, width=width, height=height, frames=frames, batch=batch, seed=seed,
            fps=fps, start_image=start_image, end_image=end_image,
            clip_vision_start=clip_vision_start, clip_vision_end=clip_vision_end)
        return {"conditioning": cond, "latent": latent}


class VideoCondition(NodeType):
    """Continue, lead into or connect clips: noise with the clips' context frames known.

    The output video (after DiTDenoise and VAEDecode) has keep + generate frames (plus the tail's
    keep - 1 in connect mode); its context frames re-create the clip. StitchVideo with the same mode
    and keep_frames joins it to the original clip(s): original pixels + only the new frames.
    """

    spec = NodeSpec(
        name="VideoCondition",
        display_name="Video Condition",
        category="conditioning",
        description="Extend a clip forward or backward, or connect two clips.",
        inputs=(
            Input("vae", S.VAE),
            Input("video", S.VIDEO),
            Input("video_b", S.VIDEO, optional=True, tooltip="the clip to connect to (connect mode)"),
            Input("mode", S.STRING, "extend forward", choices=MODES, tooltip=_MODE_TIP),
            Input("keep_frames", S.INT, 5, min=1, max=257, step=4, tooltip=_KEEP_TIP),
            Input("generate_frames", S.INT, 32, min=4, max=1024, step=4,
                  tooltip="new frames to generate, a multiple of 4"),
            Input("width", S.INT, 0, min=0, max=4096, step=16, tooltip="0: the clip's width"),
            Input("height", S.INT, 0, min=0, max=4096, step=16, tooltip="0: the clip's height"),
            Input("seed", S.INT, 0, min=0, max=MAX_SEED, seed=True),
        ),
        outputs=(Output("latent", S.LATENT),),
    )

    @classmethod
    def execute(cls, ctx: ExecutionContext, *, vae: Any, video: Video, video_b: Video | None,
                mode: str, keep_frames: int, generate_frames: int, width: int, height: int,
                seed: int) -> dict[str, Any]:
        from engine.conditioning import video_condition

        latent = video_condition(vae, video, video_b, mode, keep_frames, generate_frames,
                                 width, height, seed)
        return {"latent": latent}


class StitchVideo(NodeType):
    """Join a VideoCondition generation with the original clip(s).

    Use the same mode and keep_frames as the VideoCondition node: the generated context frames are
    dropped and the original clip(s) kept whole, so the result is original + new frames only.
    """

    spec = NodeSpec(
        name="StitchVideo",
        display_name="Stitch Video",
        category="conditioning",
        description="Original clip(s) plus the newly generated frames of a VideoCondition run.",
        inputs=(
            Input("generated", S.VIDEO, tooltip="the decoded VideoCondition generation"),
            Input("video", S.VIDEO),
            Input("video_b", S.VIDEO, optional=True),
            Input("mode", S.STRING, "extend forward", choices=MODES, tooltip=_MODE_TIP),
            Input("keep_frames", S.INT, 5, min=1, max=257, step=4, tooltip=_KEEP_TIP),
        ),
        outputs=(Output("video", S.VIDEO),),
    )

    @classmethod
    def execute(cls, ctx: ExecutionContext, *, generated: Video, video: Video,
                video_b: Video | None, mode: str, keep_frames: int) -> dict[str, Any]:
        from engine.conditioning import context_frames, stitch

        head, tail = context_frames(mode, keep_frames)
        if mode == "connect" and video_b is None:
            raise NodeError("connect needs the second clip in video_b", input="video_b")
        before = video if mode in ("extend forward", "connect") else None
        after = video_b if mode == "connect" else (video if mode == "extend backward" else None)
        return {"video": stitch(generated, before, after, head, tail)}
