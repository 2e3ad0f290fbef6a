"""Benchmark: wall time and peak memory of every example workflow on the bundled demo model.

    .venv/bin/python bench/demo_pipeline.py [--workflow text_to_video.json ...]

Each workflow runs in a fresh process ("cold": nothing cached, models loaded from disk), timed
from process start (imports included) and from the executor call alone; peak memory is the
process's maximum resident set size. Then, in one process, interpolate.json runs once and again
after changing only FrameInterpolate's multiplier (2 -> 3): only that node re-runs, and the
benchmark prints the re-run's time as a fraction of the cold run. Targets (printed, never
asserted): the default workflow (text_to_video.json) under 20 s cold; the re-run under 10 %.
Not a test: it prints ratios and figures.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

START = time.perf_counter()
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _executor(tmp: Path):
    from engine.config import Settings
    from engine.runtime import make_executor

    settings = Settings(cache_dir=str(tmp / "cache"), output_dir=str(tmp / "out"),
                        input_dir=str(tmp), device="cpu")
    return make_executor(settings, use_disk_cache=False)


def run_one(name: str) -> dict:
    """Run one workflow cold in this process; return its figures."""
    from engine.document import load_workflow

    with tempfile.TemporaryDirectory() as tmp:
        ex = _executor(Path(tmp))
        wf = load_workflow(REPO / "workflows" / name)
        t0 = time.perf_counter()
        report = ex.run(wf, output_dir=Path(tmp) / "out")
        run_s = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB on Linux
    slowest = sorted(((rec.seconds, k) for k, rec in report.nodes.items()), reverse=True)[:3]
    return {"workflow": name, "status": report.status.value, "run_s": round(run_s, 2),
            "process_s": round(time.perf_counter() - START, 2), "peak_mib": round(peak),
            "slowest_nodes": [(k, round(s, 2)) for s, k in slowest],
            "error": report.error.message if report.error else ""}


def rerun_interpolation() -> dict:
    """Cold run of interpolate.json, then a re-run with only the multiplier changed."""
    from engine.document import load_workflow

    with tempfile.TemporaryDirectory() as tmp:
        ex = _executor(Path(tmp))
        wf = load_workflow(REPO / "workflows" / "interpolate.json")
        t0 = time.perf_counter()
        first = ex.run(wf, output_dir=Path(tmp) / "out")
        cold = time.perf_counter() - t0
        wf.nodes["interpolate"].inputs["multiplier"] = 3
        t0 = time.perf_counter()
        second = ex.run(wf, output_dir=Path(tmp) / "out")
        warm = time.perf_counter() - t0
    reran = [k for k, rec in second.nodes.items() if rec.status.value == "executed"]
    return {"cold_s": round(cold, 2), "rerun_s": round(warm, 3), "ratio": round(warm / cold, 3),
            "status": [first.status.value, second.status.value], "nodes_executed": reran}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workflow", action="append", help="workflow file name(s) in workflows/")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one workflow, print JSON
    ap.add_argument("--rerun", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one)))
        return
    if args.rerun:
        print(json.dumps(rerun_interpolation()))
        return
    names = args.workflow or ["text_to_video.json", "image_to_video.json", "extend_video.json",
                              "connect_videos.json", "video_to_video.json", "interpolate.json"]
    print(f"{'workflow':<22} {'status':<7} {'cold run':>9} {'process':>9} {'peak RSS':>9}  slowest nodes")
    for name in names:
        out = subprocess.run([sys.executable, __file__, "--one", name], capture_output=True,
                             text=True, cwd=REPO)
        try:
            r = json.loads(out.stdout.strip().splitlines()[-1])
        except (IndexError, json.JSONDecodeError):
            print(f"{name:<22} crashed: {out.stderr.strip()[-400:]}")
            continue
        print(f"{name:<22} {r['status']:<7} {r['run_s']:>8.2f}s {r['process_s']:>8.2f}s "
              f"{r['peak_mib']:>6} MiB  {r['slowest_nodes']} {r['error']}")
        if name == "text_to_video.json":
            print(f"  default workflow cold (process incl. imports): {r['process_s']:.2f}s "
                  f"(target < 20 s: {'met' if r['process_s'] < 20 else 'NOT met'})")
    out = subprocess.run([sys.executable, __file__, "--rerun"], capture_output=True, text=True, cwd=REPO)
    try:
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"interpolate.json: cold {r['cold_s']}s, re-run after changing the multiplier "
              f"{r['rerun_s']}s = {100 * r['ratio']:.1f}% of cold (target < 10%: "
              f"{'met' if r['ratio'] < 0.1 else 'NOT met'}); re-ran: {r['nodes_not_cached']}")
    except (IndexError, json.JSONDecodeError):
        print(f"interpolation re-run crashed: {out.stderr.strip()[-400:]}")


if __name__ == "__main__":
    main()
