"""The in-memory cache tier: results under one byte budget, loaded models under another.

Results (latents, videos, captions) are cheap to keep on disk, so their tier is a plain LRU that
never keeps one value bigger than its whole budget.

Models are expensive to reload (tens of seconds for a 14B DiT) and are what users notice, so they
are kept apart with their own budget (by default most of physical RAM) and a different rule:
- a model used by the current run is never evicted for another one of the same run (evicting it
  frees nothing — the run still holds it — and would make every run reload every model in turn);
- otherwise models are evicted least recently used first, the biggest first among equals, and
  every eviction is reported so the log says why the next run reloads it;
- a model bigger than the whole budget is still kept while nothing else needs the room.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Iterable

Warn = Callable[[str], None]


@dataclass
class _Item:
    value: Any
    size: int
    generation: int  # the run that last used it


class RamTier:
    def __init__(self, budget_bytes: int, model_budget_bytes: int | None = None):
        self.budget = int(budget_bytes)
        self.model_budget = int(model_budget_bytes if model_budget_bytes is not None else budget_bytes)
        self._results: OrderedDict[str, _Item] = OrderedDict()
        self._models: dict[str, _Item] = {}
        self.bytes = 0
        self.model_bytes = 0
        self.generation = 0

    def begin_run(self, reads: Iterable[str] = ()) -> None:
        self.generation += 1
        for key in reads:  # in use by this run already, though read later
            item = self._models.get(key)
            if item is not None:
                item.generation = self.generation

    def get(self, key: str) -> Any | None:
        item = self._results.get(key)
        if item is not None:
            self._results.move_to_end(key)
        else:
            item = self._models.get(key)
            if item is None:
                return None
        item.generation = self.generation
        return item.value

    def put(self, key: str, value: Any, size: int, is_model: bool = False,
            label: str = "", warn: Warn | None = None) -> None:
        self.discard(key)
        if is_model:
            self._put_model(key, _Item(value, size, self.generation), label, warn)
            return
        if size > self.budget:
            return  # bigger than the whole tier: keeping it would evict everything else
        self._results[key] = _Item(value, size, self.generation)
        self.bytes += size
        while self.bytes > self.budget and self._results:
            _, old = self._results.popitem(last=False)
            self.bytes -= old.size

    def _put_model(self, key: str, item: _Item, label: str, warn: Warn | None) -> None:
        needed = self.model_bytes + item.size - self.model_budget
        if needed > 0:
            # oldest first, biggest first among models last used by the same run
            candidates = sorted((k for k, it in self._models.items() if it.generation < self.generation),
                                key=lambda k: (self._models[k].generation, -self._models[k].size))
            for old_key in candidates:
                if needed <= 0:
                    break
                old = self._models.pop(old_key)
                self.model_bytes -= old.size
                needed -= old.size
                if warn is not None:
                    warn(f"unloaded a model ({_gib(old.size)}) from RAM to make room for "
                         f"{label or 'a model'} ({_gib(item.size)}); model RAM budget "
                         f"{_gib(self.model_budget)} — the next run that needs it reloads it")
            if needed > 0 and warn is not None:
                warn(f"{label or 'a model'} ({_gib(item.size)}) does not fit the model RAM budget "
                     f"({_gib(self.model_budget)}) beside the models this run uses; kept anyway "
                     "(raise model_ram_bytes in the settings if this machine has the memory)")
        self._models[key] = item
        self.model_bytes += item.size

    def discard(self, key: str) -> None:
        item = self._results.pop(key, None)
        if item is not None:
            self.bytes -= item.size
        item = self._models.pop(key, None)
        if item is not None:
            self.model_bytes -= item.size

    def clear(self) -> None:
        self._results.clear()
        self._models.clear()
        self.bytes = self.model_bytes = 0

    def __contains__(self, key: str) -> bool:
        return key in self._results or key in self._models

    def __len__(self) -> int:
        return len(self._results) + len(self._models)


def _gib(n: int) -> str:
    return f"{n / (1 << 30):.2f} GiB"
