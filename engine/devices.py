"""Devices and model offload (dtypes: engine.dtypes).

Invariants:
- `pick_device()` is CUDA when present, else Apple MPS, else the CPU; the engine never assumes a
  GPU. Noise and every value that crosses a link stay on the CPU (see engine.values); models move
  their inputs to their own device and return float32 CPU tensors.
- Models live on the CPU when not in use; `on_device(module, device)` moves one to the device for
  the duration of a call and back afterwards. It nests: an inner `on_device` for the device the
  module is already on does nothing, so a sampler can hold a model on the GPU for a whole loop while
  each `predict_velocity` call inside stays correct on its own.
- The moving is the model manager's (engine.memory.manager): it evicts idle models from the GPU
  when a newcomer would not fit the VRAM budget, and offloads without copying back (parameters
  return to their CPU tensors: pinned when they fit, else the loader's mmap-backed ones). With
  `offload=False` a model stays on the GPU after the block, until the manager needs the room.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch


def pick_device(prefer: str | torch.device | None = None) -> torch.device:
    """The device to run models on: `prefer` when given ("cuda", "cuda:1", "cpu", "mps"; "auto" or
    None choose), else CUDA, then MPS, then the CPU. Raises ValueError for an unavailable device."""
    if prefer is not None and str(prefer) != "auto":
        device = torch.device(prefer)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {prefer!r} was requested but CUDA is not available here; "
                             "use 'auto' or 'cpu'")
        if device.type == "mps" and not _mps_available():
            raise ValueError(f"device {prefer!r} was requested but MPS is not available here")
        return _normalise(device)
    if torch.cuda.is_available():
        return _normalise(torch.device("cuda"))
    if _mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def _normalise(device: torch.device) -> torch.device:
    """'cuda' -> 'cuda:N' (the current device), so devices compare equal to a parameter's."""
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def module_device(module: torch.nn.Module) -> torch.device:
    """The device of a module's first parameter (or buffer); CPU for an empty module."""
    for tensor in module.parameters():
        return tensor.device
    for tensor in module.buffers():
        return tensor.device
    return torch.device("cpu")


@contextlib.contextmanager
def on_device(module: torch.nn.Module, device: torch.device | str,
              offload: bool = True) -> Iterator[torch.nn.Module]:
    """Hold `module` on `device` inside the block; offload it to the CPU afterwards when
    `offload` (and it was moved here). Nested uses for the same device cost nothing."""
    from engine.memory.manager import MANAGER

    with MANAGER.use(module, _normalise(torch.device(device)), offload) as held:
        yield held


def offload(module: torch.nn.Module) -> None:
    """Send `module` back to the CPU now if the model manager holds it on an accelerator."""
    from engine.memory.manager import MANAGER

    entry = MANAGER.entries.get(id(module))
    if entry is not None and not entry.in_use:
        MANAGER._evict(entry)
