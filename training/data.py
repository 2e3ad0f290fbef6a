"""Procedural training clips: one flat-colour shape moving on a plain background, with its caption.

Every clip is a pure function of its `ClipSpec` (and every spec of a seed), so the data set is
reproducible without storing it. Captions follow one grammar,

    "a {colour} {shape} {motion} on a {background} background"

e.g. "a red circle moving right on a black background". Pixel values are exact flat colours with
anti-aliased edges (coverage from a signed distance), so colour, shape and motion can be measured
back from generated pixels (training.evaluate).

Invariants:
- Frames are float32 (T, H, W, 3) in [0, 1]; T in FRAME_COUNTS (4n+1 for the Wan VAE), sizes in
  SIZES (width, height), fps FPS.
- A moving shape stays fully inside the frame for the whole clip; speeds are in pixels per frame.
- HELD_OUT combinations (colour, shape, motion, background) never appear in `training_spec`.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace

import numpy as np

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (225, 35, 35), "green": (40, 205, 60), "blue": (45, 95, 240),
    "yellow": (240, 220, 40), "white": (245, 245, 245), "purple": (155, 55, 210),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "black": (0, 0, 0), "gray": (120, 120, 120), "navy": (15, 20, 85), "dark green": (15, 75, 30),
}
SHAPES = ("circle", "square", "triangle")
MOTIONS = ("moving left", "moving right", "moving up", "moving down", "staying still", "growing")
SIZES = ((64, 64), (96, 64), (64, 96))  # (width, height)
FRAME_COUNTS = (17, 9, 25)
FPS = 8.0

# Held-out combinations for evaluation: every colour, shape, motion and background appears in
# training, only these 4-tuples do not. Chosen by a fixed rule so the list never drifts.
HELD_OUT: tuple[tuple[str, str, str, str], ...] = tuple(
    (c, SHAPES[i % 3], MOTIONS[(i + j) % 6], list(BACKGROUNDS)[(i + 2 * j) % 4])
    for i, c in enumerate(COLOURS) for j in range(4))


def caption(colour: str, shape: str, motion: str, background: str) -> str:
    return f"a {colour} {shape} {motion} on a {background} background"


@dataclass(frozen=True)
class ClipSpec:
    colour: str
    shape: str
    motion: str
    background: str
    width: int = 64
    height: int = 64
    frames: int = 17
    size: float = 10.0  # half-extent in pixels at frame 0 (radius of the circle)
    x0: float = 32.0  # centre at frame 0
    y0: float = 32.0
    speed: float = 1.6  # pixels per frame (moving) or half-extent growth per frame (growing)

    @property
    def caption(self) -> str:
        return caption(self.colour, self.shape, self.motion, self.background)

    @property
    def combo(self) -> tuple[str, str, str, str]:
        return (self.colour, self.shape, self.motion, self.background)


def random_spec(rng: random.Random, combo: tuple[str, str, str, str] | None = None,
                width: int | None = None, height: int | None = None,
                frames: int | None = None) -> ClipSpec:
    """A random clip (any combination unless `combo` is given), sized so its path fits the frame."""
    colour, shape, motion, background = combo or (
        rng.choice(list(COLOURS)), rng.choice(SHAPES), rng.choice(MOTIONS), rng.choice(list(BACKGROUNDS)))
    if width is None or height is None:
        width, height = rng.choice(SIZES) if rng.random() < 0.5 else SIZES[0]
    if frames is None:
        frames = rng.choices(FRAME_COUNTS, weights=(0.7, 0.15, 0.15))[0]
    span = frames - 1
    size = rng.uniform(7.0, 12.0)
    speed = rng.uniform(24.0, 34.0) / 16.0  # ~24-34 px over a 17-frame clip
    dx = {"moving left": -1, "moving right": 1}.get(motion, 0)
    dy = {"moving up": -1, "moving down": 1}.get(motion, 0)
    if motion == "growing":  # from 6-9 px to 1.5-1.8x that by the last frame
        size = rng.uniform(6.0, 9.0)
        speed = rng.uniform(0.5, 0.8) * size / span
    travel = speed * span if dx or dy else 0.0
    # keep room for the fattest extent (triangles and squares reach ~size * 1.2 at the corners)
    reach = 1.25 * (size + (speed * span if motion == "growing" else 0.0)) + 1.0
    travel = min(travel, max(0.0, (width if dx else height) - 2 * reach - 1)) if (dx or dy) else 0.0
    if dx or dy:
        speed = travel / span
    x_lo, x_hi = reach, width - reach
    y_lo, y_hi = reach, height - reach
    # the start is chosen so the end point (start + travel along the direction) is still inside
    x0 = rng.uniform(x_lo + (travel if dx < 0 else 0), x_hi - (travel if dx > 0 else 0))
    y0 = rng.uniform(y_lo + (travel if dy < 0 else 0), y_hi - (travel if dy > 0 else 0))
    return ClipSpec(colour, shape, motion, background, width, height, frames, size, x0, y0, speed)


def training_spec(seed: int) -> ClipSpec:
    """The training clip `seed`: a random spec whose combination is not held out."""
    rng = random.Random(seed)
    held = set(HELD_OUT)
    while True:
        spec = random_spec(rng)
        if spec.combo not in held:
            return spec


def trajectory(spec: ClipSpec) -> list[tuple[float, float, float]]:
    """(x, y, half-extent) of the shape at every frame."""
    dx = {"moving left": -1, "moving right": 1}.get(spec.motion, 0)
    dy = {"moving up": -1, "moving down": 1}.get(spec.motion, 0)
    out = []
    for t in range(spec.frames):
        grow = spec.speed * t if spec.motion == "growing" else 0.0
        move = 0.0 if spec.motion == "growing" else spec.speed * t
        out.append((spec.x0 + dx * move, spec.y0 + dy * move, spec.size + grow))
    return out


def shape_coverage(shape: str, width: int, height: int, x: float, y: float, r: float) -> np.ndarray:
    """(H, W) float32 coverage in [0, 1] of one shape, anti-aliased over about one pixel."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32) + 0.5  # pixel centres
    px, py = xs - x, ys - y
    if shape == "circle":
        sdf = np.sqrt(px * px + py * py) - r
    elif shape == "square":
        s = r * 0.9  # same area scale as the circle, roughly
        sdf = np.maximum(np.abs(px), np.abs(py)) - s
    elif shape == "triangle":  # equilateral, pointing up, centred on its centroid
        R = r * 1.35  # circumradius
        k = math.sqrt(3.0)
        # distance to three half-planes (the edges), outward positive
        e1 = py - R / 2  # bottom edge
        e2 = (-k * px - py) / 2 - R / 2  # upper-left edge
        e3 = (k * px - py) / 2 - R / 2  # upper-right edge
        sdf = np.maximum(np.maximum(e1, e2), e3)
    else:
        raise ValueError(f"unknown shape {shape!r}; expected one of {', '.join(SHAPES)}")
    return np.clip(0.5 - sdf, 0.0, 1.0).astype(np.float32)


def coverage(spec: ClipSpec) -> np.ndarray:
    """(T, H, W) float32: how much of each pixel the shape covers, frame by frame."""
    return np.stack([shape_coverage(spec.shape, spec.width, spec.height, x, y, r)
                     for x, y, r in trajectory(spec)])


def partner_spec(spec: ClipSpec) -> ClipSpec:
    """The same clip with the next shape of SHAPES whose combination is not held out: a pair that
    differs only in the shape (and its caption only in the shape word)."""
    held = set(HELD_OUT)
    i = SHAPES.index(spec.shape)
    for other in (SHAPES[(i + 1) % 3], SHAPES[(i + 2) % 3]):
        partner = replace(spec, shape=other)
        if partner.combo not in held:
            return partner
    raise ValueError(f"every other shape of {spec.caption!r} is held out")


def shape_difference(spec: ClipSpec) -> np.ndarray:
    """(T, H, W) float32: where the clip would change if its shape were another one of SHAPES
    (same place, size and motion): the pixels that tell the caption's shape from the others."""
    own = coverage(spec)
    return np.max([np.abs(own - coverage(replace(spec, shape=other)))
                   for other in SHAPES if other != spec.shape], axis=0)


def render(spec: ClipSpec) -> np.ndarray:
    """The clip: (T, H, W, 3) float32 in [0, 1]."""
    fg = np.asarray(COLOURS[spec.colour], np.float32) / 255.0
    bg = np.asarray(BACKGROUNDS[spec.background], np.float32) / 255.0
    a = coverage(spec)[..., None]  # (T, H, W, 1)
    return bg * (1.0 - a) + fg * a
