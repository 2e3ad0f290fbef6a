"""Assemble a ready-to-run executor from settings: the one place that wires registry, cache,
device and model folders together (used by the CLI, the worker process and the batch runner)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.cache import ResultCache
from engine.config import Settings
from engine.executor import Executor
from engine.registry import default_registry


def make_model_paths(settings: Settings) -> Any:
    try:
        from engine.models.paths import default_model_paths
    except ImportError:
        return None
    return default_model_paths(extra_roots=[Path(p) for p in settings.model_roots])


def make_executor(settings: Settings, *, use_disk_cache: bool = True) -> Executor:
    registry = default_registry(settings.node_packs)
    disk_dir = Path(settings.cache_dir) / "results" if use_disk_cache else None
    cache = ResultCache(ram_budget_bytes=settings.ram_cache_bytes, disk_dir=disk_dir,
                        disk_budget_bytes=settings.disk_cache_bytes)
    device = None
    if settings.device:
        import torch

        device = torch.device(settings.device)
    return Executor(registry, cache, device=device, model_paths=make_model_paths(settings),
                    settings=settings.to_json())
