"""Where a user media file named in a graph lives: one rule for the nodes that read it and for the
cache keys that fingerprint it.

An absolute path is taken as is. A relative path is read from the input folder (settings
"input_dir"); the app's own samples (resources/samples/...) resolve from the repository root
whatever the input folder is, so the example workflows run from any working directory.
"""

from __future__ import annotations

from pathlib import Path

from engine.models.paths import REPO_ROOT


def locate_input_file(value: str, input_dir: str | Path | None) -> Path:
    """The path `value` names (it may not exist: callers check and report)."""
    path = Path(value.strip()).expanduser()
    if path.is_absolute():
        return path
    candidate = Path(input_dir or ".") / path
    if not candidate.is_file() and (REPO_ROOT / path).is_file():
        return REPO_ROOT / path
    return candidate
