"""Edit verbs for subgraphs, mixed into app.editing.GraphEditor: collapse the selection into one
node, expand it back, add a reusable subgraph from the user's library, save one to it.

The graph surgery is engine.subgraphs' (pure functions on a Workflow copy); here it becomes undo
commands on the live model, so only the nodes involved are redrawn and one Undo reverts it all."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from engine import subgraphs
from engine.errors import WorkflowError
from app.commands import AddNodesCommand, RemoveNodesCommand, SetSubgraphsCommand

if TYPE_CHECKING:
    from app.graph_model import GraphModel


class SubgraphEditsMixin:
    model: "GraphModel"

    def collapse_to_subgraph(self, node_ids: list[str], title: str = "Subgraph") -> tuple[str | None, str]:
        """Fold the nodes into one subgraph node; (its id, "") or (None, why not)."""
        ids = [n for n in node_ids if n in self.workflow.nodes]
        if not ids:
            return None, "select the nodes to collapse"
        try:
            new, inst = subgraphs.collapse(self.workflow, ids, self.model.registry, title)
        except WorkflowError as exc:
            return None, exc.problems[0].message if exc.problems else str(exc)
        links = [l for l in new.links if inst in (l.from_node, l.to_node)]
        self.stack.beginMacro(f"Collapse {len(ids)} nodes to a subgraph")
        self.stack.push(RemoveNodesCommand(self.model, ids))
        self.stack.push(SetSubgraphsCommand(self.model, new.subgraphs))
        self.stack.push(AddNodesCommand(self.model, [(new.nodes[inst], new.layout["nodes"][inst])], links))
        self.stack.endMacro()
        return inst, ""

    def expand_subgraph(self, node_id: str) -> list[str]:
        """Replace a subgraph node by its nodes, placed where it stood; their ids."""
        node = self.workflow.nodes.get(node_id)
        if node is None or node.subgraph is None:
            return []
        new, ids = subgraphs.expand(self.workflow, node_id, keep_ids=True,
                                    offset=self.model.pos_of(node_id))
        fresh = set(ids.values())
        subgraphs.prune_definitions(new)
        nodes = [(new.nodes[n], new.layout["nodes"][n]) for n in ids.values()]
        links = [l for l in new.links if l.from_node in fresh or l.to_node in fresh]
        self.stack.beginMacro("Expand subgraph")
        self.stack.push(RemoveNodesCommand(self.model, [node_id]))
        self.stack.push(AddNodesCommand(self.model, nodes, links))
        self.stack.push(SetSubgraphsCommand(self.model, new.subgraphs))
        self.stack.endMacro()
        return list(ids.values())

    def add_reusable(self, path: str | Path, pos: tuple[float, float]) -> str | None:
        """A node running the library subgraph saved at `path` (its definitions copied in)."""
        try:
            name, source = subgraphs.load_reusable(Path(path))
        except WorkflowError:
            return None
        wf = self.workflow.copy()
        def_id = subgraphs.import_definitions(wf, source, source.nodes["node"].subgraph)
        inst = source.nodes["node"]
        inst.id, inst.subgraph = subgraphs.fresh_name(subgraphs.slug(name), set(wf.nodes)), def_id
        inst.title = name
        self.stack.beginMacro(f"Add {name}")
        self.stack.push(SetSubgraphsCommand(self.model, wf.subgraphs))
        self.stack.push(AddNodesCommand(self.model, [(inst, {"pos": [round(pos[0]), round(pos[1])]})]))
        self.stack.endMacro()
        return inst.id

    def save_reusable(self, node_id: str, name: str, folder: Path | None = None) -> Path | None:
        """Save the subgraph of `node_id` to the user's library (the palette lists it)."""
        node = self.workflow.nodes.get(node_id)
        if node is None or node.subgraph is None or not name.strip():
            return None
        return subgraphs.save_reusable(self.workflow, node.subgraph, name.strip(), folder)
