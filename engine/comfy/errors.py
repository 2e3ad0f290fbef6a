"""The one error the importer raises: the input is not a usable ComfyUI workflow."""

from __future__ import annotations


class ComfyImportError(ValueError):
    """The file is not a ComfyUI workflow, or one too damaged to import. `problems` holds one
    line per problem (the CLI prints each, exit code 2); `source` names the file."""

    def __init__(self, problems: str | list[str], source: str | None = None):
        self.problems = [problems] if isinstance(problems, str) else list(problems) or ["unknown problem"]
        self.source = source
        head = f"{source}: " if source else ""
        super().__init__(head + "; ".join(self.problems))
