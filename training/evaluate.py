"""Evaluate reelgraph-tiny on held-out caption combinations, measuring the generated pixels.

    .venv/bin/python -m training.evaluate [--quick] [--steps 12] [--json out.json]

Runs the bundled model through the same engine functions the nodes call (text encoder with
LoadTextEncoder's max_length, noise init, the flow-matching sampler, frame conditioning, VAE decode)
and scores, with training.measure:
- text to video on every HELD_OUT (colour, shape, motion, background) combination (never trained
  on): colour, shape and motion accuracy, background accuracy;
- the same combinations worded as free-form paraphrases, through the builtin Recaption backend
  (grammar "reelgraph-tiny"): colour and motion accuracy;
- image to video: the first frame of a held-out clip as the known head; first-frame fidelity (mean
  absolute error and PSNR of decoded frame 0 against the image) and motion accuracy;
- extension forward: a held-out clip extended by 8 frames from its last 5; seam continuity (the
  centroid jump across the seam in pixels against the clip's own per-frame step, and the colour
  staying the same).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from training.common import DIT_FILE, VAE_FILE
from training.data import HELD_OUT, ClipSpec, caption, random_spec, render
from training.measure import measure

TEXT_MAX_LENGTH = 32  # what the example workflows set on LoadTextEncoder
DEFAULTS = {"steps": 12, "cfg": 4.0, "shift": 3.0, "sampler": "unipc"}

# Paraphrase wording per slot value (the Recaption vocabulary must carry them to the caption).
PARA_COLOUR = {"red": "crimson", "green": "emerald", "blue": "azure", "yellow": "golden",
               "white": "snowy", "purple": "violet"}
PARA_SHAPE = {"circle": "ball", "square": "box", "triangle": "pyramid"}
PARA_MOTION = {"moving left": "gliding to the left", "moving right": "drifting rightwards",
               "moving up": "rising", "moving down": "falling", "staying still": "resting motionless",
               "growing": "slowly expanding"}
PARA_BACKGROUND = {"black": "pitch-black backdrop", "gray": "grey backdrop",
                   "navy": "dark blue backdrop", "dark green": "forest green backdrop"}


def paraphrase(colour: str, shape: str, motion: str, background: str) -> str:
    return (f"A {PARA_COLOUR[colour]} {PARA_SHAPE[shape]} {PARA_MOTION[motion]} over a "
            f"{PARA_BACKGROUND[background]}")


@dataclass
class Models:
    encoder: Any
    vae: Any
    dit: Any


def load_models(device: str = "cpu") -> Models:
    from engine.models.text_encoders import BUNDLED_MINILM, load_text_encoder, resolve_text_encoder
    from engine.models.wan_dit import load_dit
    from engine.models.wan_vae import load_vae

    enc = load_text_encoder(resolve_text_encoder(BUNDLED_MINILM), device=device,
                            max_length=TEXT_MAX_LENGTH, hash_weights=False)
    return Models(enc, load_vae(VAE_FILE, device=device, compute_hash=False),
                  load_dit(DIT_FILE, device=device, compute_hash=False))


def generate(m: Models, prompt: str, *, width: int = 64, height: int = 64, frames: int = 17,
             seed: int = 0, head: torch.Tensor | None = None, steps: int = DEFAULTS["steps"],
             cfg: float = DEFAULTS["cfg"], shift: float = DEFAULTS["shift"],
             sampler: str = DEFAULTS["sampler"]) -> np.ndarray:
    """(T, H, W, 3) float frames for `prompt`; `head` (k, H, W, 3) known first frames (4n+1)."""
    from engine.conditioning import condition_latent
    from engine.noise import init_noise
    from engine.sampling import sample
    from engine.values import Conditioning

    embeds, mask = m.encoder.encode([prompt, ""])
    cond = Conditioning(embeds=embeds[:1], mask=mask[:1], negative_embeds=embeds[1:],
                        negative_mask=mask[1:], prompt=prompt)
    latent = init_noise(width, height, frames, 1, seed, m.vae.grid, fps=8.0)
    if head is not None:
        latent = condition_latent(latent, m.vae, head=head)
    out = sample(m.dit, latent, cond, steps=steps, cfg=cfg, shift=shift, sampler=sampler, seed=seed)
    return m.vae.decode(out.samples)[0].numpy()


def held_out_spec(combo: tuple[str, str, str, str], seed: int, frames: int = 17) -> ClipSpec:
    return random_spec(random.Random(seed), combo=combo, width=64, height=64, frames=frames)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a - b) ** 2).mean())
    return 10 * math.log10(1.0 / max(mse, 1e-10))


def run(m: Models, quick: bool = False, settings: dict[str, Any] | None = None,
        log: Any = print) -> dict[str, Any]:
    s = {**DEFAULTS, **(settings or {})}
    combos = list(HELD_OUT)[::2] if quick else list(HELD_OUT)
    res: dict[str, Any] = {"settings": s, "held_out": len(combos)}
    t0 = time.time()

    # text to video, exact captions
    hits = {"colour": 0, "shape": 0, "motion": 0, "background": 0}
    rows = []
    for i, combo in enumerate(combos):
        got = measure(generate(m, caption(*combo), seed=1000 + i, **s))
        truth = dict(zip(("colour", "shape", "motion", "background"), combo))
        for k in hits:
            hits[k] += getattr(got, k) == truth[k]
        rows.append({"caption": caption(*combo), **{f"got_{k}": getattr(got, k) for k in hits}})
    res["t2v"] = {k: v / len(combos) for k, v in hits.items()}
    res["t2v_rows"] = rows
    log(f"t2v held-out: {res['t2v']}  ({time.time() - t0:.0f}s)")

    # paraphrases through the builtin recaptioner
    from engine.recaption import recaption

    hits = {"colour": 0, "motion": 0, "shape": 0, "recaption_exact": 0}
    for i, combo in enumerate(combos):
        text = recaption(paraphrase(*combo), "builtin", grammar="reelgraph-tiny", seed=0)
        hits["recaption_exact"] += text == caption(*combo)
        got = measure(generate(m, text, seed=2000 + i, **s))
        hits["colour"] += got.colour == combo[0]
        hits["shape"] += got.shape == combo[1]
        hits["motion"] += got.motion == combo[2]
    res["paraphrase"] = {k: v / len(combos) for k, v in hits.items()}
    log(f"paraphrase held-out: {res['paraphrase']}  ({time.time() - t0:.0f}s)")

    # image to video: first frame of a held-out clip
    n_i2v = len(combos) // 2
    maes, psnrs, motion_ok, colour_ok = [], [], 0, 0
    for i, combo in enumerate(combos[:n_i2v]):
        clip = render(held_out_spec(combo, 3000 + i))
        image = torch.from_numpy(clip[:1])  # (1, H, W, 3)
        out = generate(m, caption(*combo), seed=3000 + i, head=image, **s)
        maes.append(float(np.abs(out[0] - clip[0]).mean()))
        psnrs.append(psnr(out[0], clip[0]))
        got = measure(out)
        motion_ok += got.motion == combo[2]
        colour_ok += got.colour == combo[0]
    res["i2v"] = {"first_frame_mae": float(np.mean(maes)), "first_frame_psnr": float(np.mean(psnrs)),
                  "motion": motion_ok / n_i2v, "colour": colour_ok / n_i2v}
    log(f"i2v: {res['i2v']}  ({time.time() - t0:.0f}s)")

    # extension forward: last 5 frames known, 8 new ones (13-frame generation), stitched
    moving = [c for c in combos if c[2].startswith("moving")][: max(2, n_i2v // 2)]
    jumps, steps_px, colour_ok = [], [], 0
    for i, combo in enumerate(moving):
        clip = render(held_out_spec(combo, 4000 + i, frames=17))
        head = torch.from_numpy(clip[-5:])
        out = generate(m, caption(*combo), seed=4000 + i, frames=13, head=head, **s)
        joined = np.concatenate([clip, out[5:]])  # the stitch rule: original + new frames
        cx = _centroids(joined)
        step = np.abs(np.diff(cx[:17], axis=0)).sum(1).mean()  # per-frame travel in the clip
        jumps.append(float(np.abs(cx[17] - cx[16]).sum()))
        steps_px.append(float(step))
        colour_ok += measure(out[5:]).colour == combo[0]
    res["extend"] = {"seam_jump_px": float(np.mean(jumps)), "clip_step_px": float(np.mean(steps_px)),
                     "colour_kept": colour_ok / len(moving), "clips": len(moving)}
    log(f"extend: {res['extend']}  ({time.time() - t0:.0f}s)")
    res["seconds"] = time.time() - t0
    return res


def _centroids(frames: np.ndarray) -> np.ndarray:
    """(T, 2) object centroid (x, y) per frame (the background read from frame 0's border)."""
    from training.measure import background_of, object_masks

    masks = object_masks(frames, background_of(frames))
    out = []
    for mk in masks:
        ys, xs = np.nonzero(mk)
        out.append((xs.mean(), ys.mean()) if len(xs) else (np.nan, np.nan))
    return np.asarray(out, np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="half the held-out combinations")
    ap.add_argument("--steps", type=int, default=DEFAULTS["steps"])
    ap.add_argument("--cfg", type=float, default=DEFAULTS["cfg"])
    ap.add_argument("--shift", type=float, default=DEFAULTS["shift"])
    ap.add_argument("--sampler", default=DEFAULTS["sampler"])
    ap.add_argument("--json", default="", help="also write the figures to this file")
    args = ap.parse_args()
    torch.manual_seed(0)
    m = load_models()
    res = run(m, args.quick, {"steps": args.steps, "cfg": args.cfg, "shift": args.shift,
                              "sampler": args.sampler})
    summary = {k: v for k, v in res.items() if k != "t2v_rows"}
    print(json.dumps(summary, indent=2))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(res, fh, indent=2)


if __name__ == "__main__":
    main()
