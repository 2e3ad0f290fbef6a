"""Two-tier result cache keyed by node signatures (engine.signature).

- RAM tier: LRU with a byte budget; holds anything (models included).
- Disk tier: results made only of tensors, arrays and JSON values are written through to
  `<dir>/<key[:2]>/<key>.safetensors` (tensors as safetensors, the rest as JSON in the header
  metadata), so they survive a restart. Its own byte budget evicts the least recently used files.
  Only results worth it are spilled (>= 10 ms to compute or >= 64 KB); trivial values (an INT
  constant) stay in RAM only, where recomputing is cheaper than a file.

Invariants: a key always maps to the same value (signatures capture everything a result depends
on), so a stale entry is impossible by construction; a corrupt or unreadable disk entry is treated
as a miss and deleted, never raised.
"""

from __future__ import annotations

import json
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.values import NotSpillable, flatten, nbytes, unflatten

_META_KEY = "reelgraph"


@dataclass
class CacheStats:
    ram_hits: int = 0
    disk_hits: int = 0
    misses: int = 0
    ram_bytes: int = 0
    disk_bytes: int = 0
    disk_writes: int = 0


class RamTier:
    def __init__(self, budget_bytes: int):
        self.budget = budget_bytes
        self._items: OrderedDict[str, tuple[Any, int]] = OrderedDict()
        self.bytes = 0

    def get(self, key: str) -> Any | None:
        item = self._items.get(key)
        if item is None:
            return None
        self._items.move_to_end(key)
        return item[0]

    def put(self, key: str, value: Any, size: int) -> None:
        if key in self._items:
            self.bytes -= self._items.pop(key)[1]
        if size > self.budget:
            return  # bigger than the whole tier: keeping it would evict everything else
        self._items[key] = (value, size)
        self.bytes += size
        while self.bytes > self.budget and self._items:
            _, (_, old_size) = self._items.popitem(last=False)
            self.bytes -= old_size

    def clear(self) -> None:
        self._items.clear()
        self.bytes = 0

    def __contains__(self, key: str) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)


class DiskTier:
    def __init__(self, root: Path, budget_bytes: int):
        self.root = Path(root)
        self.budget = budget_bytes
        self.root.mkdir(parents=True, exist_ok=True)
        self._sizes: dict[str, int] = {}
        for path in self.root.glob("*/*.safetensors"):
            try:
                self._sizes[path.stem] = path.stat().st_size
            except OSError:
                pass
        self.bytes = sum(self._sizes.values())

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.safetensors"

    def get(self, key: str) -> Any | None:
        if key not in self._sizes:
            return None
        path = self._path(key)
        try:
            from safetensors.torch import load_file
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                meta = json.loads(f.metadata()[_META_KEY])
            tensors = load_file(str(path))
            value = unflatten(meta, tensors)
            os.utime(path)  # LRU by mtime
            return value
        except Exception:  # corrupt, truncated or removed behind our back: a miss, never an error
            self._drop(key)
            return None

    def put(self, key: str, value: Any) -> bool:
        tensors: dict = {}
        try:
            meta = flatten(value, "v", tensors)
        except NotSpillable:
            return False
        from safetensors.torch import save_file

        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}_{threading.get_ident()}")
        try:
            save_file(tensors, str(tmp), metadata={_META_KEY: json.dumps(meta)})
            os.replace(tmp, path)
        except Exception:
            tmp.unlink(missing_ok=True)
            return False
        size = path.stat().st_size
        self.bytes += size - self._sizes.get(key, 0)
        self._sizes[key] = size
        self._evict()
        return True

    def _evict(self) -> None:
        if self.bytes <= self.budget:
            return
        entries = []
        for key in self._sizes:
            try:
                entries.append((self._path(key).stat().st_mtime_ns, key))
            except OSError:
                entries.append((0, key))
        for _, key in sorted(entries):
            if self.bytes <= self.budget:
                break
            self._drop(key)

    def _drop(self, key: str) -> None:
        self.bytes -= self._sizes.pop(key, 0)
        try:
            self._path(key).unlink()
        except OSError:
            pass

    def clear(self) -> None:
        for key in list(self._sizes):
            self._drop(key)

    def __contains__(self, key: str) -> bool:
        return key in self._sizes


class ResultCache:
    """The executor's cache. `put` decides per result whether the disk tier is worth it."""

    def __init__(self, ram_budget_bytes: int = 4 << 30, disk_dir: Path | None = None,
                 disk_budget_bytes: int = 10 << 30, spill_min_seconds: float = 0.01,
                 spill_min_bytes: int = 64 << 10):
        self.ram = RamTier(ram_budget_bytes)
        self.disk = DiskTier(disk_dir, disk_budget_bytes) if disk_dir is not None else None
        self.spill_min_seconds = spill_min_seconds
        self.spill_min_bytes = spill_min_bytes
        self.stats = CacheStats()

    def get(self, key: str) -> Any | None:
        value = self.ram.get(key)
        if value is not None:
            self.stats.ram_hits += 1
            return value
        if self.disk is not None:
            value = self.disk.get(key)
            if value is not None:
                self.stats.disk_hits += 1
                self.ram.put(key, value, nbytes(value))
                return value
        self.stats.misses += 1
        return None

    def put(self, key: str, value: Any, seconds: float = 0.0) -> None:
        size = nbytes(value)
        self.ram.put(key, value, size)
        worth_spilling = seconds >= self.spill_min_seconds or size >= self.spill_min_bytes
        if self.disk is not None and worth_spilling and key not in self.disk:
            if self.disk.put(key, value):
                self.stats.disk_writes += 1

    def contains(self, key: str) -> bool:
        return key in self.ram or (self.disk is not None and key in self.disk)

    def clear(self) -> None:
        self.ram.clear()
        if self.disk is not None:
            self.disk.clear()

    def snapshot_stats(self) -> dict[str, int]:
        self.stats.ram_bytes = self.ram.bytes
        self.stats.disk_bytes = self.disk.bytes if self.disk else 0
        return dict(self.stats.__dict__)
