"""The model manager: the one place weights move between the CPU and an accelerator.

`engine.devices.on_device` delegates here. For every module it moves onto a GPU it remembers
where the weights came from, how big they are and whether a node is using them, so that:
- before a model goes onto the GPU, idle models there (kept by `offload=False`, e.g. a text
  encoder) are evicted, least recently used first, until the newcomer fits the VRAM budget;
- offloading does not copy the weights back: the device tensors are dropped and the parameters
  point at their CPU tensors again, which are the loader's mmap-backed tensors (so they drop back
  to the page cache) or, when the model fits the pinned-memory allowance, a pinned copy made on the
  first transfer (pinned host memory makes every later transfer faster and asynchronous);
- after an out-of-memory error everything idle can be released (`release_idle`).

Invariant: weights are read-only while on the device (inference only). A LoRA that patches
tensors in place restores them before leaving; anything else written to a device copy is lost
on offload, by design.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import weakref
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch

from engine.memory.budget import available_ram, current_settings, detect_budgets, gib
from engine.memory.sizes import module_bytes

_LOG = logging.getLogger("reelgraph.memory")
PIN_FRACTION = 0.25  # at most this share of the RAM budget is page-locked


@dataclass
class _Entry:
    module: "weakref.ref[torch.nn.Module]"
    size: int
    device: torch.device
    saved: list[tuple[dict, str, Any, torch.Tensor]]  # (container, key, tensor object, CPU data)
    in_use: int = 0
    tick: int = 0


@dataclass
class ModelManager:
    entries: dict[int, _Entry] = field(default_factory=dict)
    pinned_bytes: int = 0
    _lock: threading.RLock = field(default_factory=threading.RLock)
    _ticks: Any = field(default_factory=itertools.count)

    # ---- queries ---------------------------------------------------------------------------
    def resident_bytes(self, device: torch.device | None = None) -> int:
        return sum(e.size for e in self.entries.values() if device is None or e.device == device)

    def is_resident(self, module: torch.nn.Module) -> bool:
        return id(module) in self.entries

    # ---- moving ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def use(self, module: torch.nn.Module, device: torch.device,
            offload: bool = True) -> Iterator[torch.nn.Module]:
        """Hold `module` on `device` inside the block (see engine.devices.on_device)."""
        from engine.devices import module_device

        entry = self.entries.get(id(module))
        if entry is not None and entry.module() is not module:  # id reused by a new object
            self.entries.pop(id(module), None)
            entry = None
        if module_device(module) == device:
            if entry is not None:
                entry.in_use += 1
            try:
                yield module
            finally:
                if entry is not None:
                    entry.in_use -= 1
                    entry.tick = next(self._ticks)
            return
        own_to = type(module).to is not torch.nn.Module.to  # a module that moves itself
        if device.type == "cpu" or entry is not None or own_to:
            # a module the manager does not hold is going to the CPU, or one it holds elsewhere
            # is wanted on another device: plain move (rare; never the GPU hot path)
            if entry is not None:
                self._evict(entry)
            start = module_device(module)
            module.to(device)
            try:
                yield module
            finally:
                if offload:
                    module.to(start)
            return
        size = module_bytes(module)
        self.make_room(size, device)
        entry = self._onload(module, device, size)
        entry.in_use = 1
        try:
            yield module
        finally:
            entry.in_use -= 1
            entry.tick = next(self._ticks)
            if offload:
                self._evict(entry)

    def make_room(self, size: int, device: torch.device) -> None:
        """Evict idle models from `device` until `size` more bytes fit its budget."""
        if device.type != "cuda":
            return
        with self._lock:
            budget = detect_budgets(device).usable_vram + self.resident_bytes(device)
            idle = sorted((e for e in self.entries.values() if e.device == device and not e.in_use),
                          key=lambda e: e.tick)
            for entry in idle:
                if self.resident_bytes(device) + size <= budget and _free_bytes(device) >= size:
                    break
                module = entry.module()
                _LOG.info("offloading %s (%s) from %s to make room for %s", type(module).__name__,
                          gib(entry.size), device, gib(size))
                self._evict(entry)

    def release_idle(self) -> int:
        """Offload every model no node is using (after an OOM); returns the bytes freed."""
        freed = 0
        with self._lock:
            for entry in [e for e in self.entries.values() if not e.in_use]:
                freed += entry.size
                self._evict(entry)
        _empty_cache()
        return freed

    # ---- internals -------------------------------------------------------------------------
    def _onload(self, module: torch.nn.Module, device: torch.device, size: int) -> _Entry:
        original = _snapshot(module)
        already = device.type == "cuda" and all(d.is_pinned() for *_, d in original)
        pin = already or (device.type == "cuda" and self._may_pin(size))
        # the CPU home of each tensor from now on: a pinned copy when allowed, else the tensor as
        # loaded (mmap-backed when the file's dtype was kept)
        saved = [(c, k, o, d.pin_memory() if pin and not d.is_pinned() else d)
                 for c, k, o, d in original]
        try:
            for container, key, obj, data in saved:
                _replace(container, key, obj, data.to(device, non_blocking=pin, copy=True))
            if pin:
                torch.cuda.current_stream(device).synchronize()
        except BaseException:
            for container, key, obj, data in original:  # leave nothing half on the device
                _replace(container, key, obj, data)
            _empty_cache()
            raise
        if pin and not already:
            self.pinned_bytes += size
            weakref.finalize(module, self._unpin, size)
        entry = _Entry(weakref.ref(module), size, device, saved, tick=next(self._ticks))
        self.entries[id(module)] = entry
        return entry

    def _may_pin(self, size: int) -> bool:
        ram = current_settings().ram_budget_bytes or available_ram()
        return self.pinned_bytes + size <= ram * PIN_FRACTION

    def _unpin(self, size: int) -> None:
        self.pinned_bytes -= size

    def _evict(self, entry: _Entry) -> None:
        module = entry.module()
        self.entries.pop(id(module) if module is not None else -1, None)
        for key in [k for k, e in self.entries.items() if e is entry]:
            self.entries.pop(key)
        for container, key, obj, data in entry.saved:
            _replace(container, key, obj, data)
        entry.saved = []
        if entry.device.type == "cuda":
            _empty_cache()  # let the next model (or another process) use what this one held


def _snapshot(module: torch.nn.Module) -> list[tuple[dict, str, Any, torch.Tensor]]:
    """Every parameter and buffer slot of `module` with the CPU tensor it holds now."""
    out = []
    for sub in module.modules():
        for container in (sub._parameters, sub._buffers):
            for key, tensor in container.items():
                if tensor is not None:
                    data = tensor.data if isinstance(tensor, torch.nn.Parameter) else tensor
                    out.append((container, key, tensor, data))
    return out


def _replace(container: dict, key: str, obj: Any, data: torch.Tensor) -> None:
    if isinstance(obj, torch.nn.Parameter):
        obj.data = data
        container[key] = obj
    else:
        container[key] = data


def _free_bytes(device: torch.device) -> int:
    free, _ = torch.cuda.mem_get_info(device)
    return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))


def _empty_cache() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


MANAGER = ModelManager()
