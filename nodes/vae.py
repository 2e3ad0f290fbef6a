"""VAE nodes: VAEEncode (video -> latent) and VAEDecode (latent -> video).

Thin over the VideoAutoencoder protocol (engine.models.interfaces). Decoding is causal and runs
one latent frame at a time, so a long clip decodes in bounded memory; `tile_size` also splits each
frame into overlapping tiles for sizes that do not fit at once. VAEDecode's tile_size 0 is
"automatic": whole frames when the estimated working memory fits what is free on the VAE's device,
else the largest tile that fits (engine.memory.planner.plan_vae_tile); an explicit size wins.
Both report progress per chunk and stop promptly when the run is interrupted.
"""

from __future__ import annotations

from typing import Any

from engine.context import ExecutionContext
from engine.errors import NodeError
from engine.schema import Input, NodeSpec, NodeType, Output
from engine.sockets import SocketType as S
from engine.values import Latent, Video

_TILE_INPUTS = (
    Input("tile_size", S.INT, 0, min=0, max=4096, step=16,
          tooltip="spatial tile in pixels (multiple of 16); 0 processes whole frames"),
    Input("tile_overlap", S.INT, 64, min=0, max=2048, step=16,
          tooltip="overlap between tiles in pixels, blended to hide seams"),
)


class VAEEncode(NodeType):
    """Encode a video into latents on the VAE's spacetime grid (for video-to-video and extension).

    The video needs 4n+1 frames and a size that is a multiple of the VAE's spatial compression
    (8 for Wan 2.1, 16 for Wan 2.2). The latent keeps the video's fps.
    """

    spec = NodeSpec(
        name="VAEEncode", display_name="VAE Encode", category="vae", description=__doc__,
        inputs=(Input("video", S.VIDEO), Input("vae", S.VAE), *_TILE_INPUTS),
        outputs=(Output("latent", S.LATENT),),
    )

    @classmethod
    def execute(cls, ctx: ExecutionContext, video: Video, vae: Any, tile_size: int = 0,
                tile_overlap: int = 64) -> dict[str, Any]:
        frames = video.frames  # (T, H, W, 3)
        try:
            samples = vae.encode(frames[None].float(), progress=_reporter(ctx, "encoding"),
                                 tile=tile_size or None, tile_overlap=tile_overlap)
        except NodeError as exc:
            raise NodeError(str(exc), input=exc.input or "video") from None
        grid = vae.grid
        meta = {"width": video.size[0], "height": video.size[1], "frames": video.num_frames,
                "fps": float(video.fps),
                "grid": {"channels": grid.channels, "temporal": grid.temporal,
                         "spatial": grid.spatial, "patch": grid.patch}}
        return {"latent": Latent(samples=samples, fps=float(video.fps), meta=meta)}


class VAEDecode(NodeType):
    """Decode latents into a video (frames 4n+1 from n+1 latent frames), keeping the latent's fps.

    A batch of several latents decodes into one video with the clips played back to back.
    tile_size 0 decodes whole frames when they fit in free memory and tiles automatically when
    they do not; a non-zero size always tiles with it.
    """

    spec = NodeSpec(
        name="VAEDecode", display_name="VAE Decode", category="vae", description=__doc__,
        inputs=(Input("latent", S.LATENT), Input("vae", S.VAE),
                Input("tile_size", S.INT, 0, min=0, max=4096, step=16,
                      tooltip="spatial tile in pixels (multiple of 16); 0 = automatic: whole "
                              "frames when they fit in free memory, else the largest tile that "
                              "fits"),
                _TILE_INPUTS[1]),
        outputs=(Output("video", S.VIDEO),),
    )

    @classmethod
    def execute(cls, ctx: ExecutionContext, latent: Latent, vae: Any, tile_size: int = 0,
                tile_overlap: int = 64) -> dict[str, Any]:
        import torch

        samples = latent.samples  # (B, C, T', H', W')
        if samples.shape[1] != vae.grid.channels:
            raise NodeError(f"the latent has {samples.shape[1]} channels but this VAE decodes "
                            f"{vae.grid.channels}; decode with the VAE the latent was made with",
                            input="vae")
        from engine.memory import settings_scope

        items = samples.shape[0]
        clips = []
        with settings_scope(ctx.settings):
            tile = tile_size
            auto = getattr(vae, "auto_tile", None)
            if not tile and callable(auto):
                tile = auto(samples[:1], tile_overlap)
                if tile:
                    ctx.log("info", f"VAE decode tiled automatically at {tile} px: whole frames "
                                    "would not fit in free memory")
            for b in range(items):
                report = _reporter(ctx, "decoding", start=b / items, span=1 / items)
                clips.append(vae.decode(samples[b:b + 1], progress=report, tile=tile or None,
                                        tile_overlap=tile_overlap)[0])  # (T, H, W, 3)
        return {"video": Video(frames=torch.cat(clips, dim=0), fps=float(latent.fps))}


def _reporter(ctx: ExecutionContext, verb: str, start: float = 0.0, span: float = 1.0):
    """A (fraction, message) callback mapping a sub-task's progress into this node's."""
    def report(fraction: float, message: str = "") -> None:
        ctx.progress(start + span * fraction, message or verb)
    return report
