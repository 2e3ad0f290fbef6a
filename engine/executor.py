"""The executor: plan a run (engine.planner), then do exactly what the plan says.

Per node of the plan's scope, in topological order: a node planned `not_needed` is not touched; a
`cached` one is read from the cache (checksum verified); an `executed` one runs with a fresh
ExecutionContext; a `bypassed` one passes an input through. Values are released as soon as their
last reader has finished, so long graphs do not pin every video in memory.

Invariants:
- A failure never loses work: every node that finished is cached before the failing one ran, so a
  re-run resumes from there.
- Exactly one RunFinished event closes every run that got past validation (an invalid run gets one
  too, then WorkflowError is raised to an in-process caller).
- A cache read that fails after planning (entry evicted by another process, damaged on disk,
  output files deleted) is not an error: that node runs after all, and so does whatever it needs
  that has no value yet.
- The interrupt flag is checked before each node and by nodes inside their loops.
- Nothing here imports torch: a fully cached re-run never pays for it; the device is resolved the
  first time a node asks for it.
"""

from __future__ import annotations

import functools
import os
import platform
import tempfile
import time
import traceback
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable

from engine import gc_control
from engine.cache import NullCache, ResultCache
from engine.context import ExecutionContext, InterruptFlag
from engine.document import Workflow, workflow_from_json
from engine.errors import Interrupted, NodeError, NodeExecutionError, WorkflowError
from engine.events import (EventSink, LogMessage, NodeCached, NodeDone, NodeFailed, NodeProgress,
                           NodeSkipped, NodeStarted, ProgressThrottle, RunFinished, RunStarted,
                           null_sink)
from engine.file_identity import FileHasher
from engine.input_files import locate_input_file
from engine.memory import oom
from engine.planner import Plan, Planner
from engine.registry import NodeRegistry
from engine.run_api import (CachePolicy, LogEntry, LogLevel, NodeRecord, NodeStatus, RunError,
                            RunReport, RunRequest, RunStatus)
from engine.sockets import SocketType


class Executor:
    """Runs workflows. Owns nothing global: registry, cache and folders are injected."""

    def __init__(self, registry: NodeRegistry, cache: ResultCache | None = None, *,
                 device: Any = None, model_paths: Any = None, settings: dict[str, Any] | None = None,
                 temp_dir: Path | None = None, hasher: FileHasher | None = None):
        self.registry = registry
        self.cache = cache if cache is not None else ResultCache(disk_dir=None)
        self._device = device
        self.model_paths = model_paths
        self.settings = dict(settings or {})
        self.temp_dir = Path(temp_dir or tempfile.mkdtemp(prefix="reelgraph-"))
        self.hasher = hasher or FileHasher()
        self._environment: dict[str, Any] | None = None
        self.planner = Planner(registry, self._fingerprint, self.environment)
        # Called in-process as observer(run_id, node_id, outputs) right after a node's NodeDone or
        # NodeCached event, with its output values; a worker turns them into display summaries
        # for the studio. It must not raise into the run (failures are ignored).
        self.output_observer: Callable[[str, str, dict[str, Any]], None] | None = None

    # ---- environment ---------------------------------------------------------------------
    @property
    def device(self) -> Any:
        """The torch.device models run on (resolved, importing torch, on first use)."""
        if self._device is None:
            from engine.devices import pick_device

            self._device = pick_device(self.settings.get("device") or None)
        return self._device

    def environment(self) -> dict[str, Any]:
        """What enters every cache key besides the graph: device kind and library versions."""
        if self._environment is None:
            from engine.environment import describe

            env = describe(str(self._device) if self._device is not None else
                           str(self.settings.get("device") or ""))
            self._environment = env.to_json()
        return self._environment

    # ---- planning --------------------------------------------------------------------------
    def plan(self, workflow: Workflow, targets: Iterable[str] | None = None,
             output_dir: str | Path | None = None, use_cache: bool = True) -> Plan:
        """The plan of a run (raises WorkflowError if the workflow cannot run)."""
        out_dir = self._output_dir(output_dir)
        return self.planner.plan(workflow, targets, str(out_dir),
                                 self.cache.present if use_cache else None)

    def _output_dir(self, output_dir: str | Path | None) -> Path:
        return _resolved(str(output_dir or self.settings.get("output_dir") or "output"), os.getcwd())

    # ---- running ---------------------------------------------------------------------------
    def run(self, request: RunRequest | Workflow | dict[str, Any], *,
            targets: Iterable[str] | None = None, output_dir: str | Path | None = None,
            use_cache: bool = True, on_event: EventSink = null_sink,
            interrupt: InterruptFlag | None = None, run_id: str | None = None) -> RunReport:
        """Run a RunRequest (or a workflow with the same fields as keywords). Raises
        WorkflowError if the workflow is invalid, after closing the run with an `invalid`
        RunFinished; otherwise returns the report (node failures and interrupts are in it)."""
        if not isinstance(request, RunRequest):
            request = RunRequest(request, tuple(targets) if targets is not None else None,
                                 cache=CachePolicy.USE if use_cache else CachePolicy.OFF,
                                 output_dir=str(output_dir) if output_dir is not None else None,
                                 run_id=run_id)
        run_id = request.run_id or uuid.uuid4().hex[:12]
        started = time.perf_counter()
        cache = self.cache if request.use_cache else NullCache()
        out_dir = self._output_dir(request.output_dir)
        try:
            with gc_control.paused():
                workflow = self._prepare(request)
                plan = self.planner.plan(workflow, request.targets, str(out_dir),
                                         cache.present if request.use_cache else None)
        except WorkflowError as exc:
            exc.source = exc.source or request.source
            report = RunReport.refused(run_id, exc.problems, str(exc))
            report.seconds = time.perf_counter() - started
            on_event(RunFinished(run_id, RunStatus.INVALID, report, str(exc)))
            raise
        report = RunReport(run_id)
        with gc_control.paused():
            runner = _Run(self, cache, workflow, plan, out_dir, on_event,
                          interrupt or InterruptFlag(), report)
            runner.approved_endpoints = tuple(request.approved_endpoints)
            runner.announce()
        try:
            runner.execute_all()  # the collector stays on: freezing here measured slower
        except Interrupted as exc:
            report.status = RunStatus.INTERRUPTED
            report.error = RunError(str(exc), exc.node_id,
                                    workflow.nodes[exc.node_id].type if exc.node_id else None)
        except NodeExecutionError as exc:
            report.status = RunStatus.FAILED
            report.error = RunError(exc.message, exc.node_id, exc.node_type, exc.traceback_text)
        except Exception as exc:  # an engine bug (or an I/O failure outside any node): the run
            # still closes with a report, so no front end is left waiting
            report.status = RunStatus.FAILED
            report.error = RunError(f"internal error: {type(exc).__name__}: {exc}",
                                    traceback=traceback.format_exc())
        runner.close_records()
        report.values = {t: runner.values[t] for t in plan.targets if t in runner.values}
        report.seconds = time.perf_counter() - started
        on_event(RunFinished(run_id, report.status, report.detached(),
                             str(report.error.message) if report.error else ""))
        return report

    def _prepare(self, request: RunRequest) -> Workflow:
        workflow = request.workflow
        if isinstance(workflow, dict):
            # the executor never changes a Workflow, so sharing the request's data is safe
            workflow = workflow_from_json(workflow, source=request.source, copy_data=False)
        workflow = workflow.flattened()  # subgraph instances run as their inner nodes (engine.subgraphs)
        if request.overrides:
            from engine.overrides import apply_overrides

            workflow = apply_overrides(workflow, list(request.overrides), self.registry)
        return workflow

    # ---- files -----------------------------------------------------------------------------
    def _fingerprint(self, file_kind: str, value: str) -> Any:
        """The content identity of the file an input names (None when it does not resolve)."""
        if not value:
            if file_kind == "input" or self.model_paths is None:
                return None
            try:  # nothing chosen: the node may fall back to what the folder offers
                return [[name, self._content_hash(self.model_paths.resolve(file_kind, name))]
                        for name in self.model_paths.list(file_kind)]
            except Exception:
                return None
        path = self.resolve_file(file_kind, value)
        return self._content_hash(path) if path is not None else None

    def _content_hash(self, path: Path) -> str | None:
        try:
            return self.hasher.sha256(path)
        except OSError:
            return None

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
    """State of one run: values in flight, readers left per value, progress bookkeeping."""

    def __init__(self, executor: Executor, cache: ResultCache, workflow: Workflow, plan: Plan,
                 out_dir: Path, on_event: EventSink, interrupt: InterruptFlag, report: RunReport):
        self.ex, self.cache, self.wf, self.plan = executor, cache, workflow, plan
        self.sigs = plan.signatures
        self.out_dir, self.emit, self.interrupt = out_dir, on_event, interrupt
        self.report = report
        self.values: dict[str, dict[str, Any]] = {}
        self.incoming = plan.index.incoming
        self.targets = set(plan.targets)
        # how many planned readers each value still has; a value is dropped when it reaches 0
        self.readers: dict[str, int] = {}
        actions = plan.actions
        for nid in plan.scope:
            if actions[nid] is NodeStatus.EXECUTED or actions[nid] is NodeStatus.BYPASSED:
                for parent in plan.index.parents.get(nid, ()):
                    self.readers[parent] = self.readers.get(parent, 0) + 1
        self.throttle = ProgressThrottle()
        self.cached_records = _SharedRecords(NodeStatus.CACHED)
        self.approved_endpoints: tuple[str, ...] = ()
        self.cache_dir = Path(executor.settings.get("cache_dir") or executor.temp_dir)
        self._workflow_json: dict[str, Any] | None = None  # built once, only if a node runs
        self.provenance: dict[str, Any] = run_provenance(executor)
        self.total = max(1, sum(1 for nid in plan.scope if actions[nid] is not NodeStatus.NOT_NEEDED))
        self.finished = 0

    @property
    def workflow_json(self) -> dict[str, Any]:
        if self._workflow_json is None:
            self._workflow_json = self.wf.to_json()
        return self._workflow_json

    def announce(self) -> None:
        plan, nodes, records = self.plan, self.wf.nodes, self.report.nodes
        # what this run will read counts as in use from the start, so a model loaded early in
        # the run never evicts one the run reads later
        self.cache.begin_run([self.sigs[nid] for nid in plan.scope if plan.actions[nid] is _CACHED])
        idle = _SharedRecords(NodeStatus.NOT_NEEDED)
        for nid in plan.scope:
            if plan.actions[nid] is NodeStatus.NOT_NEEDED:
                records[nid] = idle[nodes[nid].type]
        self.emit(RunStarted(self.report.run_id, node_ids=plan.order,
                             plan={nid: plan.actions[nid].value for nid in plan.scope}))
        if self.ex.cache.disk_error and self.cache is self.ex.cache:
            self.log(None, LogLevel.WARNING, self.ex.cache.disk_error)
        for target, reason in plan.skipped.items():
            node_type = nodes[target].type
            records[target] = NodeRecord(node_type, NodeStatus.SKIPPED, reason=reason)
            self.emit(NodeSkipped(self.report.run_id, target, node_type, reason))

    def overall(self, fraction: float = 0.0) -> float:
        return min(1.0, (self.finished + fraction) / self.total)

    # ---- the walk ----------------------------------------------------------------------------
    def execute_all(self) -> None:
        actions, interrupt = self.plan.actions, self.interrupt
        for nid in self.plan.scope:
            action = actions[nid]
            if action is _NOT_NEEDED:
                continue
            if interrupt.is_set():
                raise Interrupted(nid)
            if action is _CACHED:
                if not self.read_cached(nid, planned=True):
                    self.recover(nid)
            elif action is _BYPASSED:
                self.bypass(nid)
            else:
                self.execute(nid)
            self.finished += 1
            if action is not _CACHED:
                self.release_inputs(nid)

    def release_inputs(self, nid: str) -> None:
        readers = self.readers
        for parent in self.plan.index.parents.get(nid, ()):
            left = readers.get(parent, 0) - 1
            readers[parent] = left
            if left <= 0 and parent not in self.targets:
                self.values.pop(parent, None)

    def recover(self, nid: str) -> None:
        """`nid` was planned as cached but its entry is gone: run it, reading or running first
        every node it needs that has no value now (in topological order)."""
        self.total += 1
        to_run, stack = {nid}, [nid]
        while stack:
            for parent in self.plan.index.parents.get(stack.pop(), ()):
                if parent in self.values or parent in to_run:
                    continue
                if self.wf.nodes[parent].mode != "bypass" and self.read_cached(parent):
                    continue
                to_run.add(parent)
                stack.append(parent)
                self.total += 1
        parents = self.plan.index.parents
        for node in to_run:  # what the recovered nodes read, so it is released after them
            for parent in parents.get(node, ()):
                self.readers[parent] = self.readers.get(parent, 0) + 1
        for other in self.plan.scope:
            if other in to_run:
                if self.interrupt.is_set():
                    raise Interrupted(other)
                self.bypass(other) if self.wf.nodes[other].mode == "bypass" else self.execute(other)
                self.release_inputs(other)
                if other != nid:
                    self.finished += 1

    # ---- one node ----------------------------------------------------------------------------
    def read_cached(self, nid: str, planned: bool = False) -> bool:
        """Serve `nid` from the cache; False when it is not there (any more). `planned`: the
        planner already knows the node is cacheable."""
        node_type = self.wf.nodes[nid].type
        if not planned and not self.ex.registry.spec(node_type).cacheable:
            return False
        entry = self.cache.get(self.sigs[nid], warn=functools.partial(self.log, nid, _WARNING))
        if entry is None:
            return False
        files = entry.get("files") if type(entry) is dict else None
        if files and not all(Path(f).exists() for f in files):
            self.log(nid, LogLevel.INFO, "its output files were moved or deleted; running it again")
            return False
        self.values[nid] = entry["outputs"]
        self.record_models(nid, self.values[nid])
        if files:
            self.report.outputs.extend(files)
            self.report.nodes[nid] = NodeRecord(node_type, _CACHED, files=tuple(files))
        else:
            self.report.nodes[nid] = self.cached_records[node_type]
        self.emit(NodeCached(self.report.run_id, nid, node_type, self.overall(1.0)))
        self.observe(nid)
        return True

    def bypass(self, nid: str) -> None:
        """A bypassed node passes, for each output, the first linked input of the same type."""
        spec = self.ex.registry.spec(self.wf.nodes[nid].type)
        inputs = self.gather_inputs(nid, spec)
        linked = self.incoming.get(nid) or {}
        outputs = {}
        for ospec in spec.outputs:
            source = next((i for i in spec.inputs if i.type == ospec.type and i.name in linked), None)
            if source is None:
                message = (f"bypassed, but no linked input of type {ospec.type.value} can stand "
                           f"in for output {ospec.name!r}; un-bypass it or link one")
                self.report.nodes[nid] = NodeRecord(spec.name, NodeStatus.FAILED, reason=message)
                self.emit(NodeFailed(self.report.run_id, nid, spec.name, message, ""))
                raise NodeExecutionError(nid, spec.name, message)
            outputs[ospec.name] = inputs[source.name]
        self.values[nid] = outputs
        self.report.nodes[nid] = NodeRecord(spec.name, NodeStatus.BYPASSED)
        self.emit(NodeDone(self.report.run_id, nid, spec.name, 0.0, self.overall(1.0)))
        self.observe(nid)

    def execute(self, nid: str) -> None:
        node_cls = self.ex.registry.get(self.wf.nodes[nid].type)
        spec = node_cls.spec
        inputs = self.gather_inputs(nid, spec)
        ctx = self.make_context(nid, spec.name)
        self.emit(NodeStarted(self.report.run_id, nid, spec.name, self.overall()))
        t0 = time.perf_counter()
        try:
            outputs = check_outputs(spec, node_cls.execute(ctx, **inputs))
        except Interrupted:
            ctx.release_claims()
            self.report.nodes[nid] = NodeRecord(spec.name, NodeStatus.INTERRUPTED,
                                                time.perf_counter() - t0)
            raise
        except Exception as exc:
            ctx.release_claims()
            message = str(exc) if isinstance(exc, NodeError) else f"{type(exc).__name__}: {exc}"
            if not isinstance(exc, NodeError) and oom.is_out_of_memory(exc):
                message = oom.out_of_memory_message(exc, spec.name)
                oom.recover()  # idle device copies go; models in the RAM tier stay loaded
            if isinstance(exc, NodeError) and exc.input:
                message = f"input {exc.input!r}: {message}"
            tb = traceback.format_exc()
            self.report.nodes[nid] = NodeRecord(spec.name, NodeStatus.FAILED,
                                                time.perf_counter() - t0, reason=message)
            self.emit(NodeFailed(self.report.run_id, nid, spec.name, message, tb))
            raise NodeExecutionError(nid, spec.name, message, tb) from exc
        seconds = time.perf_counter() - t0
        files = [str(p) for p in ctx.files]
        self.values[nid] = outputs
        self.record_models(nid, outputs)
        if spec.cacheable and not ctx.keep_out_of_cache:
            self.cache.put(self.sigs[nid], {"outputs": outputs, "files": files}, seconds,
                           warn=functools.partial(self.log, nid, _WARNING))
        elif spec.cacheable:
            self.cache.discard(self.sigs[nid])  # a result kept from before must not stand in
        self.report.outputs.extend(files)
        self.report.nodes[nid] = NodeRecord(spec.name, NodeStatus.EXECUTED, seconds, tuple(files))
        self.emit(NodeDone(self.report.run_id, nid, spec.name, seconds, self.overall(1.0), files))
        self.observe(nid)

    def observe(self, nid: str) -> None:
        observer = self.ex.output_observer
        if observer is not None:
            try:
                observer(self.report.run_id, nid, self.values[nid])
            except Exception:  # a display summary must never fail a run
                pass

    def gather_inputs(self, nid: str, spec: Any) -> dict[str, Any]:
        literal = self.wf.nodes[nid].inputs
        linked = self.incoming.get(nid) or {}
        values = self.values
        inputs: dict[str, Any] = {}
        for ispec in spec.inputs:
            link = linked.get(ispec.name)
            if link is not None:
                value = values[link.from_node].get(link.from_output)
            else:
                value = literal.get(ispec.name, ispec.default)
            if ispec.type is SocketType.FLOAT and type(value) is int:
                value = float(value)
            inputs[ispec.name] = value
        return inputs

    def make_context(self, nid: str, type_name: str) -> ExecutionContext:
        run_id = self.report.run_id

        def report_progress(fraction: float, message: str, preview: Any) -> None:
            if self.throttle.allow(nid, fraction, force=preview is not None):
                self.emit(NodeProgress(run_id, nid, fraction, self.overall(fraction), message, preview))

        def log(level: str, message: str) -> None:
            self.log(nid, _level(level), message)

        ex = self.ex
        return ExecutionContext(
            node_id=nid, node_type=type_name, run_id=run_id,
            device_source=lambda: ex.device, output_dir=self.out_dir, temp_dir=ex.temp_dir,
            cache_dir=self.cache_dir,
            interrupt=self.interrupt, report_progress=report_progress,
            workflow_source=lambda: self.workflow_json, model_paths=ex.model_paths,
            settings=ex.settings, provenance=self.provenance, log_sink=log,
            approved_endpoints=self.approved_endpoints)

    # ---- bookkeeping -------------------------------------------------------------------------
    def log(self, nid: str | None, level: LogLevel, message: str) -> None:
        self.report.log.append(LogEntry(level, message, nid))
        self.emit(LogMessage(self.report.run_id, level, message, nid))

    def close_records(self) -> None:
        """Nodes planned but never reached (the run stopped first) are `pending`."""
        records, nodes = self.report.nodes, self.wf.nodes
        pending = _SharedRecords(NodeStatus.PENDING)
        for nid in self.plan.scope:
            if nid not in records:
                records[nid] = pending[nodes[nid].type]

    def record_models(self, nid: str, outputs: dict[str, Any]) -> None:
        """Note every loaded model (anything with a ModelInfo `info`) for the outputs' provenance."""
        for value in outputs.values():
            # `provenance_info`: what a derived model adds (a LoRA'd DiT names its LoRA file)
            info = getattr(value, "provenance_info", None) or getattr(value, "info", None)
            if info is not None and hasattr(info, "family") and hasattr(info, "path"):
                self.provenance.setdefault("models", {})[nid] = {
                    "path": Path(info.path).name, "family": info.family,
                    "sha256": getattr(info, "sha256", "")}


# enum members as module constants: `NodeStatus.X` is a descriptor lookup, and the walk does it
# for every node
_NOT_NEEDED, _CACHED, _BYPASSED = NodeStatus.NOT_NEEDED, NodeStatus.CACHED, NodeStatus.BYPASSED
_WARNING = LogLevel.WARNING


class _SharedRecords(dict):
    """One immutable record per node type for nodes that did nothing."""

    def __init__(self, status: NodeStatus):
        super().__init__()
        self.status = status

    def __missing__(self, node_type: str) -> NodeRecord:
        record = self[node_type] = NodeRecord(node_type, self.status)
        return record


@functools.lru_cache(maxsize=64)
def _resolved(folder: str, cwd: str) -> Path:
    """`folder` made absolute with symlinks resolved, remembered per (folder, cwd): resolving
    walks every path component on disk, and was 40 % of a small graph's fixed cost per run."""
    return (Path(cwd) / folder).resolve()


def check_outputs(spec: Any, outputs: Any) -> dict[str, Any]:
    if outputs is None and not spec.outputs:
        return {}
    if not isinstance(outputs, dict):
        raise TypeError(f"execute returned {type(outputs).__name__}, expected a dict of outputs")
    missing = [o.name for o in spec.outputs if o.name not in outputs]
    if missing:
        raise TypeError(f"execute did not return output(s) {missing}")
    return outputs


def run_provenance(executor: Executor) -> dict[str, Any]:
    """What made an output: versions and device. Models are added as the run loads them. The
    device is named lazily (resolving it imports torch) — the environment's kind stands in."""
    env = executor.environment()
    versions = env["versions"]
    return {"reelgraph": versions.get("reelgraph", ""), "torch": versions.get("torch", ""),
            "python": platform.python_version(), "device": env["device"], "models": {}}


def _level(level: str) -> LogLevel:
    try:
        return LogLevel(level)
    except ValueError:
        return LogLevel.INFO


__all__ = ["Executor", "Plan", "RunReport", "LogMessage"]
