"""Adjacency of a workflow's links, built in one pass and shared by validation and planning.

Planning runs on every Run press and every batch job, so its cost per node must not grow with the
graph: the index is plain dicts built in O(links), the upstream walk and the topological sort are
O(nodes + links), and nothing here copies the workflow. networkx is imported only to name the
members of a cycle, which a valid graph never has.

Invariants:
- Only links whose two ends exist count as edges (a dangling link is validation's to report).
- `incoming[node][input]` is the link feeding that input; the last one wins, as in
  `Workflow.incoming`, and duplicates are validation's to report.
- `topological_order` is deterministic: ties are broken by the workflow's node order.
"""

from __future__ import annotations

from collections import deque
from typing import Iterable

from engine.document import Link, Workflow


class GraphIndex:
    def __init__(self, workflow: Workflow):
        nodes = workflow.nodes
        self.workflow = workflow
        self.incoming: dict[str, dict[str, Link]] = {}
        self.parents: dict[str, list[str]] = {}
        self.children: dict[str, list[str]] = {}
        for link in workflow.links:
            self.incoming.setdefault(link.to_node, {})[link.to_input] = link
        for nid, links in self.incoming.items():
            if nid not in nodes:
                continue
            # a node may read two outputs of one parent: one edge is enough
            parents = list(dict.fromkeys(l.from_node for l in links.values() if l.from_node in nodes))
            if parents:
                self.parents[nid] = parents
                for parent in parents:
                    self.children.setdefault(parent, []).append(nid)

    def links_into(self, node_id: str) -> dict[str, Link]:
        return self.incoming.get(node_id, _EMPTY)

    def upstream(self, targets: Iterable[str]) -> set[str]:
        """`targets` plus everything they depend on (cycles tolerated)."""
        return self._walk(targets, self.parents)

    def downstream(self, sources: Iterable[str]) -> set[str]:
        """`sources` plus everything that depends on them (cycles tolerated)."""
        return self._walk(sources, self.children)

    def _walk(self, start: Iterable[str], edges: dict[str, list[str]]) -> set[str]:
        nodes = self.workflow.nodes
        seen = {n for n in start if n in nodes}
        stack = list(seen)
        while stack:
            for other in edges.get(stack.pop(), ()):
                if other not in seen:
                    seen.add(other)
                    stack.append(other)
        return seen

    def topological_order(self, scope: set[str]) -> tuple[list[str], set[str]]:
        """(order, left_over): Kahn's algorithm over `scope`; `left_over` are the nodes on or
        behind a cycle (empty for a valid graph)."""
        indegree = {nid: 0 for nid in scope}
        for nid in scope:
            for parent in self.parents.get(nid, ()):
                if parent in indegree:
                    indegree[nid] += 1
        ready = deque(nid for nid in self.workflow.nodes if indegree.get(nid) == 0)
        order: list[str] = []
        while ready:
            nid = ready.popleft()
            order.append(nid)
            for child in self.children.get(nid, ()):
                if child in indegree:
                    indegree[child] -= 1
                    if indegree[child] == 0:
                        ready.append(child)
        left_over = set(scope).difference(order) if len(order) != len(scope) else set()
        return order, left_over

    def cycles(self, nodes: set[str]) -> list[list[str]]:
        """The cycles among `nodes` (each a sorted list of members), via networkx's strongly
        connected components; only called when a topological sort left nodes over."""
        import networkx as nx

        graph = nx.DiGraph()
        graph.add_nodes_from(nodes)
        graph.add_edges_from((p, n) for n in nodes for p in self.parents.get(n, ()) if p in nodes)
        return sorted(sorted(c) for c in nx.strongly_connected_components(graph)
                      if len(c) > 1 or any(graph.has_edge(n, n) for n in c))


_EMPTY: dict[str, Link] = {}
