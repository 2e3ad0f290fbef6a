"""Memory and speed: the residency planner's decisions on simulated GPU budgets (real Wan sizes,
computed on the meta device), block swap and batched cfg on the CPU against the plain path, the
model manager's copy-free offload, automatic VAE tiling, settings, and out-of-memory errors inside
a node (a clear node error; the next run works)."""

from __future__ import annotations

import pytest
import torch

from engine.memory import settings_scope
from engine.memory.planner import (GIB, Budgets, Job, dit_activation_bytes, plan_dit, plan_run,
                                   plan_text_encoder, plan_vae_tile, vae_decode_bytes)
from engine.memory.sizes import (module_bytes, umt5_xxl_footprint, wan_dit_footprint,
                                 wan_param_count, wan_vae_footprint)

GB = 10**9
WAN_480P = Job(width=832, height=480, frames=81, cfg=5.0)


# ---- sizes ------------------------------------------------------------------------------------

def test_wan_sizes_come_from_the_real_configs_without_allocating():
    assert wan_param_count("wan2.1-t2v-1.3b") == pytest.approx(1.419e9, rel=0.01)
    assert wan_param_count("wan2.1-t2v-14b") == pytest.approx(14.29e9, rel=0.01)
    bf16 = wan_dit_footprint("wan2.1-t2v-14b", "bf16")
    fp8 = wan_dit_footprint("wan2.1-t2v-14b", "fp8")
    assert bf16.weight_bytes == pytest.approx(2 * 14.29e9, rel=0.01)
    assert fp8.weight_bytes < 0.52 * bf16.weight_bytes  # Linear weights in 8 bits, norms not
    assert bf16.blocks == 40 and bf16.block_bytes * 40 < bf16.weight_bytes
    assert umt5_xxl_footprint("bf16").weight_bytes == pytest.approx(11.36e9, rel=0.02)
    assert wan_vae_footprint("fp32").weight_bytes < 0.6 * GIB


def test_module_bytes_counts_storage_dtypes():
    lin = torch.nn.Linear(16, 8)
    assert module_bytes(lin) == (16 * 8 + 8) * 4
    lin.half()
    assert module_bytes(lin) == (16 * 8 + 8) * 2
    fp8 = torch.nn.Module()
    fp8.weight = torch.nn.Parameter(torch.zeros(8, 16).to(torch.float8_e4m3fn), requires_grad=False)
    assert module_bytes(fp8) == 8 * 16


# ---- the planner on simulated budgets ---------------------------------------------------------

def test_8gb_runs_wan21_1_3b_at_832x480x81_whole_and_puts_a_bf16_t5_on_the_cpu():
    budgets = Budgets(vram=8 * GB, ram=32 * GB)
    dit = wan_dit_footprint("wan2.1-t2v-1.3b", "bf16")
    plan = plan_run(WAN_480P, dit, budgets, text_encoder=umt5_xxl_footprint("bf16"),
                    vae=wan_vae_footprint("bf16"))
    assert plan.fits
    d = plan.dit["sample"]
    assert not d.block_swap and d.resident_blocks == 30 and d.peak_bytes <= budgets.usable_vram
    assert plan.text_encoder.device == "cpu"  # 11 GB of bf16 T5 cannot go onto an 8 GB card
    assert plan.resident_during("sample") == (dit.name,)
    fp8_t5 = plan_text_encoder(umt5_xxl_footprint("fp8"), budgets, d.peak_bytes)
    assert fp8_t5.device == "cuda" and not fp8_t5.resident_during_sampling


def test_16gb_runs_a_14b_dit_in_fp8_with_block_swap():
    budgets = Budgets(vram=16 * GB, ram=64 * GB)
    fp8 = plan_dit(wan_dit_footprint("wan2.1-t2v-14b", "fp8"), WAN_480P, budgets)
    assert fp8.fits and fp8.block_swap and 0 < fp8.swapped_blocks < 40
    assert fp8.peak_bytes <= budgets.usable_vram
    bf16 = plan_dit(wan_dit_footprint("wan2.1-t2v-14b", "bf16"), WAN_480P, budgets)
    assert bf16.swapped_blocks > fp8.swapped_blocks  # fp8 keeps more blocks resident
    off = plan_dit(wan_dit_footprint("wan2.1-t2v-14b", "fp8"), WAN_480P, budgets, swap_blocks=0)
    assert not off.fits and "block swap is off" in off.note


def test_24gb_runs_a14b_two_fp8_experts_with_loras_one_expert_at_a_time():
    budgets = Budgets(vram=24 * GB, ram=64 * GB)
    high = wan_dit_footprint("wan2.2-a14b-expert", "fp8", label="high")
    low = wan_dit_footprint("wan2.2-a14b-expert", "fp8", label="low")
    plan = plan_run(WAN_480P, high, budgets, low_noise=low, lora_bytes=600 << 20,
                    text_encoder=umt5_xxl_footprint("fp8"), vae=wan_vae_footprint("bf16"))
    assert plan.fits
    assert plan.resident_during("high noise") == ("high",)
    assert plan.resident_during("low noise") == ("low",)
    for stage in plan.stages:  # never two experts resident
        assert len({"high", "low"} & set(stage.on_gpu)) <= 1
    for d in plan.dit.values():
        assert d.peak_bytes <= budgets.usable_vram


def test_cfg_is_batched_when_memory_allows_and_forced_choices_win():
    big = Budgets(vram=80 * GB, ram=256 * GB)
    dit = wan_dit_footprint("wan2.1-t2v-14b", "bf16")
    assert plan_dit(dit, WAN_480P, big).batch_cfg
    assert not plan_dit(dit, WAN_480P, big, batch_cfg=False).batch_cfg
    unguided = Job(cfg=1.0)
    assert not plan_dit(dit, unguided, big).batch_cfg
    small = Budgets(vram=8 * GB, ram=32 * GB)  # 1.3B fits whole only with one pass at a time
    assert not plan_dit(wan_dit_footprint("wan2.1-t2v-1.3b"), WAN_480P, small).batch_cfg
    # forcing a swap count is honoured while it fits
    forced = plan_dit(dit, WAN_480P, big, swap_blocks=5)
    assert forced.swapped_blocks == 5 and forced.fits


def test_activation_estimate_scales_with_tokens_and_batch():
    dit = wan_dit_footprint("wan2.1-t2v-1.3b")
    one = dit_activation_bytes(dit, WAN_480P.tokens, 1)
    assert WAN_480P.tokens == 21 * 30 * 52
    assert 1.5 * GIB < one < 4 * GIB
    assert dit_activation_bytes(dit, WAN_480P.tokens, 2) == pytest.approx(2 * one, rel=0.01)


def test_vae_tiles_only_when_whole_frames_do_not_fit():
    # measured on main: 832x480 fp32 needs 8.1 GiB for one chunk; tiled 256 px about 1.4 GiB
    assert vae_decode_bytes(480, 832, compute_bytes=4) == pytest.approx(8.1 * GIB, rel=0.03)
    assert plan_vae_tile(480, 832, 16 * GIB) == 0
    tile = plan_vae_tile(480, 832, 4 * GIB, frames=17)
    assert tile in (384, 256) and vae_decode_bytes(480, 832, tile=tile, frames=17) <= 4 * GIB
    assert plan_vae_tile(480, 832, 1 * GIB, frames=17) <= 256


# ---- on the CPU: block swap, batched cfg, the manager -----------------------------------------

@pytest.fixture(scope="module")
def tiny_wan(tmp_path_factory):
    from engine.models.wan_dit import load_dit
    from tests.tiny_models import write_dit

    path = write_dit(tmp_path_factory.mktemp("mem") / "dit.safetensors")
    return load_dit(path, device="cpu", dtype="fp32", compute_hash=False)


def _inputs():
    from engine.models.interfaces import LatentGrid
    from engine.noise import init_noise
    from engine.values import Conditioning

    g = torch.Generator().manual_seed(0)
    cond = Conditioning(embeds=torch.randn(1, 8, 32, generator=g),
                        mask=torch.tensor([[1, 1, 1, 1, 1, 1, 0, 0.0]]),
                        negative_embeds=torch.randn(1, 8, 32, generator=g),
                        negative_mask=torch.ones(1, 8))
    return init_noise(32, 32, 5, 2, 7, LatentGrid(16, 4, 4, 2)), cond


def test_batched_cfg_matches_sequential_in_fp32_with_one_call_per_step(tiny_wan, monkeypatch):
    from engine.sampling import sample

    latent, cond = _inputs()
    calls = []
    real = tiny_wan.predict_velocity
    monkeypatch.setattr(tiny_wan, "predict_velocity",
                        lambda x, *a, **k: calls.append(x.shape[0]) or real(x, *a, **k))
    seq = sample(tiny_wan, latent, cond, steps=3, cfg=5.0, shift=3.0, batch_cfg=False).samples
    assert calls == [2] * 6
    calls.clear()
    bat = sample(tiny_wan, latent, cond, steps=3, cfg=5.0, shift=3.0, batch_cfg=True).samples
    assert calls == [4] * 3  # cond and uncond of both items in one call
    torch.testing.assert_close(bat, seq, rtol=1e-4, atol=1e-5)
    calls.clear()
    sample(tiny_wan, latent, cond, steps=2, cfg=1.0, shift=3.0, batch_cfg=True)
    assert calls == [2, 2]  # cfg 1: one call of the plain batch


def test_block_swap_on_cpu_runs_the_hooks_and_gives_identical_outputs(tiny_wan, monkeypatch):
    from diffusers.hooks import HookRegistry

    from engine.sampling import sample

    latent, cond = _inputs()
    plain = sample(tiny_wan, latent, cond, steps=2, cfg=5.0, shift=3.0, batch_cfg=False).samples
    seen = []
    real = tiny_wan.predict_velocity

    def spy(*a, **k):
        block = tiny_wan.module.blocks[1]
        seen.append(HookRegistry.check_if_exists_or_initialize(block).get_hook("group_offloading"))
        return real(*a, **k)

    monkeypatch.setattr(tiny_wan, "predict_velocity", spy)
    with settings_scope({"block_swap_blocks": 1}):
        swapped = sample(tiny_wan, latent, cond, steps=2, cfg=5.0, shift=3.0,
                         batch_cfg=False).samples
    assert tiny_wan.memory_plan.swapped_blocks == 1 and tiny_wan.memory_plan.resident_blocks == 1
    assert seen and all(h is not None for h in seen)  # the streamed block carried the hook
    assert torch.equal(swapped, plain)
    after = HookRegistry.check_if_exists_or_initialize(tiny_wan.module.blocks[1])
    assert after.get_hook("group_offloading") is None  # removed on leaving loaded()


def test_manager_offloads_without_copying_back():
    """On a GPU the manager's onload copies to the device; here the 'device' is the CPU itself
    (the onload still copies), so the test sees whether offload restores the original tensors."""
    from engine.memory.manager import MANAGER

    module = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    module.register_buffer("table", torch.arange(3.0))
    params = {n: (p, p.data_ptr()) for n, p in module.named_parameters()}
    buffer = module.table
    entry = MANAGER._onload(module, torch.device("cpu"), module_bytes(module))
    assert MANAGER.is_resident(module)
    assert all(p.data_ptr() != params[n][1] for n, p in module.named_parameters())  # copies
    assert module.table is not buffer
    assert MANAGER.release_idle() == entry.size and not MANAGER.is_resident(module)
    for name, p in module.named_parameters():
        assert p is params[name][0] and p.data_ptr() == params[name][1]  # the same CPU tensors
    assert module.table is buffer


def test_budgets_detect_and_settings_override(monkeypatch):
    from engine.memory.budget import detect_budgets, env_overrides

    cpu = detect_budgets("cpu")
    assert cpu.vram == 0 and cpu.ram > 0 and cpu.device == "cpu"
    with settings_scope({"ram_budget_bytes": 3 * GIB}):
        assert detect_budgets("cpu").ram == 3 * GIB
    assert env_overrides({"REELGRAPH_VRAM_BUDGET": "12G"}) == {"vram_budget_bytes": 12 * GIB}


def test_memory_settings_are_validated():
    from engine.config import Settings, check_settings

    clean, problems = check_settings({"vram_budget_bytes": 8 * GIB, "block_swap_blocks": 10,
                                      "batch_cfg": "off", "compile_blocks": True})
    assert not problems and Settings(**clean).batch_cfg == "off"
    _, problems = check_settings({"vram_budget_bytes": -1, "block_swap_blocks": -3,
                                  "batch_cfg": "sometimes", "compile_blocks": "yes"})
    assert len(problems) == 4 and any("block_swap_blocks" in p for p in problems)


def test_vae_auto_tile_is_whole_frames_when_memory_is_free(tmp_path):
    from engine.models.wan_vae import load_vae
    from tests.tiny_models import write_vae

    vae = load_vae(write_vae(tmp_path / "vae.safetensors"), device="cpu", dtype="fp32",
                   compute_hash=False)
    latents = torch.zeros(1, 16, 2, 8, 8)
    assert vae.auto_tile(latents) == 0
    with settings_scope({"ram_budget_bytes": 1}):  # nothing free: the smallest tile
        assert vae.auto_tile(torch.zeros(1, 16, 2, 64, 64)) > 0


# ---- out of memory inside a node --------------------------------------------------------------

def _oom_registry(kind: str, fail: list[bool]):
    from engine.registry import default_registry
    from engine.schema import NodeSpec
    from nodes.basic import ImageGradient

    class OOMGradient(ImageGradient):
        spec = NodeSpec(name="OOMGradient", category="image", description="test",
                        inputs=ImageGradient.spec.inputs, outputs=ImageGradient.spec.outputs)

        @classmethod
        def execute(cls, ctx, **kw):
            if fail[0]:
                if kind == "cuda":
                    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
                raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. "
                                   "DefaultCPUAllocator: can't allocate memory: you tried to "
                                   "allocate 99999999999 bytes")
            return ImageGradient.execute(ctx, **kw)

    registry = default_registry()
    registry.register(OOMGradient)
    return registry


@pytest.mark.parametrize("kind", ["cuda", "cpu"])
def test_out_of_memory_in_a_node_is_a_clear_error_and_the_next_run_works(tmp_path, kind):
    from engine.cache import ResultCache
    from engine.document import Workflow
    from engine.executor import Executor

    fail = [True]
    executor = Executor(_oom_registry(kind, fail), ResultCache(disk_dir=tmp_path / "cache"))
    wf = Workflow()
    wf.add_node("ImageGradient", {"width": 8, "height": 4}, node_id="a")
    wf.add_node("OOMGradient", {"width": 8, "height": 4}, node_id="big")
    wf.add_node("ImageBlend", {"factor": 0.5}, node_id="blend")
    wf.connect("a", "image", "blend", "image_a")
    wf.connect("big", "image", "blend", "image_b")
    first = executor.run(wf, targets=["blend"])
    assert first.status == "failed" and first.error.node_id == "big"
    message = first.error.message
    assert ("GPU memory" if kind == "cuda" else "CPU RAM") in message
    for hint in ("fp8", "block swap", "tiling", "frames"):
        assert hint in message
    fail[0] = False
    second = executor.run(wf, targets=["blend"])
    assert second.status == "done"
    assert second.nodes["a"].status == "cached"  # finished work survived the failure


def test_an_auto_text_encoder_encodes_on_the_cpu_when_the_card_is_too_small():
    """LoadTextEncoder with device auto asks this: the scaled-fp8 UMT5-XXL (6.3 GiB as stored)
    fits an 8 GiB card; the bf16 one (11 GiB) encodes on the CPU, as ComfyUI users set by hand."""
    from engine.memory import MemorySettings, text_encoder_device

    card = MemorySettings(vram_budget_bytes=8 * GIB)
    assert text_encoder_device(int(6.3 * GIB), "cuda", card)[0] == "cuda"
    where, why = text_encoder_device(11 * GIB, "cuda", card)
    assert where == "cpu" and "does not fit" in why
    assert text_encoder_device(11 * GIB, "cpu")[0] == "cpu"


def test_a_run_takes_its_budgets_from_the_environment(monkeypatch):
    """Per run: REELGRAPH_VRAM_BUDGET / REELGRAPH_RAM_BUDGET override the settings file."""
    from engine.config import Settings
    from engine.runtime import make_executor

    monkeypatch.setenv("REELGRAPH_VRAM_BUDGET", "8G")
    monkeypatch.setenv("REELGRAPH_RAM_BUDGET", "512M")
    executor = make_executor(Settings(), use_disk_cache=False)
    assert executor.settings["vram_budget_bytes"] == 8 * GIB
    assert executor.settings["ram_budget_bytes"] == 512 * 1024 * 1024
