"""The job matrix of a batch: rows of overrides read from a JSONL or CSV file and/or the cartesian
product of `--grid NODE.INPUT=v1,v2,...` axes, turned into jobs with stable ids.

Matrix files:
- JSONL (`.jsonl`, `.ndjson`): one JSON object per line, e.g.
  `{"id": "fox", "prompt.text": "a red fox", "noise.seed": 7}`; overrides may also be given as
  `"overrides": {"prompt.text": ...}` or `"overrides": ["prompt.text=a red fox", ...]`.
- JSON (`.json`): a list of such objects.
- CSV (`.csv`): a header row of `NODE.INPUT` columns and an optional `id` column; an empty cell
  leaves that input as the workflow has it.

Invariants:
- Every override is kept in the `NODE.INPUT=RAW` text form of `run --set` (non-string JSON values
  are written back as JSON text), so the same setting from a CSV cell, a JSONL value or a grid
  value is the same job with the same id.
- A job id is the row's `id` when given, else a hash of the sorted overrides: the same matrix gives
  the same ids on every run, which is what makes a batch resumable. Rows with identical overrides
  and no id are one job.
- Problems are collected, never raised one at a time: `BatchError` lists them all.
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from engine import safe_json
from engine.errors import ReelgraphError, WorkflowError
from engine.overrides import parse_override

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_RESERVED_IDS = {"manifest.jsonl"}  # names the batch folder uses for itself


class BatchError(ReelgraphError):
    """An invalid matrix, grid or batch setup; carries one readable line per problem."""

    def __init__(self, problems: Sequence[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("; ".join(self.problems))


@dataclass(frozen=True)
class Row:
    """One row of a matrix file: overrides keyed by `NODE.INPUT`, in the file's order."""

    overrides: dict[str, str] = field(default_factory=dict)
    id: str | None = None
    source: str = ""  # where it came from, for error messages: "matrix.csv line 4"


@dataclass(frozen=True)
class Job:
    """One run of the workflow: its id (a folder name) and its overrides (`NODE.INPUT=RAW`)."""

    id: str
    overrides: tuple[str, ...]
    source: str = ""


# ---- reading ----------------------------------------------------------------------------------

def read_matrix(path: str | Path) -> list[Row]:
    """Rows of a JSONL, JSON or CSV matrix file. Raises BatchError naming every bad line."""
    path = Path(path)
    try:
        text = safe_json.read_text_file(path, safe_json.MAX_SMALL_FILE_BYTES, "matrix file")
    except safe_json.JsonFileError as exc:
        raise BatchError(f"{path}: {exc}") from None
    text = text.removeprefix("\ufeff")  # spreadsheets often write a byte-order mark
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        rows, problems = _read_jsonl(text, path.name)
    elif suffix == ".json":
        rows, problems = _read_json_list(text, path.name)
    elif suffix == ".csv":
        rows, problems = _read_csv(text, path.name)
    else:
        raise BatchError(f"{path}: unknown matrix format {suffix or '(no suffix)'!r}; "
                         "use .jsonl (one JSON object per line) or .csv (NODE.INPUT columns)")
    if not rows and not problems:
        problems.append(f"{path}: the matrix has no rows")
    if problems:
        raise BatchError(problems)
    return rows


def _read_jsonl(text: str, name: str) -> tuple[list[Row], list[str]]:
    rows, problems = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{name} line {number}"
        try:
            data = safe_json.loads(line)
        except safe_json.JsonFileError as exc:
            problems.append(f"{where}: {exc}")
            continue
        _row_from_object(data, where, rows, problems)
    return rows, problems


def _read_json_list(text: str, name: str) -> tuple[list[Row], list[str]]:
    try:
        data = safe_json.loads(text)
    except safe_json.JsonFileError as exc:
        return [], [f"{name}: {exc}"]
    if not isinstance(data, list):
        return [], [f"{name}: a .json matrix must be a list of objects (or use .jsonl)"]
    rows: list[Row] = []
    problems: list[str] = []
    for index, item in enumerate(data):
        _row_from_object(item, f"{name} item {index}", rows, problems)
    return rows, problems


def _row_from_object(data: Any, where: str, rows: list[Row], problems: list[str]) -> None:
    if not isinstance(data, dict):
        problems.append(f"{where}: expected a JSON object like "
                        '{"id": "a", "node.input": value}, got ' + type(data).__name__)
        return
    overrides: dict[str, str] = {}
    row_problems: list[str] = []
    for key, value in data.items():
        if key == "id":
            continue
        if key == "overrides":
            items = value.items() if isinstance(value, dict) else None
            if isinstance(value, list) and all(isinstance(v, str) for v in value):
                items = [(t, r) for t, _, r in (v.partition("=") for v in value)]
                bad = [v for v in value if "=" not in v]
                row_problems += [f"{where}: override {v!r} must look like NODE.INPUT=VALUE" for v in bad]
            if items is None:
                row_problems.append(f"{where}: 'overrides' must be an object or a list of "
                                    "'NODE.INPUT=VALUE' strings")
                continue
            for target, raw in items:
                _add(overrides, str(target).strip(), _raw_text(raw), where, row_problems)
        elif "." in key:
            _add(overrides, key.strip(), _raw_text(value), where, row_problems)
        else:
            row_problems.append(f"{where}: unknown key {key!r} (keys are 'id', 'overrides' or "
                                "NODE.INPUT names such as 'sampler.steps')")
    row_id = data.get("id")
    if row_id is not None and not isinstance(row_id, (str, int)):
        row_problems.append(f"{where}: 'id' must be a string")
        row_id = None
    problems += row_problems
    if not row_problems:
        rows.append(Row(overrides, None if row_id is None else str(row_id), where))


def _read_csv(text: str, name: str) -> tuple[list[Row], list[str]]:
    reader = csv.reader(text.splitlines())
    header = next(reader, None)
    if not header:
        return [], [f"{name}: empty CSV; the first row must name the columns (id, NODE.INPUT, ...)"]
    header = [h.strip() for h in header]
    problems = [f"{name} column {h!r}: not 'id' and not a NODE.INPUT name (e.g. sampler.steps)"
                for h in header if h != "id" and "." not in h]
    problems += [f"{name}: column {h!r} appears twice" for h in sorted({h for h in header
                                                                        if header.count(h) > 1})]
    if problems:
        return [], problems
    rows: list[Row] = []
    for number, cells in enumerate(reader, start=2):
        if not any(c.strip() for c in cells):
            continue
        where = f"{name} line {number}"
        if len(cells) > len(header):
            problems.append(f"{where}: {len(cells)} cells but only {len(header)} columns")
            continue
        values = dict(zip(header, cells))
        row_id = values.pop("id", "").strip() or None
        overrides = {target: raw for target, raw in values.items() if raw != ""}
        rows.append(Row(overrides, row_id, where))
    return rows, problems


def _raw_text(value: Any) -> str:
    """A matrix value in `run --set` text form: strings as written, anything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _add(overrides: dict[str, str], target: str, raw: str, where: str, problems: list[str]) -> None:
    if target in overrides:
        problems.append(f"{where}: {target} is set twice")
    else:
        overrides[target] = raw


# ---- grid --------------------------------------------------------------------------------------

def parse_grid(specs: Iterable[str]) -> list[tuple[str, list[str]]]:
    """`NODE.INPUT=v1,v2,...` options -> [(target, [raw values])]. A value that needs a comma
    is written as a JSON list instead: `NODE.INPUT=["255,0,0", "0,0,255"]`."""
    axes: list[tuple[str, list[str]]] = []
    problems: list[str] = []
    for spec in specs:
        try:
            node_id, input_name, raw = parse_override(spec)
        except WorkflowError as exc:
            problems.append(f"--grid {spec!r}: {exc.problems[0].message}")
            continue
        target = f"{node_id}.{input_name}"
        values = _grid_values(raw)
        if not values:
            problems.append(f"--grid {spec!r}: no values; write {target}=v1,v2,...")
        elif any(t == target for t, _ in axes):
            problems.append(f"--grid {target} is given twice; put all its values in one option")
        else:
            axes.append((target, values))
    if problems:
        raise BatchError(problems)
    return axes


def _grid_values(raw: str) -> list[str]:
    if raw.lstrip().startswith("["):
        try:
            items = json.loads(raw)
        except (ValueError, RecursionError):
            items = None
        if isinstance(items, list):
            return [_raw_text(v) for v in items]
    return [v.strip() for v in raw.split(",") if v.strip() != ""]


# ---- jobs --------------------------------------------------------------------------------------

def job_id(overrides: Iterable[str]) -> str:
    """A stable id for a set of overrides: independent of their order, 12 hex digits."""
    canonical = json.dumps(sorted(overrides), ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()[:12]


def build_jobs(rows: Sequence[Row] | None = None,
               grid: Sequence[tuple[str, list[str]]] = ()) -> list[Job]:
    """The jobs of a batch: each row (or one empty row when there is no file) times each point of
    the grid. A row id with a grid on top becomes `<id>-<hash of the grid point>`."""
    if not rows and not grid:
        raise BatchError("nothing to run: give --matrix FILE and/or --grid NODE.INPUT=v1,v2")
    base = list(rows) if rows else [Row(source="--grid")]
    points = [tuple(zip((t for t, _ in grid), combo)) for combo in
              itertools.product(*(values for _, values in grid))] if grid else [()]
    jobs: list[Job] = []
    by_id: dict[str, Job] = {}
    problems: list[str] = []
    for row in base:
        for point in points:
            overrides = dict(row.overrides)
            clash = [t for t, _ in point if t in overrides]
            if clash:
                problems.append(f"{row.source}: {clash[0]} is set by both the row and --grid")
                continue
            overrides.update(point)
            texts = tuple(f"{t}={raw}" for t, raw in overrides.items())
            if row.id is None:
                jid = job_id(texts)
            else:
                jid = row.id if not point else f"{row.id}-{job_id(f'{t}={r}' for t, r in point)[:6]}"
            if not _ID.fullmatch(jid) or jid in _RESERVED_IDS:  # match() lets "id\n" through
                problems.append(f"{row.source}: id {jid!r} cannot name a folder; use up to 128 "
                                "letters, digits, '.', '_' or '-' (not starting with '.')")
                continue
            job = Job(jid, texts, row.source)
            previous = by_id.get(jid)
            if previous is not None:
                if sorted(previous.overrides) != sorted(texts):
                    problems.append(f"{row.source}: id {jid!r} is already used by "
                                    f"{previous.source} with other overrides")
                continue  # the same job twice: run it once
            by_id[jid] = job
            jobs.append(job)
    if problems:
        raise BatchError(problems)
    return jobs
