"""Assemble a ready-to-run executor from settings: the one place that wires registry, cache,
device and model folders together (used by the CLI, the worker process and the batch runner)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.cache import ResultCache
from engine.config import Settings
from engine.executor import Executor
from engine.file_identity import use_store
from engine.registry import NodeRegistry, default_registry


def make_model_paths(settings: Settings) -> Any:
    try:
        from engine.models.paths import model_paths_for
    except ImportError:
        return None
    return model_paths_for(settings)  # model_roots and ComfyUI's extra_model_paths.yaml


def make_cache(settings: Settings, *, use_disk_cache: bool = True) -> ResultCache:
    disk_dir = Path(settings.cache_dir) / "results" if use_disk_cache else None
    return ResultCache(ram_budget_bytes=settings.ram_cache_bytes, disk_dir=disk_dir,
                       disk_budget_bytes=settings.disk_cache_bytes,
                       model_budget_bytes=settings.model_ram_bytes)


def make_executor(settings: Settings, *, use_disk_cache: bool = True,
                  registry: NodeRegistry | None = None, cache: ResultCache | None = None) -> Executor:
    """An executor for `settings`. The device is resolved when a node first needs it (so a
    fully cached run never imports torch); file hashes are remembered in the cache folder."""
    registry = registry or default_registry(settings.node_packs)
    if cache is None:
        cache = make_cache(settings, use_disk_cache=use_disk_cache)
    hasher = use_store(settings.cache_dir)
    from engine.memory.budget import env_overrides  # light: no torch

    # REELGRAPH_VRAM_BUDGET / REELGRAPH_RAM_BUDGET (e.g. "8G") override the settings for one run
    return Executor(registry, cache, model_paths=make_model_paths(settings),
                    settings={**settings.to_json(), **env_overrides()}, hasher=hasher)


def reconfigure(executor: Executor, old: Settings, new: Settings) -> Executor:
    """An executor for `new` settings that keeps what they did not change: the registry (and its
    imported node packs) when the packs are the same, the cache (and the models loaded in it)
    when the cache folder and budgets are the same."""
    registry = executor.registry if old.node_packs == new.node_packs else None
    same_cache = (old.cache_dir, old.ram_cache_bytes, old.model_ram_bytes, old.disk_cache_bytes) == (
        new.cache_dir, new.ram_cache_bytes, new.model_ram_bytes, new.disk_cache_bytes)
    return make_executor(new, registry=registry, cache=executor.cache if same_cache else None)
