"""Noise init: seeded reproducibility, the batch seed scheme, grid validation with helpful errors."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from engine.context import ExecutionContext, InterruptFlag
from engine.errors import NodeError
from engine.models.interfaces import LatentGrid
from engine.noise import init_noise
from engine.registry import NodeRegistry
from nodes import sampling as sampling_nodes
from nodes.sampling import NoiseInit

GRID = LatentGrid(channels=4)


def test_same_seed_same_noise_other_seed_differs() -> None:
    a = init_noise(32, 16, 9, 1, seed=7, grid=GRID)
    b = init_noise(32, 16, 9, 1, seed=7, grid=GRID)
    c = init_noise(32, 16, 9, 1, seed=8, grid=GRID)
    assert torch.equal(a.samples, b.samples)
    assert not torch.allclose(a.samples, c.samples)
    assert a.samples.dtype == torch.float32 and a.samples.device.type == "cpu"


def test_batch_item_k_equals_single_run_with_seed_plus_k() -> None:
    batch = init_noise(16, 16, 5, 3, seed=100, grid=GRID)
    for k in range(3):
        single = init_noise(16, 16, 5, 1, seed=100 + k, grid=GRID)
        assert torch.equal(batch.samples[k], single.samples[0])
    assert not torch.equal(batch.samples[0], batch.samples[1])


def test_shape_any_aspect_and_meta() -> None:
    lat = init_noise(48, 16, 13, 2, seed=3, grid=GRID, fps=24.0)
    # 13 frames -> 1 + 12/4 = 4 latent frames; 48x16 pixels -> 6x2 latent pixels
    assert lat.shape == (2, 4, 4, 2, 6)
    assert lat.meta["width"] == 48 and lat.meta["height"] == 16 and lat.meta["frames"] == 13
    assert lat.meta["seed"] == 3 and lat.meta["fps"] == 24.0 and lat.fps == 24.0
    assert lat.meta["sigma"] == 1.0
    still = init_noise(16, 32, 1, 1, seed=0, grid=GRID)
    assert still.shape == (1, 4, 1, 4, 2)
    # standard normal noise
    big = init_noise(256, 256, 1, 1, seed=0, grid=GRID).samples
    assert abs(float(big.mean())) < 0.05 and abs(float(big.std()) - 1.0) < 0.05


@pytest.mark.parametrize("frames, hint", [(19, "17 or 21"), (20, "17 or 21"), (0, "1 or 5"),
                                          (2, "1 or 5")])
def test_bad_frames_name_the_nearest_valid_values(frames: int, hint: str) -> None:
    with pytest.raises(NodeError, match="frames must be 4n\\+1") as err:
        init_noise(32, 32, frames, 1, seed=0, grid=GRID)
    assert hint in str(err.value) and err.value.input == "frames"


@pytest.mark.parametrize("width, height, name, hint", [(840, 480, "width", "832 or 848"),
                                                       (832, 8, "height", "16 or 32"),
                                                       (832, 470, "height", "464 or 480")])
def test_bad_sizes_name_the_nearest_valid_values(width: int, height: int, name: str,
                                                 hint: str) -> None:
    with pytest.raises(NodeError, match=f"{name} must be a multiple of 16") as err:
        init_noise(width, height, 5, 1, seed=0, grid=GRID)
    assert hint in str(err.value) and err.value.input == name


def test_noise_init_node(tmp_path: Path) -> None:
    registry = NodeRegistry()
    registry.register_module(sampling_nodes)
    assert registry.get("NoiseInit") is NoiseInit
    ctx = ExecutionContext("n1", "NoiseInit", "run", torch.device("cpu"), tmp_path, tmp_path,
                           tmp_path, InterruptFlag(), lambda f, m, p: None)
    vae = SimpleNamespace(grid=GRID)
    out = NoiseInit.execute(ctx, vae=vae, width=32, height=16, frames=5, batch=2, seed=11, fps=8.0)
    expected = init_noise(32, 16, 5, 2, seed=11, grid=GRID, fps=8.0)
    assert torch.equal(out["latent"].samples, expected.samples)
    assert out["latent"].fps == 8.0
