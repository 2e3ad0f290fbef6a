"""Noise on the spacetime latent grid: the starting point of every generation.

Invariants:
- A video of F pixel frames at W x H maps to a latent of (C, (F - 1) // temporal + 1, H / spatial,
  W / spatial) on the VAE's grid. F must be temporal*n + 1 (1 gives a still image) and W, H multiples
  of spatial * patch, so the DiT's patches tile the latent exactly; any aspect ratio is allowed.
- Noise is drawn in float32 on the CPU with a seeded `torch.Generator`, so a seed gives the same
  video on every device and every machine.
- Batch item k is drawn with seed + k (mod 2**64): item k of a batch equals a single run with seed + k,
  so a good take in a batch can be re-made alone from its own seed.
- The returned `Latent` carries meta["sigma"] = 1.0 ("these samples are pure noise"), which tells
  the sampler to start from them as they are instead of noising them again (see engine.sampling).
"""

from __future__ import annotations

from typing import Any

import torch

from engine.errors import NodeError
from engine.models.interfaces import LatentGrid
from engine.values import Latent

_SEED_MOD = 2**64  # torch.Generator.manual_seed accepts 64-bit seeds


def _nearest(value: int, step: int, minimum: int) -> str:
    """'a or b': the valid values (minimum + k*step) on either side of an invalid `value`."""
    if value < minimum:
        return f"{minimum} or {minimum + step}"
    below = minimum + ((value - minimum) // step) * step
    return f"{below} or {below + step}"


def check_frames(frames: int, grid: LatentGrid, input: str = "frames") -> None:
    """Raise NodeError unless `frames` sits on the VAE's causal grid (temporal*n + 1)."""
    t = grid.temporal
    if frames < 1 or (frames - 1) % t != 0:
        raise NodeError(f"{input} must be {t}n+1 (the VAE packs the first frame alone and then "
                        f"{t} frames per latent frame), e.g. {_nearest(frames, t, 1)}; got {frames}",
                        input=input)


def check_size(width: int, height: int, grid: LatentGrid) -> None:
    """Raise NodeError unless width and height tile into whole DiT patches on the latent grid."""
    m = grid.spatial * grid.patch
    for name, value in (("width", width), ("height", height)):
        if value < m or value % m != 0:
            raise NodeError(f"{name} must be a multiple of {m} (VAE {grid.spatial}x x DiT patch "
                            f"{grid.patch}), e.g. {_nearest(value, m, m)}; got {value}",
                            input=name)


def seeded_noise(shape: tuple[int, ...], seed: int, batch: int) -> torch.Tensor:
    """Standard normal noise (batch, *shape), float32 on the CPU; item k drawn with seed + k."""
    items = []
    for k in range(batch):
        gen = torch.Generator(device="cpu").manual_seed((int(seed) + k) % _SEED_MOD)
        items.append(torch.randn(shape, generator=gen, dtype=torch.float32))
    return torch.stack(items)  # (B, *shape)


def latent_shape(width: int, height: int, frames: int, grid: LatentGrid) -> tuple[int, int, int, int]:
    """(C, T', H', W') of one item of the latent for a video of this size."""
    return (grid.channels, grid.latent_frames(frames), height // grid.spatial, width // grid.spatial)


def init_noise(width: int, height: int, frames: int, batch: int, seed: int, grid: LatentGrid,
               fps: float = 16.0) -> Latent:
    """Pure noise for a `batch` of videos of `frames` x `height` x `width` pixels on `grid`.

    Returns a Latent with samples (batch, C, T', H', W') and meta holding the pixel size, frame
    count, seed, fps, grid and sigma 1.0.
    """
    check_size(width, height, grid)
    check_frames(frames, grid)
    if batch < 1:
        raise NodeError(f"batch must be at least 1; got {batch}", input="batch")
    samples = seeded_noise(latent_shape(width, height, frames, grid), seed, batch)
    meta: dict[str, Any] = {
        "width": int(width), "height": int(height), "frames": int(frames), "seed": int(seed),
        "fps": float(fps), "sigma": 1.0,
        "grid": {"channels": grid.channels, "temporal": grid.temporal, "spatial": grid.spatial,
                 "patch": grid.patch},
    }
    return Latent(samples=samples, fps=float(fps), meta=meta)
