"""Memory budgets: how much VRAM and RAM the engine may use, auto-detected or set by the user.

Auto-detection: VRAM is what the device has free plus what this process already holds in torch's
caching allocator (torch.cuda.mem_get_info and memory_reserved), so another program on the same
card shrinks the budget; RAM is /proc/meminfo's MemAvailable (what can be had without swapping),
or half the physical memory where that file does not exist.

Settings (engine.config): vram_budget_bytes / ram_budget_bytes (0 = automatic), block_swap_blocks
(-1 = automatic, 0 = never, N = swap N blocks), batch_cfg ("auto" / "on" / "off"), compile_blocks.
A node enters `settings_scope(ctx.settings)` so that code deep in the models (WanDiT.loaded, the
VAE decode) sees the run's settings without threading them through every call; a run may override
them per run by passing its own dict.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import sys
from dataclasses import dataclass, fields, replace
from typing import Any, Iterator, Mapping

GIB = 1 << 30
MIB = 1 << 20
BATCH_CFG_CHOICES = ("auto", "on", "off")


@dataclass(frozen=True)
class MemorySettings:
    vram_budget_bytes: int = 0  # 0: detect
    ram_budget_bytes: int = 0  # 0: detect
    block_swap_blocks: int = -1  # -1: planner decides, 0: never, N: swap N blocks
    batch_cfg: str = "auto"  # "auto": planner decides; "on"/"off" force
    compile_blocks: bool = False  # torch.compile the DiT's transformer blocks

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None) -> "MemorySettings":
        """The memory fields of a settings dict (engine.config has validated them); others ignored."""
        if not data:
            return cls()
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


_CURRENT: contextvars.ContextVar[MemorySettings] = contextvars.ContextVar(
    "reelgraph_memory_settings", default=MemorySettings())


def current_settings() -> MemorySettings:
    return _CURRENT.get()


@contextlib.contextmanager
def settings_scope(settings: Mapping[str, Any] | MemorySettings | None,
                   **overrides: Any) -> Iterator[MemorySettings]:
    """Make `settings` (a settings dict or MemorySettings, plus keyword overrides) the memory
    settings of the code inside the block."""
    value = settings if isinstance(settings, MemorySettings) else MemorySettings.from_mapping(settings)
    if overrides:
        value = replace(value, **overrides)
    token = _CURRENT.set(value)
    try:
        yield value
    finally:
        _CURRENT.reset(token)


from engine.memory.planner import Budgets, default_reserve  # noqa: E402  (one definition)


def available_ram() -> int:
    """MemAvailable from /proc/meminfo, else half the physical memory."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    from engine.config import physical_memory

    return physical_memory() // 2


def detect_vram(device: Any = None) -> int:
    """Bytes of the CUDA device this process may use now (0 without CUDA)."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return 0
    index = getattr(device, "index", None)
    dev = torch.device("cuda", index if index is not None else torch.cuda.current_device())
    free, total = torch.cuda.mem_get_info(dev)
    ours = torch.cuda.memory_reserved(dev)  # cached by our allocator: ours to reuse
    return int(min(total, free + ours))


def detect_budgets(device: Any = None, settings: MemorySettings | None = None) -> Budgets:
    """Budgets for `device` (a torch.device or its name) under `settings` (default: current)."""
    settings = settings or current_settings()
    kind = getattr(device, "type", None) or str(device or "cpu").split(":")[0]
    vram = 0
    if kind == "cuda":
        vram = settings.vram_budget_bytes or detect_vram(device)
        if settings.vram_budget_bytes:
            vram = min(vram, detect_vram(device) or vram)  # a budget above the card is the card
    ram = settings.ram_budget_bytes or available_ram()
    return Budgets(vram=int(vram), ram=int(ram), device=kind)


def gib(n: float) -> str:
    return f"{n / GIB:.2f} GiB"


def env_overrides(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """REELGRAPH_VRAM_BUDGET / REELGRAPH_RAM_BUDGET (bytes, or with a G/M suffix) for one run."""
    env = os.environ if env is None else env
    out: dict[str, Any] = {}
    for var, key in (("REELGRAPH_VRAM_BUDGET", "vram_budget_bytes"),
                     ("REELGRAPH_RAM_BUDGET", "ram_budget_bytes")):
        raw = (env.get(var) or "").strip().upper()
        if raw:
            scale = {"G": GIB, "M": MIB}.get(raw[-1], 1)
            try:
                out[key] = int(float(raw.rstrip("GM")) * scale)
            except ValueError:
                continue
    return out


def text_encoder_device(weight_bytes: int, device: Any, settings: MemorySettings | None = None
                        ) -> tuple[str, str]:
    """Where a text encoder of `weight_bytes` should encode when its loader says "auto" and the run
    computes on `device`: ("cuda" or "cpu", why). On a small card a T5 that does not fit beside
    the working memory encodes on the CPU, as ComfyUI users set by hand."""
    from engine.memory.planner import Footprint, plan_text_encoder

    budgets = detect_budgets(device, settings)
    plan = plan_text_encoder(Footprint("text encoder", "text_encoder", int(weight_bytes)), budgets)
    return plan.device, plan.note
