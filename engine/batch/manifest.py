"""The batch output folder: one sub-folder per finished job and an append-only manifest.

Layout of DIR:
    DIR/<job id>/...          the outputs of a job that finished (published atomically)
    DIR/manifest.jsonl        one JSON record per finished attempt; the last record of an id wins
    DIR/.partial/             jobs being written (a job runs with its output folder here)
    DIR/.lock                 held while a batch writes to DIR, so two batches never interleave

Invariants:
- A job's folder appears whole or not at all: the job writes into `.partial/<id>.<nonce>/`, which
  is renamed to `DIR/<id>/` only once the job is done; failed and interrupted attempts are deleted.
- A manifest record is appended (and fsynced) only after its folder was published, so a "done"
  record always names files that exist. A process killed mid-append leaves at most one torn last
  line, which readers skip and the next append starts after.
- Publishing and the manifest use only the file system, so a Ray worker on another node can
  publish into a shared DIR while the driver keeps the manifest.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Iterator

from engine.atomic_files import fsync_dir
from engine.batch.matrix import BatchError

MANIFEST = "manifest.jsonl"
_ATTEMPT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\.(old\.)?[0-9a-f]{8}")  # new_partial / publish names
PARTIAL = ".partial"
LOCK = ".lock"


@dataclass
class JobRecord:
    """One finished attempt of a job, as written to the manifest."""

    id: str
    overrides: list[str]
    status: str  # done | failed
    outputs: list[str] = field(default_factory=list)  # paths relative to DIR
    seconds: float = 0.0  # the run's own time (worker start-up excluded)
    error: str = ""
    attempts: int = 1  # 1 + crash retries used
    worker: str = ""  # which worker ran it ("local-0 pid 123", "ray actor ... on host")
    finished_at: str = ""  # UTC, ISO 8601
    nodes: dict[str, Any] = field(default_factory=dict)  # node id -> {type, status, seconds}
    log: list[dict[str, Any]] = field(default_factory=list)  # {level, message, node_id} lines
    workflow: str = ""  # signature of the job's workflow: editing the graph re-runs the job

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> "JobRecord":
        """A record from a manifest line; ValueError for anything that is not one of ours."""
        if not isinstance(data, dict):
            raise ValueError("a manifest line must be a JSON object")
        known = {f.name: f for f in fields(cls)}
        record = cls(**{k: v for k, v in data.items() if k in known})
        if not (isinstance(record.id, str) and record.status in ("done", "failed")
                and isinstance(record.overrides, list) and isinstance(record.outputs, list)
                and all(isinstance(o, str) for o in record.overrides + record.outputs)
                and isinstance(record.workflow, str)):
            raise ValueError("not a job record")
        return record


def read_manifest(path: str | Path) -> dict[str, JobRecord]:
    """The latest record of each job id. Missing file -> {}; torn or foreign lines are skipped."""
    records: dict[str, JobRecord] = {}
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return records
    for line in text.splitlines():
        try:
            record = JobRecord.from_json(json.loads(line))
        except (ValueError, TypeError, RecursionError):
            continue  # a line torn by a kill mid-append, or not ours
        records[record.id] = record
    return records


def append_record(path: str | Path, record: JobRecord) -> None:
    """Append one record as a line and fsync, starting a fresh line after a torn one."""
    path = Path(path)
    # ASCII escapes: any text (even a lone surrogate) round-trips, and a line is always UTF-8
    line = json.dumps(record.to_json(), ensure_ascii=True, separators=(",", ":")) + "\n"
    with open(path, "ab") as f:
        if f.tell() > 0:
            with open(path, "rb") as r:
                r.seek(-1, os.SEEK_END)
                if r.read(1) != b"\n":
                    line = "\n" + line
        f.write(line.encode("utf-8"))
        f.flush()
        os.fsync(f.fileno())


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class BatchDir:
    """The output folder of a batch (see the module docstring for its layout)."""

    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        self.manifest_path = self.root / MANIFEST

    def job_dir(self, job_id: str) -> Path:
        return self.root / job_id

    def records(self) -> dict[str, JobRecord]:
        return read_manifest(self.manifest_path)

    def record(self, record: JobRecord) -> None:
        append_record(self.manifest_path, record)

    def is_done(self, record: JobRecord | None, overrides: Iterable[str], workflow: str = "") -> bool:
        """Done with the same overrides on the same workflow, and every output still on disk."""
        return (record is not None and record.status == "done"
                and sorted(record.overrides) == sorted(overrides)
                and record.workflow == workflow
                and self.job_dir(record.id).is_dir()
                and all((self.root / out).exists() for out in record.outputs))

    # ---- atomic job folders ----------------------------------------------------------------
    def new_partial(self, job_id: str) -> Path:
        """A fresh, empty folder for one attempt of a job (inside DIR, so a rename publishes it)."""
        path = self.root / PARTIAL / f"{job_id}.{uuid.uuid4().hex[:8]}"
        path.mkdir(parents=True)
        return path

    def publish(self, partial: Path, job_id: str, files: Iterable[str]) -> list[str]:
        """Rename `partial` to DIR/<job_id>; returns the outputs' paths relative to DIR. An older
        folder of this job (one the manifest records) is replaced; a folder the batch did not
        write is never deleted: it is moved aside to DIR/<job_id>.kept-<nonce>."""
        partial = Path(partial).resolve()
        final = self.job_dir(job_id)
        old = None
        if final.exists():
            nonce = uuid.uuid4().hex[:8]
            if job_id in self.records():  # our own earlier attempt: replace it
                old = self.root / PARTIAL / f"{job_id}.old.{nonce}"
                os.replace(final, old)
            else:
                os.replace(final, self.root / f"{job_id}.kept-{nonce}")
        os.replace(partial, final)
        fsync_dir(self.root)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        outputs = []
        for name in files:
            path = Path(name).resolve()
            try:
                outputs.append(str(Path(job_id) / path.relative_to(partial)))
            except ValueError:
                outputs.append(str(path))  # written outside the job folder: keep it as it is
        return outputs

    def discard(self, partial: Path | None) -> None:
        if partial is not None:
            shutil.rmtree(partial, ignore_errors=True)

    def clear_partials(self) -> None:
        """Remove attempts left over by a batch that was killed (never by one still running:
        callers hold `lock()`). Only folders named as this class names them are removed, and
        `.partial` itself only once empty: whatever else is there is left alone."""
        folder = self.root / PARTIAL
        if not folder.is_dir():
            return
        for entry in folder.iterdir():
            if _ATTEMPT.fullmatch(entry.name) and entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
        try:
            folder.rmdir()
        except OSError:
            pass  # not empty: someone else's files

    def foreign_folders(self, job_ids: Iterable[str]) -> list[str]:
        """Job ids whose folder exists in DIR although the manifest records no run of them:
        files this batch did not write, in its way."""
        records = self.records()
        return [jid for jid in job_ids if jid not in records and self.job_dir(jid).exists()]

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold DIR exclusively for this batch; a second batch on the same DIR is refused."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / LOCK
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                import fcntl

                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except ImportError:  # Windows: no advisory locks here; single-writer by convention
                pass
            except OSError:
                holder = path.read_text(encoding="utf-8").strip() or "another process"
                raise BatchError(f"{self.root}: another batch ({holder}) is writing to this folder; "
                                 "wait for it or choose another --out") from None
            os.ftruncate(fd, 0)
            os.write(fd, f"pid {os.getpid()}".encode())
            yield
        finally:
            os.close(fd)


