"""Train the reelgraph-tiny video VAE (a small diffusers AutoencoderKLWan) on procedural clips.

    .venv/bin/python -m training.train_vae --minutes 20

Seeded and resumable: the state is checkpointed to training/runs/vae/last.pt every
`--save-every` steps and at the end; running the command again continues from there until
`--steps` is reached or `--minutes` of wall time have passed in this run. At the end it exports
resources/models/vae/reelgraph-tiny_vae.safetensors (diffusers key layout) with the per-channel
latent statistics measured on fresh clips in its metadata, so `engine.models.wan_vae.load_vae`
loads it like any Wan VAE.

Clips are whole lengths (9, 17 or 25 frames: the causal encoder and decoder carry state across
chunks, so they must see as many chunks as inference gives them) and mostly cropped to 32x32: flat
shapes on plain backgrounds are local structure, and the convolutional model runs on any size
afterwards. The loss weights the shape's pixels 5x. The
decoder is trained on the posterior mean (a deterministic autoencoder with a tiny KL term), since
inference encodes to the mean too.
"""

from __future__ import annotations

import argparse
import math
import random
import time
from pathlib import Path

import numpy as np
import torch

from training.common import RUNS, VAE_CONFIG, VAE_FILE, Log, export_safetensors, load_checkpoint, save_checkpoint
from training.data import BACKGROUNDS, render, training_spec

# The shape is a few percent of the pixels but all that the evaluation measures (colour, outline,
# track); weighting it up keeps the reconstruction from settling on a blurred background.
OBJECT_WEIGHT = 5.0


def make_batch(rng: random.Random, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Clip pieces of one size (9, 17 or 25 frames, mostly 32x32 crops): (B, 3, T, H, W) in [-1, 1], and
    per-pixel loss weights (B, 1, T, H, W), `OBJECT_WEIGHT` on the shape, 1 on the background."""
    # whole clip lengths: the causal encoder/decoder carry state from chunk to chunk, and a model
    # trained on 5-13 frame pieces fell apart (colour drift, ghosts) after frame 13 of a 17-frame clip
    frames = rng.choices((9, 17, 25), weights=(0.25, 0.5, 0.25))[0]
    side = rng.choices((32, 48, 64), weights=(0.6, 0.25, 0.15))[0]
    clips, weights = [], []
    for _ in range(batch):
        spec = training_spec(rng.randrange(1 << 30))
        while spec.frames < frames:  # a shorter clip cannot give a piece this long
            spec = training_spec(rng.randrange(1 << 30))
        clip = render(spec)  # (T0, H, W, 3)
        t0 = rng.randrange(0, clip.shape[0] - frames + 1)
        h, w = clip.shape[1:3]
        y, x = rng.randrange(0, h - side + 1), rng.randrange(0, w - side + 1)
        piece = clip[t0:t0 + frames, y:y + side, x:x + side]
        bg = np.asarray(BACKGROUNDS[spec.background], np.float32) / 255.0
        on_shape = np.abs(piece - bg).max(-1) > 0.02  # (T, h, w): the shape and its soft edge
        clips.append(piece)
        weights.append(1.0 + (OBJECT_WEIGHT - 1.0) * on_shape)
    x = torch.from_numpy(np.stack(clips)).permute(0, 4, 1, 2, 3)  # (B, 3, T, H, W)
    w = torch.from_numpy(np.stack(weights).astype(np.float32))[:, None]  # (B, 1, T, H, W)
    return x * 2.0 - 1.0, w


def decode_unclamped(model: torch.nn.Module, z: torch.Tensor) -> torch.Tensor:
    """AutoencoderKLWan's causal frame-by-frame decode without its final clamp to [-1, 1]: the
    clamp zeroes the gradient of every saturated pixel, and black (-1) backgrounds saturate."""
    model.clear_cache()
    x = model.post_quant_conv(z)
    outs = []
    for i in range(z.shape[2]):
        model._conv_idx = [0]
        outs.append(model.decoder(x[:, :, i:i + 1], feat_cache=model._feat_map,
                                  feat_idx=model._conv_idx, first_chunk=(i == 0)))
    model.clear_cache()
    return torch.cat(outs, dim=2)  # (B, 3, T, H, W)


def build_model() -> torch.nn.Module:
    from diffusers import AutoencoderKLWan

    z = VAE_CONFIG["z_dim"]
    return AutoencoderKLWan(**VAE_CONFIG, latents_mean=[0.0] * z, latents_std=[1.0] * z)


@torch.no_grad()
def latent_stats(model: torch.nn.Module, seed: int = 12345, clips: int = 48) -> tuple[list[float], list[float]]:
    """Per-channel mean/std of the posterior means over full 17-frame training clips."""
    rng = random.Random(seed)
    zs = []
    for _ in range(clips):
        clip = torch.from_numpy(render(training_spec(rng.randrange(1 << 30))))
        x = clip.permute(3, 0, 1, 2)[None] * 2 - 1
        zs.append(model.encode(x).latent_dist.mode().flatten(2))  # (1, C, N)
    z = torch.cat(zs, dim=2)[0]  # (C, N)
    return z.mean(1).tolist(), z.std(1).clamp(min=1e-3).tolist()


def export(model: torch.nn.Module, log: Log, step: int, path: Path = VAE_FILE) -> None:
    model.eval()
    mean, std = latent_stats(model)
    config = {**VAE_CONFIG, "latents_mean": mean, "latents_std": std}
    export_safetensors(path, model.state_dict(), config, {"step": str(step)})
    log(f"exported {path} (step {step}); latent mean {np.round(mean, 2).tolist()} "
        f"std {np.round(std, 2).tolist()}")
    model.train()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=3750)
    ap.add_argument("--minutes", type=float, default=20.0, help="wall-time budget of this run")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--kl", type=float, default=1e-6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--save-every", type=int, default=50)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--decoder-only", action="store_true",
                    help="train only the decoder (the encoder, hence the latents a DiT was trained "
                         "on, stay fixed); the optimizer state is started afresh")
    ap.add_argument("--run", default="vae", help="checkpoint folder under training/runs/")
    ap.add_argument("--export", default=str(VAE_FILE), help="where the final weights go")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    run = RUNS / args.run
    log = Log(run / "log.txt")
    torch.manual_seed(args.seed)
    model = build_model().to(args.device).train()
    params = list(model.parameters())
    if args.decoder_only:
        for module in (model.encoder, model.quant_conv):
            module.requires_grad_(False)
        params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    step = 0
    ckpt = load_checkpoint(run / "last.pt")
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        if bool(ckpt.get("decoder_only")) == args.decoder_only:  # same parameter set only
            opt.load_state_dict(ckpt["opt"])
        step = int(ckpt["step"])
        log(f"resumed at step {step}" + (" (decoder only)" if args.decoder_only else ""))
    rng = random.Random(args.seed * 1_000_003 + step)  # a resumed run draws new clips
    start, ema = time.time(), None
    while step < args.steps and time.time() - start < args.minutes * 60:
        lr = args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, step / args.steps))))
        for g in opt.param_groups:
            g["lr"] = lr
        x, pixel_weight = make_batch(rng, args.batch)
        x, pixel_weight = x.to(args.device), pixel_weight.to(args.device)
        with torch.set_grad_enabled(not args.decoder_only):
            posterior = model.encode(x).latent_dist
        # decoded from the posterior mean, which is what inference encodes to (WanVAE.encode);
        # L1 keeps edges sharp, MSE keeps flat colours exact; a tiny KL keeps latents bounded
        recon = decode_unclamped(model, posterior.mode())
        err = (((recon - x).abs() + (recon - x).pow(2)) * pixel_weight).mean(dim=(0, 1, 3, 4))  # (T,)
        # frame 0 runs through its own causal path (no temporal up/downsampling) and is a small
        # share of the pixels; without extra weight it stays nearly independent of its latent
        weight = torch.ones_like(err)
        weight[0] = x.shape[2] / 2
        rec = (err * weight).sum() / weight.sum()
        kl = posterior.kl().mean()  # summed over the latent of one clip
        loss = rec + args.kl * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        ema = rec.item() if ema is None else 0.95 * ema + 0.05 * rec.item()
        if step % 10 == 0:
            log(f"step {step} rec {ema:.4f} kl {kl.item():.3f} lr {lr:.2e} "
                f"{(time.time() - start) / max(1, step - (ckpt['step'] if ckpt else 0)):.2f}s/step")
        if step % args.save_every == 0:
            save_checkpoint(run / "last.pt", model=model.state_dict(), opt=opt.state_dict(), step=step,
                            decoder_only=args.decoder_only)
    save_checkpoint(run / "last.pt", model=model.state_dict(), opt=opt.state_dict(), step=step,
                    decoder_only=args.decoder_only)
    export(model.cpu(), log, step, Path(args.export))


if __name__ == "__main__":
    main()
