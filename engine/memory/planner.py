"""The residency planner: pure functions from model footprints, the job and the budgets to the
decisions the engine acts on. No torch, no devices: tests call them with simulated budgets.

Decisions:
- DiT (per expert, `plan_dit`): the whole model resident, or block swap with K blocks resident and
  the rest streamed (two in flight: the block computing and the one prefetched); cfg batched (cond
  and uncond in one call of batch 2B) or two calls. Whole residency wins when it fits; cfg is
  batched when that still fits. Under block swap, cfg is batched when it moves no more bytes per
  step than two sequential passes would ((N - K2) <= 2 (N - K1)): streaming is what costs there.
  On the CPU, automatic means two calls (batching measured no faster there).
- Text encoder (`plan_text_encoder`): on the GPU when it fits there alone (it runs before
  sampling, when nothing else need be resident), else on the CPU; kept on the GPU during sampling
  only when it fits beside the DiT's whole working set.
- VAE (`plan_vae_tile`): untiled when the decode's working memory fits what is free, else the
  largest tile that fits (an explicit tile size in the node wins over this).
- Experts (`plan_run`): one stage per expert, each with only that expert resident.

Estimates (bytes) are deliberately a little high: an underestimate is an OOM mid-run, an
overestimate only a slower plan.
"""

from __future__ import annotations

from dataclasses import dataclass, field

GIB = 1 << 30
MIB = 1 << 20
TEXT_TOKENS = 512  # Wan pads prompts to 512 T5 tokens
# Working memory of the Wan 2.1 VAE decoder per output pixel of a 4-frame chunk, in elements:
# measured on main (832x480x17, CPU fp32): 8.1 GiB for one chunk = 1360 floats per pixel.
VAE_ELEMENTS_PER_PIXEL = 1360
VAE_TILES = (512, 384, 256, 192, 128)  # candidate tile sizes (px), largest (fastest) first
VAE_TILE_OVERLAP = 64


@dataclass(frozen=True)
class Footprint:
    """What the planner knows of a model: bytes of its weights as stored, and for a DiT its
    swappable blocks and the widths its activations scale with."""

    name: str
    role: str  # "dit" | "text_encoder" | "vae" | "clip_vision"
    weight_bytes: int
    block_bytes: int = 0  # bytes of the largest transformer block (0: nothing to swap)
    blocks: int = 0
    hidden: int = 0  # DiT width (heads * head_dim)
    ffn: int = 0  # DiT feed-forward width
    compute_bytes: int = 2  # element size of the compute dtype
    largest_layer: int = 0  # elements of the biggest quantised Linear (upcast once per call)

    @property
    def fixed_bytes(self) -> int:
        """Bytes that stay resident under block swap (embeddings, head, norms)."""
        return max(0, self.weight_bytes - self.block_bytes * self.blocks)


@dataclass(frozen=True)
class Job:
    """One generation: pixel size and frames, latent batch, guidance, and the latent grid."""

    width: int = 832
    height: int = 480
    frames: int = 81
    batch: int = 1
    cfg: float = 5.0
    spatial: int = 8  # VAE spatial compression
    temporal: int = 4
    patch: tuple[int, int, int] = (1, 2, 2)
    text_tokens: int = TEXT_TOKENS

    @property
    def latent_frames(self) -> int:
        return (self.frames - 1) // self.temporal + 1

    @property
    def tokens(self) -> int:
        pt, ph, pw = self.patch
        return (-(-self.latent_frames // pt) * (self.height // self.spatial // ph)
                * (self.width // self.spatial // pw))

    @property
    def guided(self) -> bool:
        return self.cfg != 1.0


@dataclass(frozen=True)
class Budgets:
    """(Same fields as engine.memory.budget.Budgets, which re-exports this one.)"""

    vram: int
    ram: int
    device: str = "cuda"
    reserve: int = 0

    @property
    def usable_vram(self) -> int:
        return max(0, self.vram - (self.reserve or default_reserve(self.vram)))


def default_reserve(vram: int) -> int:
    """GPU memory never planned for: 6 % of the card, at least 384 MiB (context + workspaces)."""
    return max(384 * MIB, int(vram * 0.06))


@dataclass(frozen=True)
class DiTPlan:
    model: str
    device: str
    resident_blocks: int
    swapped_blocks: int
    batch_cfg: bool
    peak_bytes: int  # planned device memory at the peak of a step
    fits: bool
    note: str = ""

    @property
    def block_swap(self) -> bool:
        return self.swapped_blocks > 0


@dataclass(frozen=True)
class TextEncoderPlan:
    device: str  # where it runs: "cuda" or "cpu"
    resident_during_sampling: bool
    note: str = ""


@dataclass(frozen=True)
class Stage:
    name: str
    on_gpu: tuple[str, ...]  # models resident on the GPU during this stage


@dataclass
class RunPlan:
    stages: list[Stage]
    dit: dict[str, DiTPlan]
    text_encoder: TextEncoderPlan | None
    vae_tile: int  # 0: untiled
    fits: bool
    notes: list[str] = field(default_factory=list)

    def resident_during(self, stage: str) -> tuple[str, ...]:
        return next(s.on_gpu for s in self.stages if s.name == stage)


# ---- estimates --------------------------------------------------------------------------------

def dit_activation_bytes(model: Footprint, tokens: int, batch: int,
                         text_tokens: int = TEXT_TOKENS) -> int:
    """Peak working memory of one DiT forward over `batch` sequences of `tokens` tokens.

    Per token: the float32 residual stream and its normalised/modulated copies (diffusers' Wan
    block computes them in float32), q, k, v and the attention output in the compute dtype
    (SDPA's flash / memory-efficient kernels need no tokens x tokens matrix), the FFN's hidden and
    activated intermediate, and the rotary tables. Plus the cross-attention's text keys/values
    and one upcast weight for fp8 layers; 10 % on top for the allocator.
    """
    e = model.compute_bytes
    per_token = model.hidden * (4 * 3 + e * 6) + model.ffn * e * 2 + 128 * 2 * 4
    text = text_tokens * model.hidden * e * 4
    upcast = model.largest_layer * e
    return int(1.1 * (batch * (tokens * per_token + text) + upcast))


def vae_decode_bytes(height: int, width: int, batch: int = 1, compute_bytes: int = 4,
                     tile: int = 0, frames: int = 1, scale: float = 1.0) -> int:
    """Working memory of a causal Wan VAE decode of one latent frame (a 4-frame chunk) at
    height x width pixels; with `tile`, of one tile, plus the blended output diffusers' tiled decode
    keeps on the device (float32, all `frames`). `scale`: the decoder's width relative to Wan 2.1's
    (base_dim / 96)."""
    per_pixel = VAE_ELEMENTS_PER_PIXEL * scale * compute_bytes * 4 * batch
    if not tile:
        return int(per_pixel * height * width)
    side_h, side_w = min(tile, height), min(tile, width)
    per_tile = int(per_pixel * side_h * side_w)
    return per_tile + 4 * 3 * frames * height * width * batch


# ---- decisions --------------------------------------------------------------------------------

def plan_dit(model: Footprint, job: Job, budgets: Budgets, *, lora_bytes: int = 0,
             beside_bytes: int = 0, swap_blocks: int = -1,
             batch_cfg: bool | None = None) -> DiTPlan:
    """How `model` runs `job` within `budgets`. `beside_bytes`: other models kept resident on the
    device; `swap_blocks`: -1 planner decides, 0 never swap, N swap N blocks; `batch_cfg`: None
    planner decides, True/False force (True still falls back to two calls when even the
    smallest batched plan cannot fit)."""
    guided = job.guided and batch_cfg is not False
    act = {b: dit_activation_bytes(model, job.tokens, b * job.batch, job.text_tokens) for b in (1, 2)}
    whole = {b: model.weight_bytes + lora_bytes + act[b] for b in (1, 2)}
    if budgets.device != "cuda":  # everything lives in RAM already: only batching to decide
        # automatic is two calls here: on the CPU a doubled batch measured no faster (see
        # docs/models.md, "Memory and speed"), and it doubles the activations
        free = budgets.ram - beside_bytes
        batched = guided and batch_cfg is True and act[2] <= free * 0.5
        swapped = max(0, min(swap_blocks, model.blocks)) if swap_blocks > 0 else 0
        return DiTPlan(model.name, budgets.device, model.blocks - swapped, swapped, batched,
                       whole[2 if batched else 1], whole[2 if batched else 1] <= free + model.weight_bytes,
                       "runs from RAM")
    usable = budgets.usable_vram - beside_bytes
    if swap_blocks <= 0 or model.blocks == 0:
        for b in ((2, 1) if guided else (1,)):
            if whole[b] <= usable and (b == 2 or batch_cfg is not True or not job.guided):
                return DiTPlan(model.name, "cuda", model.blocks, 0, b == 2, whole[b], True,
                               "whole model resident")
        if swap_blocks == 0 or model.blocks == 0:
            return DiTPlan(model.name, "cuda", model.blocks, 0, False, whole[1], False,
                           "does not fit and block swap is off")

    def resident(b: int) -> int:
        """Blocks that fit beside the fixed part, the activations and two blocks in flight."""
        room = usable - model.fixed_bytes - lora_bytes - act[b] - 2 * model.block_bytes
        if room < 0:
            return -1
        return min(model.blocks, room // max(model.block_bytes, 1))

    k = {b: resident(b) for b in (1, 2)}
    if swap_blocks > 0:  # forced count; still check it fits
        forced = model.blocks - min(swap_blocks, model.blocks)
        k = {b: (forced if 0 <= forced <= k[b] else -1 if k[b] < 0 else min(forced, k[b]))
             for b in (1, 2)}
    n = model.blocks
    candidates = [b for b in ((2, 1) if guided else (1,)) if k[b] >= 0]
    if not candidates:
        return DiTPlan(model.name, "cuda", 0, n, False, model.fixed_bytes + act[1], False,
                       "even with every block swapped the activations do not fit")
    b = candidates[0]
    if b == 2 and batch_cfg is None and k[1] >= 0 and (n - k[2]) > 2 * (n - k[1]):
        b = 1  # batching would stream more bytes per step than two passes do
    peak = model.fixed_bytes + lora_bytes + act[b] + (k[b] + min(2, n - k[b])) * model.block_bytes
    return DiTPlan(model.name, "cuda", k[b], n - k[b], b == 2, peak, True,
                   f"block swap: {n - k[b]} of {n} blocks streamed")


def plan_text_encoder(encoder: Footprint, budgets: Budgets,
                      dit_peak: int | None = None) -> TextEncoderPlan:
    """Where the text encoder runs and whether it may stay on the GPU during sampling
    (`dit_peak`: the DiT plan's peak, None when unknown)."""
    if budgets.device != "cuda":
        return TextEncoderPlan(budgets.device, False, "no GPU")
    usable = budgets.usable_vram
    working = 256 * MIB  # 512 tokens through a T5: small
    if encoder.weight_bytes + working > usable:
        return TextEncoderPlan("cpu", False, "does not fit the GPU budget: encodes on the CPU")
    beside = dit_peak is not None and encoder.weight_bytes + dit_peak <= usable
    return TextEncoderPlan("cuda", beside, "kept beside the DiT" if beside else
                           "offloaded before sampling")


def plan_vae_tile(height: int, width: int, free_bytes: int, *, batch: int = 1,
                  compute_bytes: int = 4, frames: int = 1, spatial: int = 8,
                  scale: float = 1.0) -> int:
    """0 (whole frames) when a chunk's working memory fits `free_bytes`, else the largest tile
    (pixels, a multiple of `spatial` above the overlap) that does, else the smallest."""
    if vae_decode_bytes(height, width, batch, compute_bytes, scale=scale) <= free_bytes:
        return 0
    for tile in VAE_TILES:
        if tile % spatial or tile <= VAE_TILE_OVERLAP or (tile >= height and tile >= width):
            continue
        if vae_decode_bytes(height, width, batch, compute_bytes, tile, frames, scale) <= free_bytes:
            return tile
    return VAE_TILES[-1]


def plan_run(job: Job, dit: Footprint, budgets: Budgets, *, text_encoder: Footprint | None = None,
             vae: Footprint | None = None, low_noise: Footprint | None = None,
             lora_bytes: int = 0, swap_blocks: int = -1,
             batch_cfg: bool | None = None) -> RunPlan:
    """The whole run: text encode, sampling (one stage per expert, only that expert resident),
    VAE decode."""
    notes: list[str] = []
    experts = [("high noise" if low_noise else "sample", dit)]
    if low_noise is not None:
        experts.append(("low noise", low_noise))
    plans = {name: plan_dit(fp, job, budgets, lora_bytes=lora_bytes, swap_blocks=swap_blocks,
                            batch_cfg=batch_cfg) for name, fp in experts}
    te_plan = None
    stages: list[Stage] = []
    if text_encoder is not None:
        peak = max(p.peak_bytes if not p.block_swap else budgets.vram for p in plans.values())
        te_plan = plan_text_encoder(text_encoder, budgets, peak)
        stages.append(Stage("text encode", (text_encoder.name,) if te_plan.device == "cuda" else ()))
    te_beside = (text_encoder.name,) if te_plan is not None and te_plan.resident_during_sampling else ()
    for name, fp in experts:
        stages.append(Stage(name, (fp.name, *te_beside) if budgets.device == "cuda" else ()))
    tile = 0
    if vae is not None:
        if budgets.device == "cuda":
            free = budgets.usable_vram - vae.weight_bytes
        else:
            free = int(budgets.ram * 0.8)
        tile = plan_vae_tile(job.height, job.width, free, batch=job.batch,
                             compute_bytes=vae.compute_bytes, frames=job.frames,
                             spatial=job.spatial)
        stages.append(Stage("vae decode", (vae.name,) if budgets.device == "cuda" else ()))
    for name, p in plans.items():
        notes.append(f"{name}: {p.note}" + ("; cfg batched" if p.batch_cfg else ""))
    return RunPlan(stages, plans, te_plan, tile, all(p.fits for p in plans.values()), notes)
