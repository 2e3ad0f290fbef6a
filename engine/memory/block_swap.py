"""Block swap: run a transformer whose blocks do not all fit on the GPU.

The first `resident` blocks and everything outside the block list (patch and text embeddings,
the output head: small) go onto the device for the whole sampling loop; the remaining blocks stay
in CPU memory and are streamed in one at a time by diffusers' group offloading
(`diffusers.hooks.apply_group_offloading`, block level, one block per group), each block's
transfer issued on a side CUDA stream while the previous block computes (the prefetch chain is set
once here, since Wan runs its blocks in order, instead of being discovered on a first pass), and
dropped again after its forward. On the CPU the same code path runs with onload and offload
devices both the CPU: every hook fires, nothing moves, and the outputs are identical.

Pinned host memory (needed for asynchronous copies) is used when the streamed blocks fit the
pinning allowance; otherwise diffusers pins each block just for its transfer (low_cpu_mem_usage).
Leaving the context removes every hook and points all parameters back at their CPU tensors.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Iterator

import torch

from engine.memory.manager import _empty_cache, _replace, _snapshot

_LOG = logging.getLogger("reelgraph.memory")
_HOOK = "group_offloading"  # diffusers.hooks.group_offloading._GROUP_OFFLOADING


@contextlib.contextmanager
def block_swap(module: torch.nn.Module, device: torch.device, swapped: int, *,
               blocks_attr: str = "blocks", pin: bool = True) -> Iterator[torch.nn.Module]:
    """Hold `module` on `device` with its last `swapped` blocks streamed from the CPU."""
    from diffusers.hooks import HookRegistry, apply_group_offloading

    blocks: torch.nn.ModuleList = getattr(module, blocks_attr)
    n = len(blocks)
    swapped = max(0, min(int(swapped), n))
    streamed = list(blocks)[n - swapped:]
    cpu = torch.device("cpu")
    cuda = device.type == "cuda"
    original = _snapshot(module)
    streamed_ids = {id(t) for b in streamed for t in (*b.parameters(), *b.buffers())}
    holder = torch.nn.Module()  # applies group offloading to the streamed blocks only
    holder.blocks = torch.nn.ModuleList(streamed)
    try:
        # everything not streamed goes onto the device once
        for container, key, obj, data in original:
            if id(obj) not in streamed_ids:
                _replace(container, key, obj, data.to(device))
        if streamed:
            apply_group_offloading(holder, onload_device=device, offload_device=cpu,
                                   offload_type="block_level", num_blocks_per_group=1,
                                   use_stream=cuda, non_blocking=cuda, low_cpu_mem_usage=not pin)
            hooks = [HookRegistry.check_if_exists_or_initialize(b).get_hook(_HOOK) for b in streamed]
            for current, following in zip(hooks, hooks[1:]):  # prefetch block i+1 during block i
                if cuda:
                    current.next_group = following.group
                    following.group.onload_self = False
        yield module
    finally:
        for b in streamed:
            HookRegistry.check_if_exists_or_initialize(b).remove_hook(_HOOK, recurse=False)
        for container, key, obj, data in original:
            _replace(container, key, obj, data)
        if cuda:
            _empty_cache()
