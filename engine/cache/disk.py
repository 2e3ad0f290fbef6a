"""The persistent cache tier: one folder, one SQLite index, one byte budget, shared by every process.

Layout: `<root>/index.sqlite3` lists every entry (key, payload file, kind, size, SHA-256 of the
payload, last use); payloads live in `<root>/<key[:2]>/<key>.<kind>`. All worker processes of a
batch (and the studio's worker, and the CLI) open the same index, so they see each other's results
and evict against one budget.

Invariants:
- A row exists only for a payload that was completely written: the payload is written to a temp
  file, then renamed into place and recorded in one write transaction. Start-up sweeps (in a
  write transaction, so never racing a writer's rename) remove temp files of dead writers, rows
  whose file vanished and payload files that no row names.
- Every read verifies the payload's checksum; a mismatch or an unparsable payload deletes the
  entry and is a miss with a reason for the log, never an error and never a wrong value.
- A payload bigger than the whole budget is not written (it would evict everything else).
"""

from __future__ import annotations

import os
import secrets
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Iterable

from engine.cache import payload
from engine.cache.payload import CorruptPayload, NotSpillable

_TEMP_MARK = ".tmp-"
_ORPHAN_AGE_S = 24 * 3600  # a temp file this old is garbage even if its pid was reused
_BATCH = 500  # keys per SELECT ... IN (...)


class DiskTier:
    def __init__(self, root: Path, budget_bytes: int, busy_timeout: float = 60.0):
        self.root = Path(root)
        self.budget = int(budget_bytes)
        self.root.mkdir(parents=True, exist_ok=True)
        if not os.access(self.root, os.W_OK):
            raise PermissionError(f"cache folder {self.root} is not writable")
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.root / "index.sqlite3"), timeout=busy_timeout,
                                   isolation_level=None, check_same_thread=False)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")  # readers never wait for a writer
        except sqlite3.DatabaseError:
            pass  # e.g. a network file system: the default rollback journal still works
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS entries (key TEXT PRIMARY KEY, file TEXT NOT "
                         "NULL, kind TEXT NOT NULL, size INTEGER NOT NULL, checksum TEXT NOT NULL, "
                         "last_used REAL NOT NULL)")
        self.swept = self._sweep()

    # ---- reading ---------------------------------------------------------------------------
    def present(self, keys: Iterable[str]) -> set[str]:
        """Which of `keys` have an entry (one query per 500 keys; nothing is read or verified)."""
        keys = list(keys)
        found: set[str] = set()
        try:
            with self._lock:
                for start in range(0, len(keys), _BATCH):
                    chunk = keys[start:start + _BATCH]
                    marks = ",".join("?" * len(chunk))
                    found.update(r[0] for r in self._db.execute(
                        f"SELECT key FROM entries WHERE key IN ({marks})", chunk))
        except sqlite3.Error:
            return set()  # an index that cannot be read now (locked, I/O error): plan misses
        return found

    def __contains__(self, key: str) -> bool:
        return bool(self.present([key]))

    def get(self, key: str) -> tuple[Any | None, str]:
        """(value, "") on a verified hit; (None, "") on a miss; (None, reason) when the entry was
        unreadable or corrupt (it is deleted)."""
        try:
            with self._lock:
                row = self._db.execute("SELECT file, kind, checksum FROM entries WHERE key=?",
                                       (key,)).fetchone()
        except sqlite3.Error as exc:
            return None, f"the cache index cannot be read ({exc})"
        if row is None:
            return None, ""
        file, kind, expected = row
        try:
            data = (self.root / file).read_bytes()
        except OSError as exc:
            self.drop(key, expected)
            return None, f"cache entry unreadable ({exc.strerror or exc})"
        if payload.checksum(data) != expected:
            self.drop(key, expected)
            return None, "cache entry failed its checksum (the file was damaged)"
        try:
            value = payload.decode(kind, data)
        except CorruptPayload as exc:
            self.drop(key, expected)
            return None, f"cache entry could not be decoded ({exc})"
        try:  # LRU bookkeeping only: never worth failing a read for
            with self._lock:
                self._db.execute("UPDATE entries SET last_used=? WHERE key=?", (time.time(), key))
        except sqlite3.Error:
            pass
        return value, ""

    # ---- writing ---------------------------------------------------------------------------
    def put(self, key: str, value: Any) -> tuple[bool, str]:
        """(written, reason it was not)."""
        try:
            kind, data = payload.encode(value)
        except NotSpillable:
            return False, ""
        except Exception as exc:  # a value flatten cannot handle is a RAM-only value
            return False, f"not written to the disk cache ({type(exc).__name__}: {exc})"
        if len(data) > self.budget:
            return False, (f"result of {_gib(len(data))} is bigger than the whole disk cache "
                           f"budget ({_gib(self.budget)}); kept in RAM only")
        file = f"{key[:2]}/{key}.{kind}"
        path = self.root / file
        tmp = path.with_name(f".{key}{_TEMP_MARK}{os.getpid()}-{secrets.token_hex(4)}")
        evicted: list[str] = []
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(data)
            with self._lock, _write_transaction(self._db):
                old = self._db.execute("SELECT file FROM entries WHERE key=?", (key,)).fetchone()
                os.replace(tmp, path)
                self._db.execute("INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?, ?, ?)",
                                 (key, file, kind, len(data), payload.checksum(data), time.time()))
                if old and old[0] != file:
                    evicted.append(old[0])
                evicted += self._evict_locked(keep=key)
                # unlinked while the write lock is held: no other process can record a new
                # payload under one of these names in between
                for name in evicted:
                    (self.root / name).unlink(missing_ok=True)
        except (OSError, sqlite3.Error) as exc:
            tmp.unlink(missing_ok=True)
            return False, f"could not write the disk cache ({exc})"
        return True, ""

    def _evict_locked(self, keep: str) -> list[str]:
        total = self._db.execute("SELECT COALESCE(SUM(size), 0) FROM entries").fetchone()[0]
        if total <= self.budget:
            return []
        files = []
        for key, file, size in self._db.execute(
                "SELECT key, file, size FROM entries WHERE key != ? ORDER BY last_used", (keep,)
        ).fetchall():
            if total <= self.budget:
                break
            self._db.execute("DELETE FROM entries WHERE key=?", (key,))
            files.append(file)
            total -= size
        return files

    def drop(self, key: str, checksum: str | None = None) -> None:
        """Remove an entry (only the version with `checksum`, when given: another process may
        have written a good one since this one was found damaged). Never raises."""
        try:
            with self._lock, _write_transaction(self._db):
                row = self._db.execute("SELECT file, checksum FROM entries WHERE key=?",
                                       (key,)).fetchone()
                if row is None or (checksum is not None and row[1] != checksum):
                    return
                self._db.execute("DELETE FROM entries WHERE key=?", (key,))
                (self.root / row[0]).unlink(missing_ok=True)
        except (OSError, sqlite3.Error):
            pass  # the entry stays; its next read fails its checksum again and retries

    def clear(self) -> None:
        with self._lock, _write_transaction(self._db):
            files = [r[0] for r in self._db.execute("SELECT file FROM entries")]
            self._db.execute("DELETE FROM entries")
        for name in files:
            (self.root / name).unlink(missing_ok=True)

    @property
    def bytes(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COALESCE(SUM(size), 0) FROM entries").fetchone()[0])

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM entries").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ---- start-up sweep --------------------------------------------------------------------
    def _sweep(self) -> int:
        """Remove what killed writers and older versions left behind; returns files removed."""
        removed = 0
        with self._lock, _write_transaction(self._db):
            rows = dict(self._db.execute("SELECT file, key FROM entries").fetchall())
            on_disk = set()
            for sub in self.root.iterdir():
                if not sub.is_dir():
                    continue
                for path in sub.iterdir():
                    name = f"{sub.name}/{path.name}"
                    if _TEMP_MARK in path.name:
                        if _abandoned(path):
                            path.unlink(missing_ok=True)
                            removed += 1
                    elif name in rows:
                        on_disk.add(name)
                    else:  # written but never recorded, or a pre-index cache file
                        path.unlink(missing_ok=True)
                        removed += 1
            for name, key in rows.items():
                if name not in on_disk:
                    self._db.execute("DELETE FROM entries WHERE key=?", (key,))
        return removed


class _write_transaction:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error): one writer at a time across processes."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if exc_type is None:
            try:
                self.db.execute("COMMIT")
                return
            except sqlite3.Error:
                self._rollback()  # never leave the write lock held (it would block every process)
                raise
        self._rollback()

    def _rollback(self) -> None:
        if self.db.in_transaction:
            try:
                self.db.execute("ROLLBACK")
            except sqlite3.Error:
                pass


def _abandoned(path: Path) -> bool:
    """A temp file whose writer is gone (its pid is not running) or that is very old."""
    try:
        pid = int(path.name.rsplit(_TEMP_MARK, 1)[1].split("-")[0])
        age = time.time() - path.stat().st_mtime
    except (ValueError, IndexError, OSError):
        return True
    if age > _ORPHAN_AGE_S:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, owned by someone else
    return False


def _gib(n: int) -> str:
    return f"{n / (1 << 30):.2f} GiB" if n >= 1 << 30 else f"{n / (1 << 20):.1f} MiB"
