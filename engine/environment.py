"""What computes results on this machine: the kind of device and the versions of the libraries that
compute them. It is part of every cache key, so a result made by another torch, diffusers or
transformers, by another Reelgraph, or on another kind of device (whose dtype `auto` resolves
differently) is never served here.

Describing it must not import torch: a fully cached re-run and `validate` should start in a
fraction of a second, and importing torch alone takes 1.7 s. Versions come from package metadata.
The device kind comes from the setting when one is given; otherwise a torch build without any GPU
backend (a `+cpu` wheel, or `cuda`/`hip`/`xpu` all None in torch/version.py) means the CPU, and
only a GPU-capable build on a machine with a GPU device node makes us ask torch itself.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LIBRARIES = ("torch", "diffusers", "transformers", "safetensors", "av", "opencv-python-headless")


@dataclass(frozen=True)
class ComputeEnvironment:
    device: str  # "cpu", "cuda", "mps", ...
    versions: tuple[tuple[str, str], ...]  # (distribution, version), "" when not installed
    # on a GPU, its model and the half precision `auto` picks there (bf16 or fp16): results of
    # one are not served for the other
    accelerator: str = ""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"device": self.device, "versions": dict(self.versions)}
        if self.accelerator:
            out["accelerator"] = self.accelerator
        return out


@functools.lru_cache(maxsize=None)
def describe(device_setting: str = "") -> ComputeEnvironment:
    """The environment for a `device` setting ("" or "auto" = automatic)."""
    from engine import __version__

    versions = [("reelgraph", __version__)] + [(name, library_version(name)) for name in LIBRARIES]
    kind = device_kind(device_setting)
    return ComputeEnvironment(kind, tuple(versions), _accelerator(kind, device_setting))


def _accelerator(kind: str, setting: str) -> str:
    if kind != "cuda":
        return ""
    try:
        import torch

        index = int(setting.split(":", 1)[1]) if ":" in setting else torch.cuda.current_device()
        half = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return f"{torch.cuda.get_device_name(index)}, {half}"
    except Exception:  # no usable CUDA (a setting naming a missing GPU fails later, clearly)
        return "unavailable"


def library_version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return ""


def device_kind(setting: str = "") -> str:
    """The device type models will run on, without importing torch when it can be known."""
    setting = (setting or "").strip()
    if setting and setting != "auto":
        return setting.split(":", 1)[0]
    if "torch" not in sys.modules and not _gpu_possible():
        return "cpu"
    from engine.devices import pick_device

    return pick_device().type


def _gpu_possible() -> bool:
    """False when this torch build has no GPU backend, or no GPU device is visible."""
    if sys.platform == "darwin":
        return True  # MPS: ask torch
    backends = _torch_gpu_backends()
    if not backends:
        return False
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return False
    return any(Path(p).exists() for p in ("/dev/nvidia0", "/dev/nvidiactl", "/dev/kfd", "/dev/dri"))


def _torch_gpu_backends() -> list[str]:
    """GPU backends compiled into the installed torch, read from torch/version.py as text."""
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return []
    try:
        text = (Path(list(spec.submodule_search_locations)[0]) / "version.py").read_text()
    except OSError:
        return ["unknown"]  # cannot tell: let torch decide
    found = []
    for name in ("cuda", "hip", "xpu"):
        match = re.search(rf"^{name}\s*(?::[^=]*)?=\s*(.+)$", text, re.MULTILINE)
        if match and match.group(1).strip() != "None":
            found.append(name)
    return found
