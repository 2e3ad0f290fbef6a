"""Executor overhead: per-node cost on a 1,000-node graph of trivial nodes, and how much a cached
re-run saves on a graph with one expensive node. Prints medians and ratios; never a test.

    .venv/bin/python bench/engine_overhead.py
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.cache import ResultCache  # noqa: E402
from engine.document import Workflow  # noqa: E402
from engine.executor import Executor  # noqa: E402
from engine.registry import default_registry  # noqa: E402

REPEATS = 7


def trivial_chain(n: int) -> Workflow:
    wf = Workflow()
    wf.add_node("Float", {"value": 0.0}, node_id="n0")
    for i in range(1, n):
        wf.add_node("MathFloat", {"b": 1.0, "operation": "add"}, node_id=f"n{i}")
        wf.connect(f"n{i - 1}", "value" if i == 1 else "result", f"n{i}", "a")
    return wf


def expensive_graph() -> Workflow:
    wf = Workflow()
    wf.add_node("Delay", {"value": 1, "steps": 20, "step_seconds": 0.025}, node_id="expensive")
    wf.add_node("ImageGradient", {"width": 512, "height": 512}, node_id="grad")
    wf.add_node("ImageGradient", {"width": 512, "height": 512, "direction": "radial"}, node_id="grad2")
    wf.add_node("ImageBlend", {}, node_id="blend")
    wf.connect("grad", "image", "blend", "image_a")
    wf.connect("grad2", "image", "blend", "image_b")
    return wf


def main() -> None:
    registry = default_registry()
    tmp = Path(tempfile.mkdtemp(prefix="reelgraph-bench-"))
    n = 1000
    wf = trivial_chain(n)
    target = [f"n{n - 1}"]

    full, overheads, cached = [], [], []
    for _ in range(REPEATS):
        ex = Executor(registry, ResultCache(disk_dir=tmp / "c1"), temp_dir=tmp)
        t0 = time.perf_counter()
        report = ex.run(wf, targets=target, use_cache=False)
        wall = time.perf_counter() - t0
        node_time = sum(v["seconds"] for v in report.nodes.values())
        full.append(wall)
        overheads.append((wall - node_time) / n)
        ex.run(wf, targets=target)  # fill the cache
        t0 = time.perf_counter()
        ex.run(wf, targets=target)
        cached.append(time.perf_counter() - t0)
    assert report.values[target[0]]["result"] == n - 1
    print(f"1,000 trivial nodes: full run median {statistics.median(full) * 1e3:.1f} ms, "
          f"executor overhead median {statistics.median(overheads) * 1e3:.3f} ms/node "
          f"(target < 0.2 ms), fully cached re-run {statistics.median(cached) * 1e3:.1f} ms "
          f"({statistics.median(cached) / statistics.median(full) * 1e3 / 1e3:.2f}x of full)")

    wf2 = expensive_graph()
    cold, warm = [], []
    for i in range(REPEATS):
        ex = Executor(registry, ResultCache(disk_dir=tmp / f"c2_{i}"), temp_dir=tmp)
        t0 = time.perf_counter()
        ex.run(wf2)
        ex.run(wf2, targets=["expensive", "blend"])
        cold.append(time.perf_counter() - t0)
        wf2.nodes["blend"].inputs["factor"] = 0.1 + 0.1 * i  # downstream-only change
        t0 = time.perf_counter()
        report = ex.run(wf2, targets=["expensive", "blend"])
        warm.append(time.perf_counter() - t0)
        assert report.nodes["expensive"]["status"] == "cached"
    ratio = statistics.median(warm) / statistics.median(cold)
    print(f"one expensive node (0.5 s) + image nodes: full run median {statistics.median(cold) * 1e3:.1f} ms, "
          f"re-run after a downstream change {statistics.median(warm) * 1e3:.1f} ms, ratio {ratio:.3f}")


if __name__ == "__main__":
    main()
