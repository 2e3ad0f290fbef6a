"""Reading JSON the user did not necessarily write: bounded, strict, and never a foreign exception.

Workflow, matrix and config files may come from anyone. Read here, a file:
- must be a regular file (not /dev/zero, a FIFO or a folder) of at most `max_bytes`; it is read
  with a bounded read, so a huge file is refused without being loaded;
- must be UTF-8 JSON whose objects have no duplicate keys (JSON parsers keep the last one
  silently, so two nodes with the same id would merge into one);
- may nest containers at most `MAX_DEPTH` deep: the one depth limit for every entry point, far
  above any real graph and far below what copying or hashing a value can recurse through.
Every problem is a `JsonFileError` with a message that names what is wrong.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

MAX_DEPTH = 64
MAX_WORKFLOW_BYTES = 256 << 20  # a 100,000-node graph is about 15 MB
MAX_SMALL_FILE_BYTES = 64 << 20  # matrices and settings


class JsonFileError(ValueError):
    """A JSON file or text that cannot be used; the message says why."""


def read_text_file(path: str | Path, max_bytes: int, what: str = "file") -> str:
    """The UTF-8 text of a regular file of at most `max_bytes`."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            if not stat.S_ISREG(mode):
                raise JsonFileError(f"the {what} is not a regular file")
            data = f.read(max_bytes + 1)
    except OSError as exc:
        raise JsonFileError(f"cannot read the {what}: {exc.strerror or exc}") from None
    if len(data) > max_bytes:
        raise JsonFileError(f"the {what} is larger than {max_bytes >> 20} MiB; "
                            "is it the right file?")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JsonFileError(f"the {what} is not UTF-8 text (byte {exc.start})") from None


def loads(text: str | bytes, max_depth: int = MAX_DEPTH) -> Any:
    """Strict JSON: duplicate keys and deep nesting are errors."""
    try:
        value = json.loads(text, object_pairs_hook=_unique_keys)
    except _DuplicateKey as exc:
        raise JsonFileError(f"the key {exc.key!r} appears twice in one object; keep one") from None
    except RecursionError:
        raise JsonFileError(f"nested more than {max_depth} levels deep") from None
    except (ValueError, TypeError) as exc:
        raise JsonFileError(f"not valid JSON: {exc}") from None
    check_depth(value, max_depth)
    return value


def check_depth(value: Any, max_depth: int = MAX_DEPTH) -> None:
    """Raise JsonFileError if containers nest deeper than `max_depth` (iterative: no recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > max_depth:
            raise JsonFileError(f"nested more than {max_depth} levels deep")
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values() if isinstance(v, (dict, list)))
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item if isinstance(v, (dict, list)))


class _DuplicateKey(ValueError):
    def __init__(self, key: str):
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return obj
