"""Tidy up: place nodes in columns by their depth in the graph, stacked without overlaps.

A pure function from links and node sizes to positions, used by Edit > Tidy Up (undoable, one
MoveNodes command). Column k holds the nodes whose longest chain of upstream nodes (within the set
being arranged) has length k, except that a node with no inputs (a loader, a prompt) sits in the
column just before its first consumer, so short wires stay short. Inside a column, nodes are
ordered by the mean height of the nodes feeding them (fewer crossings), then by their previous
top-to-bottom order, so a tidy-up never scrambles what the artist already ordered.
"""

from __future__ import annotations

from engine.document import Link

COLUMN_GAP = 70.0
ROW_GAP = 36.0


def arrange(node_ids: list[str], links: list[Link], sizes: dict[str, tuple[float, float]],
            positions: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
    """New top-left positions for `node_ids`; the arrangement starts at their current top-left."""
    chosen = set(node_ids)
    parents: dict[str, set[str]] = {n: set() for n in node_ids}
    for link in links:
        if link.from_node in chosen and link.to_node in chosen and link.from_node != link.to_node:
            parents[link.to_node].add(link.from_node)
    depth: dict[str, int] = {}

    def depth_of(node: str, visiting: frozenset[str] = frozenset()) -> int:
        if node in depth:
            return depth[node]
        if node in visiting:  # a cycle (invalid, but never loop forever over it)
            return 0
        d = max((depth_of(p, visiting | {node}) + 1 for p in parents[node]), default=0)
        depth[node] = d
        return d

    for node in node_ids:
        depth_of(node)
    children: dict[str, set[str]] = {n: set() for n in node_ids}
    for node, ps in parents.items():
        for p in ps:
            children[p].add(node)
    for node in node_ids:  # sources as late as their first consumer allows
        if not parents[node] and children[node]:
            depth[node] = max(0, min(depth[c] for c in children[node]) - 1)
    columns: dict[int, list[str]] = {}
    for node in node_ids:
        columns.setdefault(depth[node], []).append(node)
    x0 = min((positions[n][0] for n in node_ids), default=0.0)
    y0 = min((positions[n][1] for n in node_ids), default=0.0)
    result: dict[str, tuple[float, float]] = {}
    x = x0
    for k in sorted(columns):
        def order(n: str) -> tuple[float, float, float]:
            placed = [result[p][1] for p in parents[n] if p in result]
            mean = sum(placed) / len(placed) if placed else positions[n][1]
            return (mean, positions[n][1], positions[n][0])
        column = sorted(columns[k], key=order)
        y = y0
        for node in column:
            result[node] = (round(x), round(y))
            y += sizes[node][1] + ROW_GAP
        x += max(sizes[n][0] for n in column) + COLUMN_GAP
    return result
