"""Train reelgraph-tiny from scratch, then evaluate it: the one command behind the bundled weights.

    .venv/bin/python -m training [--fresh] [--threads 2]

Runs, each in its own process and each resumable (run the command again to continue):
1. training.train_vae                -> resources/models/vae/reelgraph-tiny_vae.safetensors
2. training.train_dit --stage coarse -> training/runs/dit/coarse_dit.safetensors, 4x4 patches
   (it encodes its clips with the VAE of step 1 once, into training/runs/dit/data.pt)
3. training.train_dit --stage fine   -> training/runs/dit_fine/last.pt, the bundled 2x2 patches,
   started from step 2's weights (its exports are replaced by step 4's)
4. training.train_dit --stage focus  -> training/runs/dit_focus/last.pt, step 3's network trained on
   with the loss on the object's latent cells weighted 5x (its exports are replaced by step 5's)
5. training.train_dit --stage shape  -> resources/models/diffusion_models/reelgraph-tiny_dit.safetensors,
   step 4's network trained on with shape partners: every clip paired with the same clip in
   another shape, fed the same noisy input at high noise, their predictions' difference fitted
   to their targets' difference (it encodes the partner clips once, into data.pt)
6. training.evaluate                 -> the held-out figures, also written to training/runs/eval.json

The defaults are the bundled weights' recipe in one schedule per network (the bundled weights came
from a few resumed runs with the same data and losses; MODEL_CARD.md lists them). Step counts fix
the learning-rate schedules; the minute budgets only stop a run early, so a slower machine needs a
second invocation to reach the same step. `--fresh` moves old checkpoints aside first.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from training.common import RUNS, STAGE_RUNS


def stage(args: list[str]) -> None:
    cmd = [sys.executable, "-m", *args]
    print("$ " + " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, check=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--vae-steps", type=int, default=3750)
    ap.add_argument("--vae-minutes", type=float, default=80.0)
    ap.add_argument("--coarse-steps", type=int, default=12000)
    ap.add_argument("--coarse-minutes", type=float, default=45.0)
    ap.add_argument("--fine-steps", type=int, default=16000)
    ap.add_argument("--fine-minutes", type=float, default=120.0)
    ap.add_argument("--focus-steps", type=int, default=14000)
    ap.add_argument("--focus-minutes", type=float, default=100.0)
    ap.add_argument("--shape-steps", type=int, default=10000)
    ap.add_argument("--shape-minutes", type=float, default=75.0)
    ap.add_argument("--clips", type=int, default=2400, help="DiT training clips, encoded once")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--fresh", action="store_true",
                    help="move training/runs/{vae,dit,dit_fine,dit_focus,dit_shape} aside first")
    ap.add_argument("--skip-eval", action="store_true")
    args = ap.parse_args()
    if args.fresh:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for name in ("vae", *STAGE_RUNS.values()):
            if (RUNS / name).exists():
                (RUNS / name).rename(RUNS / f"{name}-old-{stamp}")
    threads = ["--threads", str(args.threads)]
    stage(["training.train_vae", "--steps", str(args.vae_steps), "--minutes", str(args.vae_minutes),
           "--lr", "2e-4", *threads])
    stage(["training.train_dit", "--stage", "coarse", "--steps", str(args.coarse_steps), "--batch", "16",
           "--minutes", str(args.coarse_minutes), "--clips", str(args.clips), *threads])
    stage(["training.train_dit", "--stage", "fine", "--steps", str(args.fine_steps), "--batch", "8",
           "--minutes", str(args.fine_minutes), "--clips", str(args.clips), "--export-every", "1000",
           *threads])
    stage(["training.train_dit", "--stage", "focus", "--steps", str(args.focus_steps), "--batch", "8",
           "--lr", "1.5e-4", "--minutes", str(args.focus_minutes), "--clips", str(args.clips),
           "--export-every", "1000", *threads])
    stage(["training.train_dit", "--stage", "shape", "--steps", str(args.shape_steps), "--batch", "8",
           "--lr", "1.5e-4", "--minutes", str(args.shape_minutes), "--clips", str(args.clips),
           "--export-every", "1000", *threads])
    if not args.skip_eval:
        stage(["training.evaluate", "--json", str(RUNS / "eval.json")])


if __name__ == "__main__":
    main()
