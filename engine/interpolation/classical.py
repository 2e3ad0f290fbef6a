"""Classical frame interpolation: DIS optical flow, backward warping, occlusion-aware blending.

Needs no weights. For a pair (I0, I1) and a time t in (0, 1):

1. OpenCV's DIS optical flow in both directions: f01 (I0 -> I1) and f10 (I1 -> I0), in pixels,
   (H, W, 2) as (dx, dy), such that I0(p) ~ I1(p + f01(p)).
2. Flows from time t back to each frame, F_t0 and F_t1, solving F_t0(x) = -t * f01(x + F_t0(x))
   (the pixel seen at x at time t came from p = x + F_t0(x) in I0 and moved on along f01(p)) by
   fixed-point iteration from two starts (zero and Super SloMo's linear combination of f01 and
   f10), keeping per pixel the iterate that best satisfies the equation. Likewise F_t1 with
   (1 - t) and f10.
3. Backward warping of I0 by F_t0 and of I1 by F_t1 with cv2.remap.
4. Blending weighted by time ((1 - t) and t), by how well each pixel's flow solved step 2 (a pixel
   that did not, e.g. background just uncovered, is not in that frame) and by forward-backward
   consistency of the source pixel (f01(p) + f10(p + f01(p)) ~ 0 where p stays visible).
   Where neither frame is trusted the blend falls back to the plain time-weighted mix.

Scene cuts: `scene_cut_score` compares colour histograms of small thumbnails (robust to motion,
blind to a cut between shots of near-identical colour); the caller duplicates the nearest frame
across a cut instead of morphing.

Invariants: frames are float32 (H, W, 3) RGB in [0, 1] numpy arrays; outputs likewise; results
are deterministic (OpenCV DIS is deterministic on a given build).
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

_FIXED_POINT_STEPS = 4
_WEIGHT_FLOOR = 1e-3  # fallback share of the plain time blend where neither frame is trusted


def to_gray_u8(frame: np.ndarray) -> np.ndarray:
    """(H, W, 3) float [0, 1] -> (H, W) uint8 luma, what DIS works on."""
    rgb = (np.clip(frame, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


def estimate_flows(frame0: np.ndarray, frame1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DIS optical flow (f01, f10), each (H, W, 2) float32 in pixels."""
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    g0, g1 = to_gray_u8(frame0), to_gray_u8(frame1)
    f01 = dis.calc(g0, g1, None)
    f10 = dis.calc(g1, g0, None)
    return f01, f10


def _grid(h: int, w: int) -> np.ndarray:
    """(H, W, 2) pixel coordinates (x, y)."""
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return np.stack([xs, ys], axis=-1)


def backward_warp(image: np.ndarray, flow: np.ndarray, grid: np.ndarray | None = None) -> np.ndarray:
    """out(x) = image(x + flow(x)), bilinear, edges replicated. image (H, W, C), flow (H, W, 2)."""
    if grid is None:
        grid = _grid(*flow.shape[:2])
    coords = grid + flow
    out = cv2.remap(image, coords[..., 0], coords[..., 1], interpolation=cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_REPLICATE)
    return out.reshape(image.shape)


def _norm(v: np.ndarray) -> np.ndarray:
    return np.sqrt(np.sum(v * v, axis=-1))  # (H, W)


def flow_to_time(flow: np.ndarray, other: np.ndarray, s: float,
                 grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Solve F(x) = -s * flow(x + F(x)) for the flow from time t back to the frame `flow` starts
    from (s = t for I0 with flow = f01; s = 1 - t for I1 with flow = f10). `other` is the opposite
    flow, used for Super SloMo's start -(1-s)s*flow + s^2*other. Returns (F, residual) with the
    residual |F + s * flow(x + F)| in pixels, per pixel the best over all iterates."""
    best = np.zeros_like(flow)
    best_err = np.full(flow.shape[:2], np.inf, dtype=np.float32)
    for start in (np.zeros_like(flow), -(1.0 - s) * s * flow + s * s * other):
        current = start
        for _ in range(_FIXED_POINT_STEPS):
            following = -s * backward_warp(flow, current, grid)
            err = _norm(current - following)
            better = err < best_err
            best[better] = current[better]
            best_err[better] = err[better]
            current = following
    return best, best_err


def _trust(residual: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """1 where a flow residual is small next to the motion, falling smoothly to 0."""
    sigma = 0.75 + 0.1 * scale  # pixels: sub-pixel slack plus 10% of the motion
    return np.exp(-0.5 * (residual / sigma) ** 2)


def interpolate_pair(frame0: np.ndarray, frame1: np.ndarray, times: Sequence[float],
                     flows: tuple[np.ndarray, np.ndarray] | None = None) -> list[np.ndarray]:
    """Frames at each t in `times` (each strictly between 0 and 1) between frame0 and frame1."""
    f01, f10 = flows if flows is not None else estimate_flows(frame0, frame1)
    h, w = f01.shape[:2]
    grid = _grid(h, w)
    # forward-backward consistency: ~0 where a pixel of I0 is still visible in I1 (and vice versa)
    vis0 = _trust(_norm(f01 + backward_warp(f10, f01, grid)), _norm(f01))  # (H, W) over I0
    vis1 = _trust(_norm(f10 + backward_warp(f01, f10, grid)), _norm(f10))  # (H, W) over I1
    out = []
    for t in times:
        if not 0.0 < t < 1.0:
            raise ValueError(f"interpolation time must lie strictly between 0 and 1, got {t}")
        ft0, r0 = flow_to_time(f01, f10, t, grid)
        ft1, r1 = flow_to_time(f10, f01, 1.0 - t, grid)
        warped0 = backward_warp(frame0, ft0, grid)  # (H, W, 3)
        warped1 = backward_warp(frame1, ft1, grid)
        w0 = (1.0 - t) * _trust(r0, _norm(ft0)) * backward_warp(vis0, ft0, grid)
        w1 = t * _trust(r1, _norm(ft1)) * backward_warp(vis1, ft1, grid)
        w0 = w0 + _WEIGHT_FLOOR * (1.0 - t)
        w1 = w1 + _WEIGHT_FLOOR * t
        blended = (w0[..., None] * warped0 + w1[..., None] * warped1) / (w0 + w1)[..., None]
        out.append(np.clip(blended, 0.0, 1.0).astype(np.float32))
    return out


def scene_cut_score(frame0: np.ndarray, frame1: np.ndarray) -> float:
    """0 (same shot) .. 1 (unrelated pictures): Bhattacharyya distance between 8x8x8-bin RGB
    histograms of 64x64 thumbnails. Motion within a shot barely moves it; a cut to different
    colours does."""
    hists = []
    for frame in (frame0, frame1):
        thumb = cv2.resize((np.clip(frame, 0, 1) * 255).astype(np.uint8), (64, 64),
                           interpolation=cv2.INTER_AREA)
        hist = cv2.calcHist([thumb], [0, 1, 2], None, [8, 8, 8], [0, 256, 0, 256, 0, 256])
        hists.append(cv2.normalize(hist, None).flatten())
    return float(np.clip(cv2.compareHist(hists[0], hists[1], cv2.HISTCMP_BHATTACHARYYA), 0.0, 1.0))


class ClassicalInterpolator:
    """The weight-free interpolator; same `between` interface as the RIFE one."""

    name = "classical"

    def between(self, frame0: np.ndarray, frame1: np.ndarray, times: Sequence[float]) -> list[np.ndarray]:
        return interpolate_pair(frame0, frame1, times)
