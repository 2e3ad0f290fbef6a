"""Train the reelgraph-tiny DiT (a small diffusers WanTransformer3DModel) with flow matching.

    .venv/bin/python -m training.train_dit --stage coarse --steps 12000 --batch 16 --minutes 45
    .venv/bin/python -m training.train_dit --stage fine --steps 16000 --batch 8 --minutes 120 --export-every 1000
    .venv/bin/python -m training.train_dit --stage focus --steps 14000 --lr 1.5e-4 --minutes 100 --export-every 1000
    .venv/bin/python -m training.train_dit --stage shape --steps 10000 --lr 1.5e-4 --minutes 75 --export-every 1000

Needs the trained VAE (training.train_vae). The first run prepares the data once: it renders
`--clips` procedural clips (training.data), encodes them with the exported VAE through
`engine.models.wan_vae.load_vae` (the normalised latents inference uses) and encodes every training
caption with the bundled all-MiniLM-L6-v2 through `engine.models.text_encoders` (token states, as
TextEncode gives them); both are cached in training/runs/dit/data.pt, with the VAE file's sha256 so
a retrained VAE (or another `--clips`) encodes them again. Seeded and resumable like the
VAE script.

Four stages train one network (training.common): "coarse" on 4x4 patches, 80 tokens a 17-frame
64x64 clip, exporting training/runs/dit/coarse_dit.safetensors; "fine" on the bundled 2x2 patches
(320 tokens), started from the coarse weights: the blocks, text and time embeddings carry over
unchanged, the patch embedding and output projection are resampled (`coarse_to_fine`); then
"focus", the fine network trained on with the loss of the latent cells that see the object
weighted 5x (`object_masks`); then "shape", which pairs every clip with its shape partner (the same
clip in another shape, `prepare_partners`) and makes the caption's shape word count (`loss_fn`).
"fine", "focus" and "shape" export
resources/models/diffusion_models/reelgraph-tiny_dit.safetensors (diffusers layout, the EMA weights,
config in the metadata); the bundled file is the shape stage's.

Frame conditioning is trained the way engine.sampling drives a model with `frame_timesteps`
(Wan 2.2 TI2V style, which this 48-channel model is detected as): each item draws a mask of known
latent frames -- none (text to video), the first frame (image to video), the first k (extend
forward), the last k (extend backward), first and last (connect) -- known frames go in clean with
per-frame timestep 0, and the loss covers the unknown frames only. The model predicts the velocity
(or, with training.common.DIT_PREDICTION = "sample", the clean latent, whose loss is the x0 error
in velocity units with the weight capped at low noise). 10% of captions are dropped to
the empty prompt so classifier-free guidance has an unconditional branch.
"""

from __future__ import annotations

import argparse
import copy
import math
import random
import time
from collections import defaultdict

import numpy as np
import torch

from training.common import (COARSE_DIT_FILE, COARSE_PATCH, DIT_CONFIG, DIT_FILE, DIT_PREDICTION, RUNS,
                             STAGE_RUNS, VAE_FILE, X0_WEIGHT_FLOOR, Log, export_safetensors,
                             load_checkpoint, save_checkpoint)
from training.data import coverage, partner_spec, render, shape_difference, training_spec

TEXT_TOKENS = 32  # stored token states per caption (captions are ~11 tokens)
PAD_LENGTHS = (32, 256)  # context lengths trained: LoadTextEncoder max_length 32, and MiniLM's own 256
TRAIN_SHIFT = 3.0  # sigma sampling leans to high noise like the sampler's shifted schedule
VAE_STRIDE = (4, 4)  # (temporal, spatial) compression of the bundled VAE (training.common.VAE_CONFIG)


# ---- data preparation -------------------------------------------------------------------------

def bucketed_specs(clips: int, seed: int) -> tuple[list, dict[tuple[int, int, int], list[int]]]:
    """The training clips' specs, and their indices grouped by (frames, height, width) in the
    order data.pt stores them."""
    specs = [training_spec(seed * 1_000_003 + i) for i in range(clips)]
    buckets: dict[tuple[int, int, int], list[int]] = defaultdict(list)
    for i, s in enumerate(specs):
        buckets[(s.frames, s.height, s.width)].append(i)
    return specs, buckets


@torch.no_grad()
def encode_clips(specs: list, buckets: dict[tuple[int, int, int], list[int]], captions: list[str],
                 log: Log, what: str) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Render and VAE-encode `specs` bucket by bucket: latents (normalised, half) and caption
    indices into `captions`, both keyed "FxHxW" in the buckets' order."""
    from engine.models.wan_vae import load_vae

    vae = load_vae(VAE_FILE, device="cpu", compute_hash=False, offload=False)
    cap_index = {c: i for i, c in enumerate(captions)}
    latents, labels = {}, {}
    done, start = 0, time.time()
    for (frames, height, width), ids in buckets.items():
        zs = []
        for j in range(0, len(ids), 16):
            batch = torch.from_numpy(np.stack([render(specs[i]) for i in ids[j:j + 16]]))
            zs.append(vae.encode(batch).half())  # (b, C, T', H', W') normalised
            done += len(ids[j:j + 16])
            log(f"encoded {done}/{len(specs)} {what} ({time.time() - start:.0f}s)")
        key = f"{frames}x{height}x{width}"
        latents[key] = torch.cat(zs)
        labels[key] = torch.tensor([cap_index[specs[i].caption] for i in ids])
    return latents, labels


def prepare(clips: int, seed: int, log: Log) -> dict:
    specs, buckets = bucketed_specs(clips, seed)
    captions = sorted({s.caption for s in specs}) + [""]
    latents, labels = encode_clips(specs, buckets, captions, log, "clips")
    embeds, masks = encode_captions(captions)
    return {"latents": latents, "labels": labels, "text": embeds, "text_mask": masks,
            "captions": "\n".join(captions)}


@torch.no_grad()
def encode_captions(captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """MiniLM token states (n, TEXT_TOKENS, 384) half and their masks, as TextEncode gives them."""
    from engine.models.text_encoders import BUNDLED_MINILM, load_text_encoder, resolve_text_encoder

    enc = load_text_encoder(resolve_text_encoder(BUNDLED_MINILM), device="cpu", hash_weights=False)
    embeds, masks = [], []
    for j in range(0, len(captions), 64):
        e, m = enc.encode(captions[j:j + 64])  # (b, 256, 384), padded positions exactly 0
        embeds.append(e[:, :TEXT_TOKENS].half())
        masks.append(m[:, :TEXT_TOKENS])
    return torch.cat(embeds), torch.cat(masks)


def prepare_partners(clips: int, seed: int, log: Log) -> dict:
    """For every cached clip, in data.pt's order, its shape partner (training.data.partner_spec)
    encoded the same way, with the partner captions' token states."""
    specs, buckets = bucketed_specs(clips, seed)
    partners = [partner_spec(s) for s in specs]
    captions = sorted({p.caption for p in partners})
    latents, labels = encode_clips(partners, buckets, captions, log, "shape partners")
    embeds, _ = encode_captions(captions)
    return {"latents": latents, "labels": labels, "text": embeds}


def latent_object_mask(cover: np.ndarray, ring: bool = True) -> torch.Tensor:
    """(T, H, W) pixel coverage -> (T', H', W') 0/1: latent cells that see the object.

    A latent frame k > 0 covers pixel frames 4k-3 .. 4k (frame 0 is its own), a cell 4x4 pixels;
    with `ring` the mask is grown by one cell because the VAE's edge and corner detail lives next to
    the object too.
    """
    ts, ss = VAE_STRIDE
    c = torch.from_numpy(cover > 0.05).float()
    groups = [c[:1]] + [c[1 + ts * k:1 + ts * (k + 1)] for k in range((len(c) - 1) // ts)]
    per_frame = torch.stack([g.amax(0) for g in groups])  # (T', H, W)
    cells = torch.nn.functional.max_pool2d(per_frame[:, None], ss)  # (T', 1, H', W')
    if ring:
        cells = torch.nn.functional.max_pool2d(cells, 3, stride=1, padding=1)
    return cells[:, 0]


def object_masks(data: dict, clips: int, seed: int, pixels=coverage, ring: bool = True,
                 partners: bool = False) -> dict[str, torch.Tensor]:
    """Per cached latent, its (1, T', H', W') cell mask of `pixels(spec)` (by default the object),
    rendered again from the same specs (or, with `partners`, from their shape partners)."""
    specs, buckets = bucketed_specs(clips, seed)
    if partners:
        specs = [partner_spec(s) for s in specs]
    out = {}
    for (frames, height, width), ids in buckets.items():
        key = f"{frames}x{height}x{width}"
        masks = torch.stack([latent_object_mask(pixels(specs[i]), ring) for i in ids])[:, None]
        assert masks.shape[2:] == data["latents"][key].shape[2:], (key, masks.shape)
        out[key] = masks.to(torch.uint8)
    return out


# ---- masks and batches ------------------------------------------------------------------------

def draw_mask(rng: random.Random, frames: int) -> torch.Tensor:
    """(T',) float, 1 = known latent frame; never all known."""
    m = torch.zeros(frames)
    mode = rng.choices(("none", "first", "head", "tail", "both"), weights=(0.3, 0.3, 0.15, 0.1, 0.15))[0]
    if mode == "first":
        m[0] = 1
    elif mode == "head":
        m[:rng.randint(1, frames - 1)] = 1
    elif mode == "tail":
        m[frames - rng.randint(1, frames - 1):] = 1
    elif mode == "both" and frames >= 3:
        m[:rng.randint(1, max(1, frames - 2))] = 1
        m[frames - 1] = 1
    return m


def make_batch(data: dict, rng: random.Random, batch: int) -> tuple[torch.Tensor, ...]:
    """(x0, context, known-frame mask, object cells, shape cells, captioned). With shape partners
    in `data`, the second half of the batch is the first half's partners, with the same frame mask
    and the same caption dropout."""
    keys = list(data["latents"])
    weights = [len(data["latents"][k]) for k in keys]
    key = rng.choices(keys, weights=weights)[0]
    pool = data["latents"][key]
    paired = "partners" in data
    n = batch // 2 if paired else batch
    idx = [rng.randrange(len(pool)) for _ in range(n)]
    x0 = pool[idx].float()  # (B, C, T', H', W')
    text = data["text"][data["labels"][key][idx]].float()
    captioned = torch.tensor([rng.random() >= 0.1 for _ in range(n)])
    length = rng.choices(PAD_LENGTHS, weights=(0.8, 0.2))[0]
    mask = torch.stack([draw_mask(rng, x0.shape[2]) for _ in range(n)])  # (B, T')

    def cells(name: str, partner_name: str) -> torch.Tensor | None:
        if name not in data:
            return None
        m = data[name][key][idx].float()
        return torch.cat([m, data[partner_name][key][idx].float()]) if paired else m

    objects, shapes = cells("objects", "partner_objects"), cells("shapes", "partner_shapes")
    if paired:
        p = data["partners"]
        x0 = torch.cat([x0, p["latents"][key][idx].float()])
        text = torch.cat([text, p["text"][p["labels"][key][idx]].float()])
        captioned, mask = captioned.repeat(2), mask.repeat(2, 1)
    text[~captioned] = data["text"][len(data["text"]) - 1].float()  # the "" caption
    ctx = torch.zeros(len(x0), length, data["text"].shape[-1])
    ctx[:, :TEXT_TOKENS] = text  # padded positions stay exactly 0
    return x0, ctx, mask, objects, shapes, captioned


def token_timesteps(t: torch.Tensor, x: torch.Tensor, patch: tuple[int, ...]) -> torch.Tensor:
    """(B, T') per-frame timesteps -> (B, tokens), as engine.models.wan_dit.WanDiT does."""
    ph, pw = patch[1:]
    per_frame = (x.shape[3] // ph) * (x.shape[4] // pw)
    return t.repeat_interleave(per_frame, dim=1)


def sample_sigmas(rng: torch.Generator, batch: int) -> torch.Tensor:
    u = torch.rand(batch, generator=rng)
    shifted = TRAIN_SHIFT * u / (1 + (TRAIN_SHIFT - 1) * u)
    pick = torch.rand(batch, generator=rng) < 0.5
    return torch.where(pick, shifted, u).clamp(1e-3, 1.0)


# The sigma band where the object's place is already set but its outline cannot yet be read from the
# input, so only the caption can tell the shape: half of the shape partners are drawn from it, and
# the pair loss counts there only (below it the network can read the shape off the input instead,
# which it already does).
PAIR_SIGMAS = (0.75, 1.0)


def pair_sigmas(rng: torch.Generator, pairs: int) -> torch.Tensor:
    """(pairs,) sigmas: half from sample_sigmas, half uniform in PAIR_SIGMAS."""
    usual = sample_sigmas(rng, pairs)
    lo, hi = PAIR_SIGMAS
    band = lo + (hi - lo) * torch.rand(pairs, generator=rng)
    return torch.where(torch.rand(pairs, generator=rng) < 0.5, band, usual)


def loss_fn(model: torch.nn.Module, x0: torch.Tensor, ctx: torch.Tensor, mask: torch.Tensor,
            gen: torch.Generator, objects: torch.Tensor | None = None,
            object_weight: float = 0.0, shapes: torch.Tensor | None = None,
            shape_weight: float = 0.0, pair_weight: float = 0.0,
            captioned: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error over the unknown frames; with `objects`, latent cells that see the
    object weigh 1 + object_weight (the shape's outline and track are a few percent of the cells,
    so an unweighted loss spends the small network on the plain background); with `shapes`, the
    cells where another shape would differ weigh shape_weight more (corners, point, rounded
    edges: the only cells where the caption's shape word changes the target).

    With `pair_weight` the batch's halves are shape partners (make_batch) sharing noise and sigma.
    Where sigma is in PAIR_SIGMAS the partner gets its pair's noisy frames as its input (the two
    differ only in the caption and in known frames; at these sigmas the clips' own inputs would
    differ by at most a quarter of the shapes' difference), and the difference of the two
    predictions is also fitted to the difference of the targets (x0_B - x0_A, noise-free) where
    both are captioned: a gradient that reaches the network only through the shape word. The plain
    loss gives it too faintly (the network drew one blob for every shape), and partners with their
    own inputs let the network fit the difference from the input instead."""
    b = x0.shape[0]
    if pair_weight:
        h = b // 2
        noise = torch.randn((h, *x0.shape[1:]), generator=gen).repeat(2, 1, 1, 1, 1)
        s = pair_sigmas(gen, h).repeat(2)
    else:
        noise = torch.randn(x0.shape, generator=gen)
        s = sample_sigmas(gen, b)  # (B,)
    known = mask.view(b, 1, -1, 1, 1) > 0.5  # (B, 1, T', 1, 1)
    sv = s.view(b, 1, 1, 1, 1)
    noisy = (1 - sv) * x0 + sv * noise
    if pair_weight:  # in the band, a partner gets the very input of its pair: only the caption differs
        band = (s[:h] >= PAIR_SIGMAS[0]).view(h, 1, 1, 1, 1)
        noisy = torch.cat([noisy[:h], torch.where(band, noisy[:h], noisy[h:])])
    xs = torch.where(known, x0, noisy)  # known frames clean
    t = (1000.0 * s)[:, None] * (1.0 - mask)  # (B, T'): known frames at timestep 0
    dev = next(model.parameters()).device
    patch = tuple(model.config.patch_size)
    out = model(hidden_states=xs.to(dev), timestep=token_timesteps(t, xs, patch).to(dev),
                encoder_hidden_states=ctx.to(dev), return_dict=False)[0].float().cpu()
    if DIT_PREDICTION == "sample":  # x0 error in velocity units, capped at low sigma (common.py)
        err = (out - x0).pow(2) / s.clamp(min=X0_WEIGHT_FLOOR).pow(2).view(b, 1, 1, 1, 1)
        target = x0
    else:
        target = noise - x0
        err = (out - target).pow(2)  # (B, C, T', H', W')
    weight = (1.0 - mask).view(b, 1, -1, 1, 1).expand(b, 1, *x0.shape[2:])
    if objects is not None and object_weight:
        weight = weight * (1.0 + object_weight * objects)
    if shapes is not None and shape_weight:
        weight = weight + (1.0 - mask).view(b, 1, -1, 1, 1) * shape_weight * shapes
    loss = (err.mean(dim=1, keepdim=True) * weight).sum() / weight.sum().clamp(min=1.0)
    if pair_weight:
        diff = ((out[:h] - out[h:]) - (target[:h] - target[h:])).pow(2).mean(dim=1, keepdim=True)
        if DIT_PREDICTION == "sample":
            diff = diff / s[:h].clamp(min=X0_WEIGHT_FLOOR).pow(2).view(h, 1, 1, 1, 1)
        both = (weight[:h] + weight[h:]) / 2 * (s[:h] >= PAIR_SIGMAS[0]).float().view(h, 1, 1, 1, 1)
        if captioned is not None:
            both = both * captioned[:h].float().view(h, 1, 1, 1, 1)
        loss = loss + pair_weight * (diff * both).sum() / both.sum().clamp(min=1.0)
    return loss


# ---- main -------------------------------------------------------------------------------------

STAGES = tuple(STAGE_RUNS)
FOCUS_OBJECT_WEIGHT = 4.0  # the focus and shape stages
SHAPE_WEIGHT = 8.0  # the shape stage
PAIR_WEIGHT = 2.0  # the shape stage
WARM_START = {"focus": "fine", "shape": "focus"}  # stages that carry on from another's weights and EMA


def stage_config(stage: str) -> dict:
    return dict(DIT_CONFIG, patch_size=COARSE_PATCH if stage == "coarse" else DIT_CONFIG["patch_size"])


def build_model(config: dict) -> torch.nn.Module:
    from diffusers import WanTransformer3DModel

    return WanTransformer3DModel(**dict(config, patch_size=tuple(config["patch_size"])))


def coarse_to_fine(state: dict[str, torch.Tensor], coarse: list[int], fine: list[int]) -> dict[str, torch.Tensor]:
    """Coarse-patch DiT weights -> fine-patch ones (same blocks, smaller patches).

    The new patch embedding applied to a fine patch equals the old one applied to that patch
    upsampled (nearest) to the coarse size: it sums the old kernel over each block of positions. The
    new output projection writes each fine position as the mean of the coarse positions it covers.
    """
    f = coarse[1] // fine[1]
    assert coarse[0] == fine[0] == 1 and coarse[1] == coarse[2] and fine[1] == fine[2] and f * fine[1] == coarse[1]
    out = dict(state)
    w = state["patch_embedding.weight"]  # (D, C, 1, P, P)
    d, c, _, p, _ = w.shape
    q = p // f
    out["patch_embedding.weight"] = w.reshape(d, c, 1, q, f, q, f).sum(dim=(4, 6)).contiguous()
    for name in ("proj_out.weight", "proj_out.bias"):  # rows ordered (p_t, p_h, p_w, C)
        v = state[name]
        rest = v.shape[1:]
        v = v.reshape(q, f, q, f, -1, *rest).mean(dim=(1, 3))
        out[name] = v.reshape(q * q * v.shape[2], *rest).contiguous()
    return out


def vae_identity() -> str:
    """sha256 of the exported VAE: the cached latents are only valid for the VAE that made them."""
    from engine.models.safe_load import file_sha256

    return file_sha256(VAE_FILE)


def export(ema: torch.nn.Module, config: dict, stage: str, log: Log, step: int) -> None:
    path = COARSE_DIT_FILE if stage == "coarse" else DIT_FILE
    config = {**config, "prediction_type": DIT_PREDICTION}  # the engine's loader reads both
    export_safetensors(path, ema.state_dict(), config, {"step": str(step), "stage": stage})
    log(f"exported {path} (step {step})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--stage", choices=STAGES, default="fine",
                    help="coarse: 4x4 patches from scratch; fine: 2x2 patches from coarse; "
                         "focus: fine continued with the object-weighted loss; shape: focus "
                         "continued on clips paired with their shape partners (pair loss, shape cells)")
    ap.add_argument("--steps", type=int, default=16000)  # the fine stage; coarse is run with 12000
    ap.add_argument("--minutes", type=float, default=25.0, help="wall-time budget of this run")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--clips", type=int, default=2400, help="training clips encoded once")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--save-every", type=int, default=100)
    ap.add_argument("--export-every", type=int, default=500)
    ap.add_argument("--ema", type=float, default=0.995)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--object-weight", type=float, default=None,
                    help="extra loss weight of latent cells that see the object (default: 4 for the "
                         "focus and shape stages, 0 otherwise)")
    ap.add_argument("--shape-weight", type=float, default=None,
                    help="extra loss weight of latent cells where another shape would differ "
                         "(default: 8 for the shape stage, 0 otherwise)")
    ap.add_argument("--pair-weight", type=float, default=None,
                    help="weight of the shape-partner difference loss; half of every batch is the "
                         "other half's shape partners (default: 2 for the shape stage, 0 otherwise)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    object_weight = args.object_weight if args.object_weight is not None else (
        FOCUS_OBJECT_WEIGHT if args.stage in WARM_START else 0.0)
    shape_weight = args.shape_weight if args.shape_weight is not None else (
        SHAPE_WEIGHT if args.stage == "shape" else 0.0)
    pair_weight = args.pair_weight if args.pair_weight is not None else (
        PAIR_WEIGHT if args.stage == "shape" else 0.0)
    if args.threads:
        torch.set_num_threads(args.threads)
    run = RUNS / STAGE_RUNS[args.stage]
    log = Log(run / "log.txt")
    data_file = RUNS / "dit" / "data.pt"  # shared by all stages
    vae_id = vae_identity()
    data = torch.load(data_file, weights_only=True) if data_file.is_file() else None
    if data is not None and (data.get("vae") != vae_id
                             or sum(len(v) for v in data["latents"].values()) != args.clips):
        log("the cached latents came from another VAE or clip count; encoding again")
        data = None
    if data is None:
        data = prepare(args.clips, args.seed, log)
        data["vae"] = vae_id
        save_checkpoint(data_file, **data)
    if pair_weight and "partners" not in data:
        data["partners"] = prepare_partners(args.clips, args.seed, log)
        save_checkpoint(data_file, **data)
    if not pair_weight:
        data.pop("partners", None)
    if object_weight:
        data["objects"] = object_masks(data, args.clips, args.seed)
        if pair_weight:
            data["partner_objects"] = object_masks(data, args.clips, args.seed, partners=True)
        share = sum(float(v.float().mean()) * len(v) for v in data["objects"].values()) / args.clips
        log(f"object-weighted loss x{1 + object_weight:g} on {100 * share:.1f}% of the latent cells")
    if shape_weight:
        data["shapes"] = object_masks(data, args.clips, args.seed, pixels=shape_difference, ring=False)
        if pair_weight:
            data["partner_shapes"] = object_masks(data, args.clips, args.seed, pixels=shape_difference,
                                                  ring=False, partners=True)
        share = sum(float(v.float().mean()) * len(v) for v in data["shapes"].values()) / args.clips
        log(f"cells where another shape would differ weigh {shape_weight:g} more: {100 * share:.1f}% of the cells")
    torch.manual_seed(args.seed)
    config = stage_config(args.stage)
    model = build_model(config)
    step = 0
    ckpt = load_checkpoint(run / "last.pt")
    if ckpt is None and args.stage == "fine":
        if not COARSE_DIT_FILE.is_file():
            raise SystemExit(f"{COARSE_DIT_FILE} is missing: run the coarse stage first (--stage coarse)")
        from safetensors.torch import load_file

        model.load_state_dict(coarse_to_fine(load_file(COARSE_DIT_FILE), COARSE_PATCH, config["patch_size"]))
        log(f"started from the coarse weights {COARSE_DIT_FILE}")
    warm_ema = None
    if ckpt is None and args.stage in WARM_START:
        before = WARM_START[args.stage]
        prev = load_checkpoint(RUNS / STAGE_RUNS[before] / "last.pt")
        if prev is None:
            raise SystemExit(f"training/runs/{STAGE_RUNS[before]}/last.pt is missing: run the {before} "
                             f"stage first (--stage {before})")
        model.load_state_dict(prev["model"])
        warm_ema = prev["ema"]
        log(f"started from the {before} stage at its step {int(prev['step'])}")
    model = model.to(args.device).train()
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    if warm_ema is not None:
        ema.load_state_dict(warm_ema)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        ema.load_state_dict(ckpt["ema"])
        opt.load_state_dict(ckpt["opt"])
        step = int(ckpt["step"])
        log(f"resumed at step {step}")
    rng = random.Random(args.seed * 7919 + step)
    gen = torch.Generator().manual_seed(args.seed * 7919 + step)
    start, avg, first = time.time(), None, step
    while step < args.steps and time.time() - start < args.minutes * 60:
        warm = min(1.0, (step + 1) / 100)
        lr = args.lr * warm * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, step / args.steps))))
        for g in opt.param_groups:
            g["lr"] = lr
        x0, ctx, mask, objects, shapes, captioned = make_batch(data, rng, args.batch)
        loss = loss_fn(model, x0, ctx, mask, gen, objects, object_weight, shapes, shape_weight,
                       pair_weight, captioned)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        # a short warm-up of the average, except where it carries on from the fine stage's average
        decay = args.ema if args.stage in WARM_START else min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.lerp_(pm, 1.0 - decay)
        avg = loss.item() if avg is None else 0.98 * avg + 0.02 * loss.item()
        if step % 20 == 0:
            log(f"step {step} loss {avg:.4f} lr {lr:.2e} {(time.time() - start) / (step - first):.2f}s/step")
        if step % args.save_every == 0:
            save_checkpoint(run / "last.pt", model=model.state_dict(), ema=ema.state_dict(),
                            opt=opt.state_dict(), step=step)
        if step % args.export_every == 0:
            export(ema, config, args.stage, log, step)
    save_checkpoint(run / "last.pt", model=model.state_dict(), ema=ema.state_dict(),
                    opt=opt.state_dict(), step=step)
    export(ema, config, args.stage, log, step)


if __name__ == "__main__":
    main()
