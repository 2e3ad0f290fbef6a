"""Planning a run: from the requested outputs backwards, decide what each node will do.

    targets -> scope (targets + what they depend on) -> validation of the scope -> topological
    order -> signatures -> demand: walking the order backwards from the targets, a node is
      executed   if its value is needed and its result is not cached (its inputs become needed),
      cached     if its value is needed and its result is in the cache (its inputs are not),
      bypassed   if its value is needed and it is bypassed (its inputs become needed),
      not_needed otherwise — a loader behind cached consumers never touches its file.

Signatures never depend on results, so the whole plan is known before anything runs. The plan is
a prediction: an entry can vanish or fail its checksum between planning and reading; the executor
then runs that node after all, with whatever it needs (engine.executor).

Planning a workflow again costs little: validation, the order and the signatures are remembered
per workflow content (one JSON serialisation and hash of the graph, no per-node Python work), and
only the file identities are checked again (a replaced model file still changes the keys).
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from engine.document import Workflow
from engine.errors import Problem, WorkflowError
from engine.graph_index import GraphIndex
from engine.registry import NodeRegistry
from engine.run_api import NodeStatus
from engine.signature import FileFingerprint, compute_signatures, digest
from engine.validation import check

_MEMO_SIZE = 8


@dataclass
class Plan:
    targets: list[str]  # targets that will run
    skipped: dict[str, str]  # target -> why it cannot run (behind a muted node)
    scope: list[str]  # every node the targets depend on, in topological order
    signatures: dict[str, str]
    actions: dict[str, NodeStatus]  # planned status of every scope node
    index: GraphIndex = field(repr=False)
    output_nodes: frozenset[str] = frozenset()

    @property
    def order(self) -> list[str]:
        """The nodes that do something (run, are read from the cache, or pass through), in order."""
        return [nid for nid in self.scope if self.actions[nid] is not NodeStatus.NOT_NEEDED]

    def with_action(self, action: NodeStatus) -> list[str]:
        return [nid for nid in self.scope if self.actions[nid] is action]


@dataclass
class _Static:
    """What depends only on the workflow's content, the targets and the output folder."""

    targets: list[str]
    skipped: dict[str, str]
    scope: list[str]
    signatures: dict[str, str]
    output_nodes: frozenset[str]
    file_inputs: list[tuple[str, str, Any]]  # (file kind, value, fingerprint used)
    # the link index: it depends only on the content, so a workflow equal to the one it was
    # built for (same nodes, same links) shares it
    index: GraphIndex
    cacheable: frozenset[str] = frozenset()  # scope nodes whose result may come from the cache


class Planner:
    def __init__(self, registry: NodeRegistry, fingerprint: FileFingerprint,
                 environment: Callable[[], Any]):
        self.registry = registry
        self.fingerprint = fingerprint
        self.environment = environment
        self._memo: OrderedDict[str, _Static] = OrderedDict()
        self._environment_digest = ""

    def plan(self, workflow: Workflow, targets: Iterable[str] | None, output_dir: str,
             cached: Callable[[Iterable[str]], set[str]] | None) -> Plan:
        """Raises WorkflowError (and nothing else) for an invalid scope or an unknown target.
        `cached(keys)` says which signatures have a cache entry; None plans every needed node to
        execute (the cache is off)."""
        targets = None if targets is None else list(targets)  # an iterator would be used up
        memo_key = _content_key(workflow, targets, output_dir)
        static = self._memo.get(memo_key) if memo_key else None
        if static is not None and not self._files_changed(static):
            self._memo.move_to_end(memo_key)
        else:
            static = self._plan_static(workflow, GraphIndex(workflow), targets, output_dir)
            if memo_key:
                self._memo[memo_key] = static
                while len(self._memo) > _MEMO_SIZE:
                    self._memo.popitem(last=False)
        actions = self._demand(workflow, static.index, static, cached)
        return Plan(list(static.targets), dict(static.skipped), static.scope, static.signatures,
                    actions, static.index, static.output_nodes)

    # ---- static part -----------------------------------------------------------------------
    def _plan_static(self, workflow: Workflow, index: GraphIndex, targets: Iterable[str] | None,
                     output_dir: str) -> _Static:
        registry, nodes = self.registry, workflow.nodes
        runnable, skipped = resolve_targets(workflow, registry, index, targets)
        scope_set = index.upstream(runnable)
        order, left_over = index.topological_order(scope_set)
        check(workflow, registry, scope_set, index=index, check_cycles=bool(left_over))
        output_nodes = frozenset(nid for nid in order if registry.spec(nodes[nid].type).is_output)
        file_inputs: list[tuple[str, str, Any]] = []

        def remember(kind: str, value: str) -> Any:
            identity = self.fingerprint(kind, value)
            file_inputs.append((kind, value, identity))
            return identity

        signatures = compute_signatures(workflow, registry, order, remember,
                                        extra={nid: output_dir for nid in output_nodes},
                                        environment=self._environment_key(),
                                        incoming=index.incoming)
        cacheable = frozenset(nid for nid in order if nodes[nid].mode != "bypass"
                              and registry.spec(nodes[nid].type).cacheable)
        return _Static(runnable, skipped, order, signatures, output_nodes, file_inputs, index,
                       cacheable)

    def _environment_key(self) -> str:
        if not self._environment_digest:
            self._environment_digest = digest(self.environment())
        return self._environment_digest

    def _files_changed(self, static: _Static) -> bool:
        return any(self.fingerprint(kind, value) != identity
                   for kind, value, identity in static.file_inputs)

    # ---- demand ----------------------------------------------------------------------------
    def _demand(self, workflow: Workflow, index: GraphIndex, static: _Static,
                cached: Callable[[Iterable[str]], set[str]] | None) -> dict[str, NodeStatus]:
        nodes, sigs, cacheable = workflow.nodes, static.signatures, static.cacheable
        present = cached(sigs[nid] for nid in cacheable) if cached is not None else set()
        needed = set(static.targets)
        actions: dict[str, NodeStatus] = {}
        parents = index.parents
        not_needed, bypassed, read, run = (NodeStatus.NOT_NEEDED, NodeStatus.BYPASSED,
                                           NodeStatus.CACHED, NodeStatus.EXECUTED)
        for nid in reversed(static.scope):
            if nid not in needed:
                actions[nid] = not_needed
            elif nid in cacheable and sigs[nid] in present:
                actions[nid] = read
            else:
                actions[nid] = bypassed if nodes[nid].mode == "bypass" else run
                needed.update(parents.get(nid, ()))
        return actions


def resolve_targets(workflow: Workflow, registry: NodeRegistry, index: GraphIndex,
                    targets: Iterable[str] | None) -> tuple[list[str], dict[str, str]]:
    """(targets that can run, {target: why not}) — default targets are the normal output nodes.
    Raises WorkflowError for an unknown target, or a graph with nodes but no output to run."""
    nodes = workflow.nodes
    if targets is None:
        targets = [nid for nid, node in nodes.items()
                   if node.mode == "normal" and (spec := registry.spec(node.type)) and spec.is_output]
        if not targets and any(node.mode == "normal" for node in nodes.values()):
            raise WorkflowError(Problem("no_output", "the workflow has no output node (SaveImage, "
                                        "SaveVideo, Preview, ...) to run; add one"))
    targets = list(dict.fromkeys(targets))
    missing = [t for t in targets if t not in nodes]
    if missing:
        raise WorkflowError([Problem("unknown_target", "no such node to run", t) for t in missing])
    muted = [nid for nid, node in nodes.items() if node.mode == "mute"]
    blocked = index.downstream(muted) if muted else set()
    skipped: dict[str, str] = {}
    runnable = []
    for target in targets:
        if target in blocked:
            first = sorted(n for n in index.upstream([target]) if nodes[n].mode == "mute")[0]
            skipped[target] = f"depends on muted node {first!r}"
        else:
            runnable.append(target)
    return runnable, skipped


def check_runnable(workflow: Workflow, registry: NodeRegistry,
                   targets: Iterable[str] | None = None) -> list[Problem]:
    """Every problem that would stop a run of `targets` (default: the output nodes), exactly as
    the executor's planning finds them, without computing keys or touching files."""
    index = GraphIndex(workflow)
    try:
        runnable, _ = resolve_targets(workflow, registry, index, targets)
    except WorkflowError as exc:
        return exc.problems
    from engine.validation import validate

    return validate(workflow, registry, index.upstream(runnable), index)


def _content_key(workflow: Workflow, targets: Iterable[str] | None, output_dir: str) -> str:
    """A hash of everything in the workflow that execution reads (never layout or titles), or ""
    when a value cannot be serialised (then nothing is remembered)."""
    graph = ([[nid, n.type, n.mode, n.inputs] for nid, n in workflow.nodes.items()],
             [[l.from_node, l.from_output, l.to_node, l.to_input] for l in workflow.links],
             None if targets is None else list(targets), output_dir)
    try:
        text = json.dumps(graph, separators=(",", ":"), ensure_ascii=False, allow_nan=True)
    except (TypeError, ValueError):
        return ""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
