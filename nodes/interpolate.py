"""Frame interpolation nodes: raise a clip's frame rate with RIFE weights or classical optical flow.

A clip of T frames comes out with (T - 1) * multiplier + 1 frames at fps * multiplier (the
originals unchanged at every multiplier-th frame); see engine.interpolation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine.context import ExecutionContext
from engine.errors import NodeError
from engine.interpolation import DEFAULT_SCENE_CUT_THRESHOLD, FrameInterpolator, interpolate
from engine.schema import Input, NodeSpec, NodeType, Output
from engine.sockets import SocketType as T
from engine.values import Video

if TYPE_CHECKING:
    from engine.interpolation.rife import RifeInterpolator

METHODS = ("auto", "classical", "rife")


def _load(ctx: ExecutionContext, name: str, input_name: str) -> RifeInterpolator:
    from engine.interpolation.rife import load_rife  # torch, only when RIFE weights are used

    if ctx.model_paths is None:
        raise NodeError("no model folders are configured, so RIFE weights cannot be found",
                        input=input_name)
    path = ctx.model_paths.resolve("interpolation", name)
    ctx.progress(0.0, f"loading {path.name}")
    interpolator = load_rife(path, ctx.device)
    # FrameInterpolate's output is a VIDEO, so the executor cannot see the model: record it here
    ctx.provenance.setdefault("models", {})[ctx.node_id] = {
        "path": path.name, "family": interpolator.info.family, "sha256": interpolator.info.sha256}
    return interpolator


class LoadInterpolator(NodeType):
    """Load RIFE 4.x frame-interpolation weights (Practical-RIFE flownet.pkl, or a .safetensors
    copy) from the interpolation model folder, to share between FrameInterpolate nodes."""

    spec = NodeSpec(
        name="LoadInterpolator", category="interpolation", description=__doc__,
        inputs=(Input("model", T.STRING, "", file_kind="interpolation",
                      tooltip="a RIFE 4.x weight file in the interpolation folder"),),
        outputs=(Output("interpolator", T.INTERPOLATOR),),
    )

    @classmethod
    def execute(cls, ctx: ExecutionContext, model: str) -> dict[str, Any]:
        return {"interpolator": _load(ctx, model, "model")}


class FrameInterpolate(NodeType):
    """Insert multiplier - 1 frames between each pair of frames; the clip plays at fps *
    multiplier. "auto" uses RIFE when an interpolator is linked, a model file is chosen or one is
    present in the interpolation folder, and the classical optical-flow method (no weights)
    otherwise. Across a scene cut (colour change above scene_cut_threshold; 1 = never) the
    nearest frame is repeated instead of morphing the two shots."""

    spec = NodeSpec(
        name="FrameInterpolate", category="interpolation", description=__doc__,
        inputs=(Input("video", T.VIDEO),
                Input("multiplier", T.INT, 2, min=2, max=8,
                      tooltip="output frames per input frame interval; fps is multiplied by it"),
                Input("method", T.STRING, "auto", choices=METHODS),
                Input("model", T.STRING, "", file_kind="interpolation", optional=True,
                      picks_from_folder=True,
                      tooltip="RIFE weights; empty = the first file in the interpolation folder"),
                Input("scene_cut_threshold", T.FLOAT, DEFAULT_SCENE_CUT_THRESHOLD, min=0.0,
                      max=1.0, step=0.05,
                      tooltip="histogram distance above which a pair is a cut (1 = never)"),
                Input("interpolator", T.INTERPOLATOR, optional=True,
                      tooltip="a loaded interpolator (LoadInterpolator); overrides model")),
        outputs=(Output("video", T.VIDEO),),
    )

    @classmethod
    def execute(cls, ctx: ExecutionContext, video: Video, multiplier: int, method: str,
                model: str | None, scene_cut_threshold: float,
                interpolator: FrameInterpolator | None = None) -> dict[str, Any]:
        if not isinstance(video, Video):
            raise NodeError(f"expected a VIDEO, got {type(video).__name__}", input="video")
        chosen = cls.choose(ctx, method, model or "", interpolator)
        result = interpolate(video, multiplier, chosen, scene_cut_threshold,
                             progress=lambda f, msg: ctx.progress(f, msg))
        return {"video": result}

    @staticmethod
    def choose(ctx: ExecutionContext, method: str, model: str,
               interpolator: FrameInterpolator | None) -> FrameInterpolator | str:
        if method == "classical":
            return "classical"
        if interpolator is not None:
            return interpolator
        if model.strip():
            return _load(ctx, model, "model")
        available = ctx.model_paths.list("interpolation") if ctx.model_paths is not None else []
        if available:
            return _load(ctx, available[0], "model")
        if method == "rife":
            raise NodeError("method 'rife' needs RIFE weights: put a RIFE 4.x flownet.pkl or "
                            ".safetensors in the interpolation model folder, choose it in "
                            "'model', or use method 'auto'/'classical'", input="method")
        return "classical"
