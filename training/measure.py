"""Measure a generated clip from its pixels: background, object colour, shape and motion.

Used by training.evaluate and tests/test_demo_model.py. Works on any clip of the demo model's kind
(one shape on a plain background); everything is read from pixels, nothing from the generator.

- background: the median colour of the frame border, named by the nearest `BACKGROUNDS` entry.
- object: pixels farther than `OBJECT_DISTANCE` from the background colour (RGB in [0, 1]).
- colour: the median colour of the object's core pixels, named by the nearest `COLOURS` entry.
- shape, from two cues that survive the VAE's soft edges (per frame, median over the clip):
  a triangle (pointing up) has three quarters of its pixels in the lower half of its bounding box
  (`tilt` ~0.5; circle and square ~0); a square fills the corners of its bounding box (`corners`:
  the mean coverage of the four corner patches of a fifth of the box side, 1.0; circle ~0.15).
  The first version classified by fill ratio alone (square 1.0, circle 0.79, triangle 0.5), which
  read the VAE's round-cornered squares as circles and its soft triangles (fill up to 0.72) as
  circles too; the thresholds below sit between the ranges measured on VAE round trips of 48
  training-distribution clips (tilt: others <= 0.06, triangles >= 0.16; corners: circles <= 0.23)
  and classify every rendered ground-truth clip correctly (tests/test_demo_model.py).
- motion: least-squares slope of the centroid track and of the object's area over time: "growing"
  when the area grows by half or more, "staying still" when the centroid travels under
  `STILL_PIXELS`, else the dominant direction ("moving left/right/up/down").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from training.data import BACKGROUNDS, COLOURS

OBJECT_DISTANCE = 0.25
TRIANGLE_TILT = 0.11  # lower-half minus upper-half share of the object's pixels
SQUARE_CORNERS = 0.35  # mean coverage of the bounding box's corner patches
STILL_PIXELS = 5.0  # total centroid travel below this over the clip counts as still


@dataclass(frozen=True)
class Measurement:
    background: str
    colour: str
    shape: str
    motion: str
    dx: float  # centroid travel over the clip, pixels (right positive)
    dy: float  # (down positive)
    growth: float  # last / first object area
    fill: float  # median fill ratio in the bounding box
    tilt: float  # median share of pixels in the lower half of the box minus the upper half
    corners: float  # median coverage of the box's corner patches
    found: float  # fraction of frames where an object was found


def _nearest(rgb: np.ndarray, table: dict[str, tuple[int, int, int]]) -> str:
    names = list(table)
    ref = np.asarray([table[n] for n in names], np.float32) / 255.0
    return names[int(np.argmin(((ref - rgb[None]) ** 2).sum(1)))]


def background_of(frames: np.ndarray) -> np.ndarray:
    f = frames[0]
    border = np.concatenate([f[0], f[-1], f[:, 0], f[:, -1]])  # (N, 3)
    return np.median(border, axis=0)


def object_masks(frames: np.ndarray, bg: np.ndarray) -> np.ndarray:
    """(T, H, W) bool: pixels far from the background colour."""
    return np.sqrt(((frames - bg) ** 2).sum(-1)) > OBJECT_DISTANCE


def classify_shape(tilt: float, corners: float) -> str:
    if tilt > TRIANGLE_TILT:
        return "triangle"
    return "square" if corners > SQUARE_CORNERS else "circle"


def shape_cues(mask: np.ndarray) -> tuple[float, float, float]:
    """(fill, tilt, corners) of one frame's object mask (H, W) bool with at least one pixel."""
    ys, xs = np.nonzero(mask)
    x0, x1, y0, y1 = xs.min(), xs.max(), ys.min(), ys.max()
    w, h = x1 - x0 + 1, y1 - y0 + 1
    fill = len(xs) / (w * h)
    mid = (y0 + y1) / 2
    tilt = float((ys > mid).sum() - (ys < mid).sum()) / len(ys)
    box = mask[y0:y1 + 1, x0:x1 + 1]
    k = max(1, round(0.2 * min(w, h)))
    corners = float(np.mean([box[:k, :k].mean(), box[:k, -k:].mean(), box[-k:, :k].mean(),
                             box[-k:, -k:].mean()]))
    return float(fill), tilt, corners


def classify_motion(dx: float, dy: float, growth: float) -> str:
    if growth >= 1.5 and max(abs(dx), abs(dy)) < 2 * STILL_PIXELS:
        return "growing"
    if max(abs(dx), abs(dy)) < STILL_PIXELS:
        return "staying still"
    if abs(dx) >= abs(dy):
        return "moving right" if dx > 0 else "moving left"
    return "moving down" if dy > 0 else "moving up"


def measure(frames: np.ndarray) -> Measurement:
    """frames (T, H, W, 3) float in [0, 1] -> what the clip shows."""
    frames = np.asarray(frames, np.float32)
    bg = background_of(frames)
    masks = object_masks(frames, bg)
    t_idx, cx, cy, area, cues = [], [], [], [], []
    for t, m in enumerate(masks):
        n = int(m.sum())
        if n < 6:
            continue
        ys, xs = np.nonzero(m)
        t_idx.append(t)
        cx.append(xs.mean())
        cy.append(ys.mean())
        area.append(n)
        cues.append(shape_cues(m))
    found = len(t_idx) / len(frames)
    if len(t_idx) < 2:
        return Measurement(_nearest(bg, BACKGROUNDS), "none", "none", "none", 0.0, 0.0, 1.0, 0.0, 0.0,
                           0.0, found)
    tt = np.asarray(t_idx, np.float32)
    span = float(len(frames) - 1)
    slope = lambda v: float(np.polyfit(tt, np.asarray(v, np.float32), 1)[0]) * span  # noqa: E731
    dx, dy = slope(cx), slope(cy)
    a = np.asarray(area, np.float32)
    k = max(1, len(a) // 4)
    growth = float(a[-k:].mean() / max(a[:k].mean(), 1.0))
    # colour: the object's core, i.e. the pixels farthest from the background
    obj = frames[masks]  # (N, 3)
    dist = np.sqrt(((obj - bg) ** 2).sum(-1))
    core = obj[dist >= np.quantile(dist, 0.5)]
    colour = _nearest(np.median(core, axis=0), COLOURS)
    fill, tilt, corners = (float(v) for v in np.median(np.asarray(cues), axis=0))
    return Measurement(_nearest(bg, BACKGROUNDS), colour, classify_shape(tilt, corners),
                       classify_motion(dx, dy, growth), dx, dy, growth, fill, tilt, corners, found)
