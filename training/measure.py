"""Measure a generated clip from its pixels: background, object colour, shape and motion.

Used by training.evaluate and tests/test_demo_model.py. Works on any clip of the demo model's kind
(one shape on a plain background); everything is read from pixels, nothing from the generator.

- background: the median colour of the frame border, named by the nearest `BACKGROUNDS` entry.
- object: pixels farther than `OBJECT_DISTANCE` from the background colour (RGB in [0, 1]).
- colour: the median colour of the object's core pixels, named by the nearest `COLOURS` entry.
- shape: fill ratio of the object in its bounding box (square ~1.0, circle ~0.79, triangle ~0.5).
- motion: least-squares slope of the centroid track and of the object's area over time: "growing"
  when the area grows by half or more, "staying still" when the centroid travels under
  `STILL_PIXELS`, else the dominant direction ("moving left/right/up/down").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from training.data import BACKGROUNDS, COLOURS

OBJECT_DISTANCE = 0.25
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
    fill: float  # mean fill ratio in the bounding box
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


def classify_shape(fill: float) -> str:
    if fill > 0.88:
        return "square"
    if fill < 0.64:
        return "triangle"
    return "circle"


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
    t_idx, cx, cy, area, fills = [], [], [], [], []
    for t, m in enumerate(masks):
        n = int(m.sum())
        if n < 6:
            continue
        ys, xs = np.nonzero(m)
        t_idx.append(t)
        cx.append(xs.mean())
        cy.append(ys.mean())
        area.append(n)
        box = (xs.max() - xs.min() + 1) * (ys.max() - ys.min() + 1)
        fills.append(n / box)
    found = len(t_idx) / len(frames)
    if len(t_idx) < 2:
        return Measurement(_nearest(bg, BACKGROUNDS), "none", "none", "none", 0.0, 0.0, 1.0, 0.0, found)
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
    fill = float(np.median(fills))
    return Measurement(_nearest(bg, BACKGROUNDS), colour, classify_shape(fill),
                       classify_motion(dx, dy, growth), dx, dy, growth, fill, found)
