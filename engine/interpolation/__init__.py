"""Frame interpolation: insert frames between each pair of a video (RIFE weights or classical flow).

Frame-count convention: a clip of T frames interpolated with multiplier m has (T - 1) * m + 1
frames at fps * m. Original frame i lands unchanged at index i * m, and the m - 1 frames between
originals i and i + 1 sit at times k / m, k = 1 .. m - 1. No frames are invented past the last
original (tools that output T * m frames repeat the last one m - 1 times; we do not).

Scene cuts: when `scene_cut_score` of a pair exceeds `scene_cut_threshold`, the inserted frames
duplicate the nearer original (t < 0.5 -> frame i, else frame i + 1) instead of morphing one shot
into the next. A threshold of 1.0 or more never detects a cut.

Interpolators share one method, `between(frame0, frame1, times) -> list of frames`, on (H, W, 3)
float32 numpy frames in [0, 1]: `ClassicalInterpolator` (no weights) and `RifeInterpolator`
(`load_rife(path, device)`).

Importing the package is light (no numpy, torch or OpenCV): `interpolate` imports them when
called, and the interpolators load their module on first use (PEP 562), so the node registry
reads DEFAULT_SCENE_CUT_THRESHOLD without them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence

from engine.values import Video

if TYPE_CHECKING:
    import numpy as np

    from engine.interpolation.classical import ClassicalInterpolator, scene_cut_score
    from engine.interpolation.rife import RifeInterpolator, load_rife

DEFAULT_SCENE_CUT_THRESHOLD = 0.4
_LAZY = {"ClassicalInterpolator": "engine.interpolation.classical",
         "scene_cut_score": "engine.interpolation.classical",
         "RifeInterpolator": "engine.interpolation.rife", "load_rife": "engine.interpolation.rife"}


class FrameInterpolator(Protocol):
    name: str

    def between(self, frame0: np.ndarray, frame1: np.ndarray,
                times: Sequence[float]) -> list[np.ndarray]: ...


def interpolate(video: Video, multiplier: int, method: str | FrameInterpolator = "classical",
                scene_cut_threshold: float = DEFAULT_SCENE_CUT_THRESHOLD,
                progress: Callable[[float, str], None] | None = None) -> Video:
    """`video` with (multiplier - 1) frames inserted between each pair, at fps * multiplier.

    `method` is "classical" or a loaded interpolator (e.g. `load_rife(path)`); `progress(fraction,
    message)` is called after each pair (and may raise to interrupt)."""
    import numpy as np
    import torch

    from engine.interpolation.classical import scene_cut_score

    if isinstance(multiplier, bool) or not isinstance(multiplier, int) or multiplier < 1:
        raise ValueError(f"multiplier must be an integer >= 1, got {multiplier!r}")
    interpolator = _interpolator(method)
    frames = video.frames.detach().to("cpu", torch.float32).numpy()  # (T, H, W, 3)
    count = frames.shape[0]
    if multiplier == 1 or count < 2:
        return Video(video.frames.clone(), fps=video.fps * multiplier)
    times = [k / multiplier for k in range(1, multiplier)]
    out = [frames[0]]
    for i in range(count - 1):
        a, b = frames[i], frames[i + 1]
        if scene_cut_threshold < 1.0 and scene_cut_score(a, b) > scene_cut_threshold:
            out.extend(a if t < 0.5 else b for t in times)
        else:
            out.extend(interpolator.between(a, b, times))
        out.append(b)
        if progress is not None:
            progress((i + 1) / (count - 1), f"pair {i + 1}/{count - 1} ({interpolator.name})")
    stacked = torch.from_numpy(np.stack(out).astype(np.float32, copy=False))  # ((T-1)*m+1, H, W, 3)
    return Video(stacked, fps=video.fps * multiplier)


def _interpolator(method: str | FrameInterpolator) -> FrameInterpolator:
    if not isinstance(method, str):
        return method
    if method == "classical":
        from engine.interpolation.classical import ClassicalInterpolator

        return ClassicalInterpolator()
    if method == "rife":
        raise ValueError('method "rife" needs weights: pass load_rife(path) as the method')
    raise ValueError(f"unknown interpolation method {method!r}; use 'classical' or a loaded "
                     "interpolator")


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this hook
    return value


__all__ = ["interpolate", "FrameInterpolator", "ClassicalInterpolator", "RifeInterpolator",
           "load_rife", "scene_cut_score", "DEFAULT_SCENE_CUT_THRESHOLD"]
