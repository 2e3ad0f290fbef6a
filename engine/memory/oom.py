"""Out-of-memory errors raised inside a node: recognise them, say what to change, recover.

Recognised: torch.OutOfMemoryError (torch.cuda.OutOfMemoryError is the same class), and the CPU
allocator's RuntimeError "DefaultCPUAllocator: can't allocate memory", plus the MPS/HIP wording
"out of memory". Recovery offloads every model no node is using from the GPU and returns cached
blocks to the driver; models in the RAM tier stay loaded, so the next run does not reload them.
This module imports no torch: the executor calls it on every failure.
"""

from __future__ import annotations

import gc
import sys

_CPU_MARKERS = ("DefaultCPUAllocator: can't allocate memory", "can't allocate memory")


def is_out_of_memory(exc: BaseException) -> bool:
    torch = sys.modules.get("torch")
    oom_type = getattr(torch, "OutOfMemoryError", None) if torch is not None else None
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    if type(exc).__name__ == "OutOfMemoryError":
        return True
    text = str(exc)
    return isinstance(exc, (RuntimeError, MemoryError)) and (
        isinstance(exc, MemoryError) or any(m in text for m in _CPU_MARKERS)
        or "out of memory" in text.lower())


def out_of_memory_message(exc: BaseException, node_type: str) -> str:
    """A node error message naming what ran out and what to change."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    cpu = any(m in str(exc) for m in _CPU_MARKERS) or isinstance(exc, MemoryError)
    where = "CPU RAM" if cpu else "GPU memory"
    fixes = ["load the DiT (and the text encoder) with dtype fp8 to halve their weights",
             "turn on block swap or lower the VRAM budget (settings: block_swap_blocks, "
             "vram_budget_bytes) so fewer transformer blocks stay on the GPU",
             "decode with VAE tiling (VAEDecode tile_size 0 = automatic, or e.g. 256)",
             "use a smaller width/height, fewer frames or batch 1"]
    if cpu:
        fixes.insert(0, "close other programs or lower ram_budget_bytes / model_ram_bytes so "
                        "fewer models stay loaded")
    if node_type in ("VAEDecode", "VAEEncode"):
        fixes.insert(0, fixes.pop(-2))  # tiling first for the VAE
    return (f"out of {where} in {node_type} ({text[:200]}). To fit: " + "; ".join(fixes)
            + ". The worker is still usable: models stay loaded and the next run can start.")


def recover() -> None:
    """Free what a failed node left behind (device copies of idle models, cached blocks)."""
    gc.collect()
    if "torch" not in sys.modules:
        return
    from engine.memory.manager import MANAGER

    MANAGER.release_idle()
