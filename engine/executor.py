"""The executor: validate, plan, and run only what the requested outputs need.

Plan: targets (given node ids, or every output node) -> their upstream closure -> validation of
that scope -> a deterministic topological order (networkx) -> signatures. Run: each node is either
served from the cache (`cached`), passed through (`bypass`), or executed with a fresh
ExecutionContext (`executed`). Intermediate values are released as soon as their last consumer
has run, so long graphs do not pin every video in memory.

Invariants:
- A failure never loses work: every node that finished is cached before the failing one ran, so a
  re-run resumes from there.
- Exactly one RunFinished event closes every run, whatever happened.
- The interrupt flag is checked before each node and by nodes inside their loops.
"""

from __future__ import annotations

import tempfile
import time
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import networkx as nx

from engine.cache import ResultCache
from engine.context import ExecutionContext, InterruptFlag
from engine.document import Workflow
from engine.errors import Interrupted, NodeError, NodeExecutionError, Problem, WorkflowError
from engine.events import (EventSink, LogMessage, NodeCached, NodeDone, NodeFailed, NodeProgress,
                           NodeQueued, NodeSkipped, NodeStarted, ProgressThrottle, RunFinished,
                           RunStarted, null_sink)
from engine.input_files import locate_input_file
from engine.registry import NodeRegistry
from engine.signature import compute_signatures, stat_fingerprint
from engine.sockets import SocketType
from engine.validation import check, dependency_graph, upstream_closure


@dataclass
class Plan:
    order: list[str]  # nodes to run, topologically sorted
    targets: list[str]
    skipped: dict[str, str] = field(default_factory=dict)  # target id -> reason


@dataclass
class RunReport:
    run_id: str
    status: str = "done"  # done | failed | interrupted
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)
    seconds: float = 0.0
    error: dict[str, Any] | None = None
    values: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)  # targets' outputs

    def to_json(self) -> dict[str, Any]:
        out = {"run_id": self.run_id, "status": self.status, "seconds": round(self.seconds, 4),
               "nodes": self.nodes, "outputs": self.outputs}
        if self.error:
            out["error"] = self.error
        return out


class Executor:
    """Runs workflows. Owns nothing global: registry, cache and folders are injected."""

    def __init__(self, registry: NodeRegistry, cache: ResultCache | None = None, *,
                 device: Any = None, model_paths: Any = None, settings: dict[str, Any] | None = None,
                 temp_dir: Path | None = None):
        self.registry = registry
        self.cache = cache if cache is not None else ResultCache(disk_dir=None)
        self.device = device if device is not None else _default_device()
        self.model_paths = model_paths
        self.settings = dict(settings or {})
        self.temp_dir = Path(temp_dir or tempfile.mkdtemp(prefix="reelgraph-"))

    # ---- planning --------------------------------------------------------------------------
    def plan(self, workflow: Workflow, targets: Iterable[str] | None = None) -> Plan:
        if targets is None:
            targets = [nid for nid, node in workflow.nodes.items()
                       if node.mode == "normal" and (spec := self.registry.spec(node.type))
                       and spec.is_output]
        targets = list(targets)
        missing = [t for t in targets if t not in workflow.nodes]
        if missing:
            raise WorkflowError([Problem("unknown_target", "no such node to run", t) for t in missing])
        graph = dependency_graph(workflow)
        skipped: dict[str, str] = {}
        runnable = []
        for target in targets:
            muted = sorted(n for n in upstream_closure(graph, [target])
                           if workflow.nodes[n].mode == "mute")
            if muted:
                skipped[target] = f"depends on muted node {muted[0]!r}"
            else:
                runnable.append(target)
        scope = upstream_closure(graph, runnable)
        check(workflow, self.registry, scope)
        order = list(nx.lexicographical_topological_sort(graph.subgraph(scope)))
        return Plan(order, runnable, skipped)

    # ---- running ---------------------------------------------------------------------------
    def run(self, workflow: Workflow, *, targets: Iterable[str] | None = None,
            output_dir: str | Path | None = None, use_cache: bool = True,
            on_event: EventSink = null_sink, interrupt: InterruptFlag | None = None,
            run_id: str | None = None) -> RunReport:
        """Run the graph. Raises WorkflowError if invalid; otherwise returns a report (never raises
        for node failures or interrupts: they are in the report and the events)."""
        run_id = run_id or uuid.uuid4().hex[:12]
        interrupt = interrupt or InterruptFlag()
        started = time.perf_counter()
        report = RunReport(run_id)
        try:
            plan = self.plan(workflow, targets)
        except WorkflowError as exc:
            on_event(RunFinished(run_id, status="invalid", error=str(exc),
                                 report={"problems": [p.to_json() for p in exc.problems]}))
            raise
        out_dir = Path(output_dir or self.settings.get("output_dir") or "output").resolve()
        output_nodes = {nid for nid in plan.order if self.registry.spec(workflow.nodes[nid].type).is_output}
        signatures = compute_signatures(workflow, self.registry, plan.order, self._fingerprint,
                                        extra={nid: str(out_dir) for nid in output_nodes})
        on_event(RunStarted(run_id, node_ids=list(plan.order)))
        for target, reason in plan.skipped.items():
            report.nodes[target] = {"type": workflow.nodes[target].type, "status": "skipped",
                                    "seconds": 0.0, "reason": reason}
            on_event(NodeSkipped(run_id, target, workflow.nodes[target].type, reason))
        for nid in plan.order:
            on_event(NodeQueued(run_id, nid, workflow.nodes[nid].type))

        runner = _Run(self, workflow, plan, signatures, out_dir, use_cache, on_event, interrupt,
                      report)
        try:
            runner.execute_all()
        except Interrupted as exc:
            report.status = "interrupted"
            report.error = {"node_id": exc.node_id, "message": str(exc)}
        except NodeExecutionError as exc:
            report.status = "failed"
            report.error = {"node_id": exc.node_id, "node_type": exc.node_type,
                            "message": exc.message, "traceback": exc.traceback_text}
        report.values = {t: runner.values[t] for t in plan.targets if t in runner.values}
        report.seconds = time.perf_counter() - started
        error_text = report.error["message"] if report.error else ""
        on_event(RunFinished(run_id, status=report.status, report=report.to_json(), error=error_text))
        return report

    def _fingerprint(self, file_kind: str, value: str) -> Any:
        if not value:
            if file_kind == "input" or self.model_paths is None:
                return None
            try:  # nothing chosen: the node may fall back to what the folder offers
                return [[name, stat_fingerprint(self.model_paths.resolve(file_kind, name))]
                        for name in self.model_paths.list(file_kind)]
            except Exception:
                return None
        path = self.resolve_file(file_kind, value)
        return stat_fingerprint(path) if path is not None else None

    def resolve_file(self, file_kind: str, value: str) -> Path | None:
        if file_kind == "input":
            return locate_input_file(value, self.settings.get("input_dir"))
        if self.model_paths is None:
            return None
        try:
            return self.model_paths.resolve(file_kind, value)
        except Exception:
            return None


class _Run:
    """State of one run: values in flight, consumer counts, progress bookkeeping."""

    def __init__(self, executor: Executor, workflow: Workflow, plan: Plan, signatures: dict[str, str],
                 out_dir: Path, use_cache: bool, on_event: EventSink, interrupt: InterruptFlag,
                 report: RunReport):
        self.ex, self.wf, self.plan, self.sigs = executor, workflow, plan, signatures
        self.out_dir, self.use_cache, self.emit, self.interrupt = out_dir, use_cache, on_event, interrupt
        self.report = report
        self.values: dict[str, dict[str, Any]] = {}
        self.incoming = workflow.incoming()
        self.remaining_consumers = {nid: 0 for nid in plan.order}
        for link in workflow.links:
            if link.to_node in self.remaining_consumers and link.from_node in self.remaining_consumers:
                self.remaining_consumers[link.from_node] += 1
        self.throttle = ProgressThrottle()
        self.workflow_json = workflow.to_json()  # once per run: nodes embed it in their outputs
        self.provenance: dict[str, Any] = run_provenance(executor.device)
        self.total = max(1, len(plan.order))
        self.finished = 0

    def overall(self, fraction: float = 0.0) -> float:
        return min(1.0, (self.finished + fraction) / self.total)

    def execute_all(self) -> None:
        for nid in self.plan.order:
            if self.interrupt.is_set():
                raise Interrupted(nid)
            self.execute_one(nid)
            self.finished += 1
            self.release_inputs(nid)

    def release_inputs(self, nid: str) -> None:
        for link in self.incoming.get(nid, {}).values():
            src = link.from_node
            if src in self.remaining_consumers:
                self.remaining_consumers[src] -= 1
                if self.remaining_consumers[src] <= 0 and src not in self.plan.targets:
                    self.values.pop(src, None)

    def execute_one(self, nid: str) -> None:
        node = self.wf.nodes[nid]
        node_cls = self.ex.registry.get(node.type)
        spec = node_cls.spec
        key = self.sigs[nid]
        inputs = self.gather_inputs(nid, spec)
        if node.mode == "bypass":
            self.values[nid] = self.bypass_outputs(nid, spec, inputs)
            self.report.nodes[nid] = {"type": spec.name, "status": "bypassed", "seconds": 0.0}
            self.emit(NodeDone(self.report.run_id, nid, spec.name, 0.0, self.overall()))
            return
        if self.use_cache and spec.cacheable:
            cached = self.ex.cache.get(key)
            if cached is not None and _files_exist(cached):
                self.values[nid] = cached["outputs"]
                self.record_models(nid, self.values[nid])
                files = cached.get("files", [])
                self.report.outputs.extend(files)
                self.report.nodes[nid] = {"type": spec.name, "status": "cached", "seconds": 0.0}
                if files:
                    self.report.nodes[nid]["files"] = files
                self.emit(NodeCached(self.report.run_id, nid, spec.name, self.overall(1.0)))
                return

        ctx = self.make_context(nid, spec.name)
        self.emit(NodeStarted(self.report.run_id, nid, spec.name, self.overall()))
        t0 = time.perf_counter()
        try:
            outputs = node_cls.execute(ctx, **inputs)
            outputs = self.check_outputs(nid, spec, outputs)
        except Interrupted:
            raise
        except Exception as exc:
            message = str(exc) if isinstance(exc, NodeError) else f"{type(exc).__name__}: {exc}"
            if isinstance(exc, NodeError) and exc.input:
                message = f"input {exc.input!r}: {message}"
            tb = traceback.format_exc()
            self.report.nodes[nid] = {"type": spec.name, "status": "failed",
                                      "seconds": round(time.perf_counter() - t0, 6)}
            self.emit(NodeFailed(self.report.run_id, nid, spec.name, message, tb))
            raise NodeExecutionError(nid, spec.name, message, tb) from exc
        seconds = time.perf_counter() - t0
        files = [str(p) for p in ctx.files]
        self.values[nid] = outputs
        self.record_models(nid, outputs)
        if spec.cacheable:
            self.ex.cache.put(key, {"outputs": outputs, "files": files}, seconds)
        self.report.outputs.extend(files)
        self.report.nodes[nid] = {"type": spec.name, "status": "executed", "seconds": round(seconds, 6)}
        if files:
            self.report.nodes[nid]["files"] = files
        self.emit(NodeDone(self.report.run_id, nid, spec.name, seconds, self.overall(1.0), files))

    def gather_inputs(self, nid: str, spec) -> dict[str, Any]:
        node = self.wf.nodes[nid]
        linked = self.incoming.get(nid, {})
        inputs: dict[str, Any] = {}
        for ispec in spec.inputs:
            link = linked.get(ispec.name)
            if link is not None:
                value = self.values[link.from_node].get(link.from_output)
            else:
                value = node.inputs.get(ispec.name, ispec.default)
            if ispec.type == SocketType.FLOAT and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            inputs[ispec.name] = value
        return inputs

    def bypass_outputs(self, nid: str, spec, inputs: dict[str, Any]) -> dict[str, Any]:
        """A bypassed node passes, for each output, the first linked input of the same type."""
        linked = self.incoming.get(nid, {})
        outputs = {}
        for ospec in spec.outputs:
            source = next((i for i in spec.inputs if i.type == ospec.type and i.name in linked), None)
            if source is None:
                raise NodeExecutionError(nid, spec.name, f"bypassed, but no linked input of type "
                                         f"{ospec.type.value} can stand in for output "
                                         f"{ospec.name!r}; un-bypass it or link one")
            outputs[ospec.name] = inputs[source.name]
        return outputs

    def check_outputs(self, nid: str, spec, outputs: Any) -> dict[str, Any]:
        if outputs is None and not spec.outputs:
            return {}
        if not isinstance(outputs, dict):
            raise TypeError(f"execute returned {type(outputs).__name__}, expected a dict of outputs")
        missing = [o.name for o in spec.outputs if o.name not in outputs]
        if missing:
            raise TypeError(f"execute did not return output(s) {missing}")
        return outputs

    def make_context(self, nid: str, type_name: str) -> ExecutionContext:
        run_id = self.report.run_id

        def report_progress(fraction: float, message: str, preview: Any) -> None:
            if self.throttle.allow(nid, fraction, force=preview is not None):
                self.emit(NodeProgress(run_id, nid, fraction, self.overall(fraction), message, preview))

        return ExecutionContext(
            node_id=nid, node_type=type_name, run_id=run_id, device=self.ex.device,
            output_dir=self.out_dir, temp_dir=self.ex.temp_dir,
            cache_dir=Path(self.ex.settings.get("cache_dir") or self.ex.temp_dir),
            interrupt=self.interrupt, report_progress=report_progress,
            workflow_json=self.workflow_json, model_paths=self.ex.model_paths,
            settings=self.ex.settings, provenance=self.provenance)

    def record_models(self, nid: str, outputs: dict[str, Any]) -> None:
        """Note every loaded model (anything with a ModelInfo `info`) for the outputs' provenance."""
        for value in outputs.values():
            info = getattr(value, "info", None)
            if info is not None and hasattr(info, "family") and hasattr(info, "path"):
                self.provenance.setdefault("models", {})[nid] = {
                    "path": Path(info.path).name, "family": info.family,
                    "sha256": getattr(info, "sha256", "")}


def run_provenance(device: Any) -> dict[str, Any]:
    """What made an output: versions and device. Models are added as the run loads them."""
    import platform

    import torch

    from engine import __version__

    return {"reelgraph": __version__, "torch": torch.__version__, "python": platform.python_version(),
            "device": str(device), "models": {}}


def _files_exist(cached: Any) -> bool:
    files = cached.get("files", []) if isinstance(cached, dict) else []
    return all(Path(f).exists() for f in files)


def _default_device() -> Any:
    try:
        from engine.devices import pick_device  # written alongside the model loaders

        return pick_device()
    except ImportError:
        import torch

        return torch.device("cuda" if torch.cuda.is_available() else "cpu")


__all__ = ["Executor", "Plan", "RunReport", "LogMessage"]
