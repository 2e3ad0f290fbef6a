"""Batch throughput: jobs per minute for a 12-job matrix (6 prompts x 2 seeds) on the local pool
with 1 and 2 workers and on a local Ray instance with 2 actors, and how much of a job's time is
model loading on a worker's first job versus its later ones (models stay loaded between jobs).
Prints medians and ratios; never a test.

    .venv/bin/python bench/batch.py [--repeats N]

The text-to-video graph runs with the bundled demo model when resources/models holds it;
otherwise with random Wan-architecture weights built here (a 17M-parameter DiT, a tiny VAE) and
the bundled all-MiniLM-L6-v2 text encoder: timings are real, the videos are noise.
Worker / actor start-up is measured separately and excluded from jobs per minute.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

PROMPTS = ["a red circle moving right on a black background",
           "a blue square moving left on a gray background",
           "a green triangle moving up on a white background",
           "a yellow circle moving down on a black background",
           "a white square moving right on a blue background",
           "a red triangle moving left on a gray background"]
SEEDS = [1, 2]
DEMO_DIT = "reelgraph-tiny_dit.safetensors"


def random_model_root(root: Path) -> None:
    """A models folder with random Wan 2.1-architecture weights sized so loading is visible."""
    import torch
    from diffusers import AutoencoderKLWan, WanTransformer3DModel

    from engine.models.safe_load import save_state_dict
    from engine.models.wan_dit import diffusers_to_original

    torch.manual_seed(0)
    vae = AutoencoderKLWan(base_dim=8, z_dim=16, dim_mult=[1, 2, 2], num_res_blocks=1,
                           temperal_downsample=[True, True])
    save_state_dict(vae.state_dict(), root / "vae" / "bench_vae.safetensors")
    # 4 heads of Wan's 128 = 512 wide, 4 blocks: ~17M parameters, ~68 MB in fp32
    dit = WanTransformer3DModel(num_attention_heads=4, attention_head_dim=128, in_channels=16,
                                out_channels=16, text_dim=384, freq_dim=256, ffn_dim=2048,
                                num_layers=4)
    save_state_dict(diffusers_to_original(dit.state_dict()),
                    root / "diffusion_models" / "bench_dit.safetensors",
                    metadata={"config": json.dumps({"num_attention_heads": 4})})


def random_model_workflow(path: Path) -> tuple[Path, list[str]]:
    from engine.document import Workflow

    wf = Workflow()
    wf.add_node("LoadTextEncoder", {}, node_id="encoder")  # the bundled MiniLM
    wf.add_node("TextEncode", {"prompt": PROMPTS[0], "negative_prompt": ""}, node_id="text")
    wf.add_node("LoadDiT", {"model": "bench_dit.safetensors"}, node_id="dit")
    wf.add_node("LoadVAE", {"vae": "bench_vae.safetensors"}, node_id="vae")
    wf.add_node("NoiseInit", {"width": 64, "height": 64, "frames": 9, "seed": 0, "fps": 8.0},
                node_id="noise")
    wf.add_node("DiTDenoise", {"steps": 4, "cfg": 3.0, "shift": 3.0, "sampler": "euler", "seed": 0},
                node_id="denoise")
    wf.add_node("VAEDecode", {}, node_id="decode")
    wf.add_node("SaveVideo", {"filename_prefix": "clip", "format": "mp4"}, node_id="save")
    for link in (("encoder", "encoder", "text", "encoder"), ("dit", "model", "denoise", "model"),
                 ("text", "conditioning", "denoise", "conditioning"), ("vae", "vae", "noise", "vae"),
                 ("noise", "latent", "denoise", "latent"), ("vae", "vae", "decode", "vae"),
                 ("denoise", "latent", "decode", "latent"), ("decode", "video", "save", "video")):
        wf.connect(*link)
    wf.save(path)
    return path, [f"text.prompt={json.dumps(PROMPTS)}", f"noise.seed={','.join(map(str, SEEDS))}"]


def choose_workflow(tmp: Path) -> tuple[Path, list[str], list[str], str]:
    demo = list((ROOT / "resources" / "models").rglob(DEMO_DIT))
    if demo:
        grid = [f"recaption.prompt={json.dumps(PROMPTS)}", f"noise.seed={','.join(map(str, SEEDS))}"]
        return ROOT / "workflows" / "text_to_video.json", grid, [str(ROOT / "resources" / "models")], \
            "workflows/text_to_video.json with the bundled reelgraph-tiny demo model"
    root = tmp / "models"
    random_model_root(root)
    path, grid = random_model_workflow(tmp / "bench_t2v.json")
    return path, grid, [str(root)], ("a text-to-video graph on random Wan weights (17M-param DiT); "
                                     "the demo model is not in resources/models yet")


def measure(kind: str, workers: int, workflow: Path, grid: list[str], roots: list[str],
            tmp: Path, threads: int | None = None) -> dict[str, float]:
    from engine.batch import build_jobs, parse_grid, prepare_tasks, read_manifest, run_batch
    from engine.config import Settings
    from engine.document import load_workflow
    from engine.registry import default_registry

    run_dir = Path(tempfile.mkdtemp(dir=tmp, prefix=f"{kind}{workers}-"))
    # a fresh cache per measurement: no job may reuse another configuration's results
    settings = Settings(cache_dir=str(run_dir / "cache"), model_roots=roots)
    tasks = prepare_tasks(load_workflow(workflow), build_jobs(None, parse_grid(grid)),
                          default_registry())
    t0 = time.perf_counter()
    if kind == "ray":
        from engine.batch.ray_executor import RayPool

        pool = RayPool(settings, workers=workers, retries=0)
    else:
        from engine.batch.local import LocalPool

        if threads:  # the pool leaves a user's OMP_NUM_THREADS alone; workers inherit it
            os.environ["OMP_NUM_THREADS"] = str(threads)
        pool = LocalPool(settings, workers=workers, retries=0)
    pool.start(wait=True)  # spawns the workers (with the environment of this moment)
    os.environ.pop("OMP_NUM_THREADS", None)
    startup = time.perf_counter() - t0
    try:
        t1 = time.perf_counter()
        summary = run_batch(tasks, run_dir / "out", pool)
        wall = time.perf_counter() - t1
    finally:
        pool.close()
    if summary.failed:
        raise SystemExit(f"{kind}: jobs failed: {summary.failed}")
    lines = (run_dir / "out" / "manifest.jsonl").read_text().splitlines()
    records = read_manifest(run_dir / "out" / "manifest.jsonl")
    order = [json.loads(line)["id"] for line in lines]  # finishing order
    first, later = [], []
    seen_workers: set[str] = set()
    for jid in order:
        rec = records[jid]
        loading = sum(n["seconds"] or 0.0 for n in rec.nodes.values()
                      if n["type"].startswith("Load") and n["status"] == "executed")
        (later if rec.worker in seen_workers else first).append((rec.seconds, loading))
        seen_workers.add(rec.worker)
    return {"startup_s": startup, "wall_s": wall, "jobs_per_min": len(tasks) / wall * 60,
            "job_s": statistics.median(s for s, _ in first + later),
            "first_job_s": statistics.median(s for s, _ in first),
            "later_job_s": statistics.median(s for s, _ in later),
            "first_load_s": statistics.median(l for _, l in first),
            "later_load_s": statistics.median(l for _, l in later),
            "first_load_share": statistics.median(l / s for s, l in first),
            "later_load_share": statistics.median(l / s for s, l in later)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="reelgraph-bench-batch-") as tmp_name:
        tmp = Path(tmp_name)
        workflow, grid, roots, what = choose_workflow(tmp)
        print(f"workflow: {what}; 12 jobs = {len(PROMPTS)} prompts x {len(SEEDS)} seeds; "
              f"{os.cpu_count()} CPU cores; medians of {args.repeats} repeat(s)")
        # (label, backend, workers, threads per worker): the pool's default leaves one core
        # spare (1 thread each here); "all cores" gives a single worker every core instead
        cores = os.cpu_count() or 1
        configs = [("local x1", "local", 1, None), ("local x1, all cores", "local", 1, cores),
                   ("local x2", "local", 2, None), ("ray x2", "ray", 2, None)]
        runs: dict[str, list[dict[str, float]]] = {label: [] for label, *_ in configs}
        for _ in range(args.repeats):  # round-robin, so drifting machine load hits every config
            for label, kind, workers, threads in configs:
                runs[label].append(measure(kind, workers, workflow, grid, roots, tmp, threads))
        results = {label: {k: statistics.median(r[k] for r in rs) for k in rs[0]}
                   for label, rs in runs.items()}
        print(f"\n{'config':<20}{'start-up s':>11}{'12 jobs s':>10}{'jobs/min':>10}{'job s':>8}"
              f"{'1st job s':>10}{'later s':>9}{'load 1st':>10}{'load later':>11}")
        for label, r in results.items():
            print(f"{label:<20}{r['startup_s']:>11.1f}{r['wall_s']:>10.2f}"
                  f"{r['jobs_per_min']:>10.1f}{r['job_s']:>8.2f}{r['first_job_s']:>10.2f}"
                  f"{r['later_job_s']:>9.2f}{r['first_load_share']:>9.0%}{r['later_load_share']:>10.0%}")
        one, one_all, two, ray = (results[k] for k in ("local x1", "local x1, all cores",
                                                       "local x2", "ray x2"))
        print(f"\nthroughput 2 workers / 1 worker: {two['jobs_per_min'] / one['jobs_per_min']:.2f}x; "
              f"1 worker on all cores / on 1: {one_all['jobs_per_min'] / one['jobs_per_min']:.2f}x; "
              f"ray x2 / local x2: {ray['jobs_per_min'] / two['jobs_per_min']:.2f}x")
        print(f"model loading, 1 worker: first job {one['first_load_s']:.2f} s of "
              f"{one['first_job_s']:.2f} s ({one['first_load_share']:.0%}); later jobs "
              f"{one['later_load_s']:.2f} s of {one['later_job_s']:.2f} s "
              f"({one['later_load_share']:.0%}); first job / later job: "
              f"{one['first_job_s'] / one['later_job_s']:.1f}x")


if __name__ == "__main__":  # the spawned workers re-import this module; only the parent runs it
    main()
