"""The executor's result cache, keyed by node signatures (engine.signature).

- RAM tier (engine.cache.ram): results under an LRU byte budget; loaded models under their own
  budget with run-aware eviction.
- Disk tier (engine.cache.disk): results made of tensors, arrays and JSON values are written
  through to one folder shared by every process, with a checksum verified on every read, so they
  survive a restart and a damaged file is recomputed, never served. Only results worth it are
  spilled (>= 10 ms to compute or >= 64 KB); trivial values (an INT constant) stay in RAM, where
  recomputing is cheaper than a file.
- `NullCache` is the same interface holding nothing: what a run with the cache turned off uses.

Invariants: a key always maps to the same value (signatures capture everything a result depends
on, including the compute environment), so a stale entry is impossible by construction; a
corrupt, unreadable or unwritable disk entry is a miss with a warning, never an error; when the
cache folder cannot be used at all the cache works from RAM and says why (`disk_error`).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from engine.cache.ram import RamTier

Warn = Callable[[str], None]


@dataclass
class CacheStats:
    ram_hits: int = 0
    disk_hits: int = 0
    misses: int = 0
    corrupt: int = 0
    ram_bytes: int = 0
    model_bytes: int = 0
    disk_bytes: int = 0
    disk_writes: int = 0


class ResultCache:
    def __init__(self, ram_budget_bytes: int = 4 << 30, disk_dir: Path | None = None,
                 disk_budget_bytes: int = 10 << 30, spill_min_seconds: float = 0.01,
                 spill_min_bytes: int = 64 << 10, model_budget_bytes: int | None = None):
        self.ram = RamTier(ram_budget_bytes, model_budget_bytes)
        self.disk: Any = None
        self.disk_error = ""
        if disk_dir is not None:
            from engine.cache.disk import DiskTier

            try:
                self.disk = DiskTier(Path(disk_dir), disk_budget_bytes)
            except (OSError, sqlite3.Error) as exc:
                self.disk_error = (f"the disk cache at {disk_dir} cannot be used ({exc}); results "
                                   "are cached in RAM only")
        self.spill_min_seconds = spill_min_seconds
        self.spill_min_bytes = spill_min_bytes
        self.stats = CacheStats()

    def begin_run(self, reads: Iterable[str] = ()) -> None:
        """Mark the start of a run: models it uses — from now on, and the cached ones it will
        read (`reads`) — are protected from each other."""
        self.ram.begin_run(reads)

    def present(self, keys: Iterable[str]) -> set[str]:
        """Which keys have an entry in either tier (for planning; nothing is read or verified)."""
        keys = list(keys)
        found = {k for k in keys if k in self.ram}
        if self.disk is not None and len(found) < len(keys):
            found |= self.disk.present(k for k in keys if k not in found)
        return found

    def get(self, key: str, warn: Warn | None = None) -> Any | None:
        value = self.ram.get(key)
        if value is not None:
            self.stats.ram_hits += 1
            return value
        if self.disk is not None:
            value, problem = self.disk.get(key)
            if value is not None:
                self.stats.disk_hits += 1
                self.ram.put(key, value, _nbytes(value))
                return value
            if problem:
                self.stats.corrupt += 1
                if warn is not None:
                    warn(f"{problem}; recomputing")
        self.stats.misses += 1
        return None

    def put(self, key: str, value: Any, seconds: float = 0.0, warn: Warn | None = None) -> None:
        size = _nbytes(value)
        models = _models_in(value)
        self.ram.put(key, value, size, is_model=bool(models), label=", ".join(models), warn=warn)
        worth_spilling = seconds >= self.spill_min_seconds or size >= self.spill_min_bytes
        if self.disk is not None and worth_spilling and not models:
            written, problem = self.disk.put(key, value)
            if written:
                self.stats.disk_writes += 1
            elif problem and warn is not None:
                warn(problem)

    def contains(self, key: str) -> bool:
        return bool(self.present([key]))

    def discard(self, key: str) -> None:
        self.ram.discard(key)
        if self.disk is not None:
            self.disk.drop(key)

    def clear(self) -> None:
        self.ram.clear()
        if self.disk is not None:
            self.disk.clear()

    def snapshot_stats(self) -> dict[str, int]:
        self.stats.ram_bytes = self.ram.bytes
        self.stats.model_bytes = self.ram.model_bytes
        self.stats.disk_bytes = self.disk.bytes if self.disk else 0
        return dict(self.stats.__dict__)


class NullCache(ResultCache):
    """Holds nothing: every lookup misses and every put is dropped (`--no-cache`)."""

    def __init__(self) -> None:
        super().__init__(ram_budget_bytes=0)

    def present(self, keys: Iterable[str]) -> set[str]:
        return set()

    def get(self, key: str, warn: Warn | None = None) -> Any | None:
        return None

    def discard(self, key: str) -> None:
        pass

    def put(self, key: str, value: Any, seconds: float = 0.0, warn: Warn | None = None) -> None:
        pass


def _nbytes(value: Any) -> int:
    from engine.values import nbytes

    return nbytes(value)


def _models_in(entry: Any) -> list[str]:
    """Names of the loaded models in a cached node result ({"outputs": {...}, "files": [...]}):
    anything carrying a ModelInfo-like `info` (family + path)."""
    outputs = entry.get("outputs") if isinstance(entry, dict) else None
    if not isinstance(outputs, dict):
        return []
    names = []
    for value in outputs.values():
        info = getattr(value, "info", None)
        if info is not None and hasattr(info, "family") and hasattr(info, "path"):
            names.append(Path(str(info.path)).name)
    return names


__all__ = ["CacheStats", "NullCache", "ResultCache"]
