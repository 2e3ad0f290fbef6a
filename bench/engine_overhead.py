"""Executor overhead, and what a re-run costs. Prints medians and ratios; never a test.

    .venv/bin/python bench/engine_overhead.py            # everything (about 10 minutes)
    .venv/bin/python bench/engine_overhead.py --quick    # sizes up to 10,000, no subprocess runs

1. Per-node overhead of the in-process executor on graphs of trivial nodes, from 10 to 100,000
   nodes, in two shapes: a chain (each node reads the previous one) and a shallow graph (N
   sources feeding N targets). "cold" is a run in which nothing is cached (each repeat changes
   every source's value, so every key is new) on a warm executor — as in the studio's worker or
   a batch worker; "cached" is the same run again (every target is served from the cache).
   Overhead = wall time minus the nodes' own time. The fixed cost of a run (plan bookkeeping,
   the report, the disk index query) is measured on the 10-node chain and printed apart.
2. Validation per node at the same sizes: `validate()` alone, and loading from JSON text too.
3. A graph with one expensive node (0.5 s): a re-run after a downstream-only change.
4. The default workflow through the CLI in two processes sharing one cache folder: the second
   run (a restart) executes nothing and loads no model; its in-run time over the first's.
5. The same for a batch: a second batch into a new folder with the warm disk tier.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.cache import ResultCache  # noqa: E402
from engine.document import Link, Workflow, loads_workflow  # noqa: E402
from engine.executor import Executor  # noqa: E402
from engine.registry import default_registry  # noqa: E402
from engine.validation import validate  # noqa: E402

SIZES = (10, 100, 1_000, 10_000, 100_000)


def chain(n: int, seed: float = 0.0) -> tuple[Workflow, list[str]]:
    wf = Workflow()
    wf.add_node("Float", {"value": seed}, node_id="n0")
    for i in range(1, n):
        wf.add_node("MathFloat", {"b": 1.0, "operation": "add"}, node_id=f"n{i}")
        # append, not connect(): connect() replaces a link by scanning them all (O(n) each)
        wf.links.append(Link(f"n{i - 1}", "value" if i == 1 else "result", f"n{i}", "a"))
    return wf, [f"n{n - 1}"]


def shallow(n: int, seed: float = 0.0) -> tuple[Workflow, list[str]]:
    """n/2 sources, each feeding one of n/2 targets."""
    wf = Workflow()
    half = max(1, n // 2)
    for i in range(half):
        wf.add_node("Float", {"value": seed + i}, node_id=f"s{i}")
        wf.add_node("MathFloat", {"b": 1.0}, node_id=f"t{i}")
        wf.links.append(Link(f"s{i}", "value", f"t{i}", "a"))
    return wf, [f"t{i}" for i in range(half)]


def overhead(ex: Executor, wf: Workflow, targets: list[str]) -> tuple[float, float]:
    """(wall seconds, overhead seconds per node) of one run."""
    t0 = time.perf_counter()
    report = ex.run(wf, targets=targets)
    wall = time.perf_counter() - t0
    assert report.ok, report.error
    node_time = sum(rec.seconds for rec in report.nodes.values())
    return wall, (wall - node_time) / len(wf.nodes)


def sweep(registry, sizes: tuple[int, ...], tmp: Path, rounds: int = 3) -> None:
    """Sizes are measured round-robin (every round visits every size), so a machine that speeds
    up or slows down during the sweep shifts all sizes alike; small sizes repeat within a round
    until about 100,000 nodes have run, and each figure is the median over all of it."""
    print("\n1. executor overhead per node (µs), medians; cached = same run again; "
          "validate = validate() alone, load+validate = from JSON text")
    cells: dict[tuple[str, int], dict[str, list[float]]] = {}
    executors = {(name, n): Executor(registry, ResultCache(disk_dir=tmp / f"{name}{n}"), temp_dir=tmp)
                 for name in ("chain", "shallow") for n in sizes}
    builders = {"chain": chain, "shallow": shallow}
    for (name, n), ex in executors.items():
        overhead(ex, *builders[name](n, seed=-1.0))  # warm the executor (first-use costs)
    seed = 0.0
    for _ in range(rounds):
        for (name, n), ex in executors.items():
            cell = cells.setdefault((name, n), {"cold": [], "cached": [], "validate": [], "load": []})
            for _ in range(max(1, 20_000 // n)):
                seed += 1000.0
                wf, targets = builders[name](n, seed=seed)
                cell["cold"].append(overhead(ex, wf, targets)[1])
                cell["cached"].append(overhead(ex, wf, targets)[1])
                text = wf.dumps()
                t0 = time.perf_counter()
                loaded = loads_workflow(text)
                t1 = time.perf_counter()
                assert not validate(loaded, registry)
                t2 = time.perf_counter()
                cell["validate"].append((t2 - t1) / n)
                cell["load"].append((t2 - t0) / n)
    print(f"{'shape':<8} {'nodes':>8} {'cold':>7} {'cached':>7} {'cached/cold':>12} "
          f"{'validate':>9} {'load+validate':>14}")
    for (name, n), cell in cells.items():
        c, h, v, lv = (statistics.median(cell[k]) * 1e6 for k in ("cold", "cached", "validate", "load"))
        print(f"{name:<8} {n:>8,} {c:>7.1f} {h:>7.1f} {h / c:>12.3f} {v:>9.1f} {lv:>14.1f}")
    for name in ("chain", "shallow"):
        colds = [statistics.median(cells[(name, n)]["cold"]) for n in sizes]
        print(f"{name}: largest/smallest per-node cold cost {max(colds) / min(colds):.2f}x over "
              f"{sizes[0]:,}-{sizes[-1]:,} nodes; over {sizes[1]:,}-{sizes[-1]:,}: "
              f"{max(colds[1:]) / min(colds[1:]):.2f}x")
    small = executors[("chain", sizes[0])]
    fixed = []
    for i in range(200):  # a 1-node graph: what a run costs besides its nodes
        wf, targets = chain(1, seed=1e9 + i)
        t0 = time.perf_counter()
        small.run(wf, targets=targets)
        fixed.append(time.perf_counter() - t0)
    print(f"fixed cost of a run (1-node graph, cold): median {statistics.median(fixed) * 1e6:.0f} µs")


def expensive_graph() -> Workflow:
    wf = Workflow()
    wf.add_node("Delay", {"value": 1, "steps": 20, "step_seconds": 0.025}, node_id="expensive")
    wf.add_node("ImageGradient", {"width": 512, "height": 512}, node_id="grad")
    wf.add_node("ImageGradient", {"width": 512, "height": 512, "direction": "radial"}, node_id="grad2")
    wf.add_node("ImageBlend", {}, node_id="blend")
    wf.connect("grad", "image", "blend", "image_a")
    wf.connect("grad2", "image", "blend", "image_b")
    return wf


def downstream_change(registry, tmp: Path) -> None:
    wf = expensive_graph()
    cold, warm = [], []
    for i in range(5):
        ex = Executor(registry, ResultCache(disk_dir=tmp / f"exp_{i}"), temp_dir=tmp)
        t0 = time.perf_counter()
        ex.run(wf, targets=["expensive", "blend"])
        cold.append(time.perf_counter() - t0)
        wf.nodes["blend"].inputs["factor"] = 0.1 + 0.1 * i  # downstream-only change
        t0 = time.perf_counter()
        report = ex.run(wf, targets=["expensive", "blend"])
        warm.append(time.perf_counter() - t0)
        assert report.nodes["expensive"].status == "cached"
    ratio = statistics.median(warm) / statistics.median(cold)
    print(f"\n3. one expensive node (0.5 s) + image nodes: cold {statistics.median(cold) * 1e3:.1f} ms, "
          f"re-run after a downstream change {statistics.median(warm) * 1e3:.1f} ms, ratio {ratio:.3f}")


def cli(args: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, str(ROOT / "main.py"), *args], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    return time.perf_counter() - t0


def restart_rerun(tmp: Path, repeats: int = 3) -> None:
    print("\n4. default workflow, CLI, two processes sharing one cache folder (medians of "
          f"{repeats})")
    rows = []
    for r in range(repeats):
        env = {**os.environ, "REELGRAPH_CACHE_DIR": str(tmp / f"cli_cache{r}"), "HF_HUB_OFFLINE": "1"}
        out = tmp / f"cli_out{r}"
        walls, seconds, statuses = [], [], []
        for _ in range(2):
            walls.append(cli(["run", "text_to_video", "--out", str(out), "--quiet"], env))
            report = json.loads((out / "report.json").read_text())
            seconds.append(report["seconds"])
            statuses.append(sorted({n["status"] for n in report["nodes"].values()}))
        rows.append((walls, seconds, statuses))
    cold_wall = statistics.median(r[0][0] for r in rows)
    warm_wall = statistics.median(r[0][1] for r in rows)
    cold_s = statistics.median(r[1][0] for r in rows)
    warm_s = statistics.median(r[1][1] for r in rows)
    print(f"   first run: {cold_wall:.2f} s wall, {cold_s:.2f} s in-run; restart re-run: "
          f"{warm_wall:.2f} s wall, {warm_s:.3f} s in-run (statuses {rows[0][2][1]})")
    print(f"   in-run ratio {warm_s / cold_s:.4f} (target <= 0.10), wall ratio {warm_wall / cold_wall:.3f}")


def batch_rerun(tmp: Path) -> None:
    env = {**os.environ, "REELGRAPH_CACHE_DIR": str(tmp / "batch_cache"), "HF_HUB_OFFLINE": "1"}
    grid = ["--grid", "noise.seed=1,2,3", "--quiet"]
    result = []
    for name in ("b1", "b2"):  # a new folder each time, so the manifest skips nothing
        wall = cli(["batch", "text_to_video", "--out", str(tmp / name), *grid], env)
        lines = [json.loads(l) for l in (tmp / name / "manifest.jsonl").read_text().splitlines()]
        executed = sum(1 for l in lines for n in l["nodes"].values() if n["status"] == "executed")
        result.append((wall, statistics.median(l["seconds"] for l in lines), executed))
    (w1, s1, e1), (w2, s2, e2) = result
    print(f"\n5. batch of 3 jobs, second batch into a new folder with the warm disk tier: job in-run "
          f"median {s1:.2f} s -> {s2:.3f} s (ratio {s2 / s1:.4f}), nodes executed {e1} -> {e2}, "
          f"batch wall {w1:.1f} s -> {w2:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    registry = default_registry()
    tmp = Path(tempfile.mkdtemp(prefix="reelgraph-bench-"))
    sweep(registry, SIZES[:4] if args.quick else SIZES, tmp)
    downstream_change(registry, tmp)
    if not args.quick:
        restart_rerun(tmp)
        batch_rerun(tmp)


if __name__ == "__main__":
    main()
