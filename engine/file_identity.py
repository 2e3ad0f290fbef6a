"""Content hashes of input and model files, computed once per file version and remembered.

Cache keys and provenance identify a file by the SHA-256 of its bytes, so a file replaced by
another of the same size and mtime is not mistaken for the old one. Hashing a 28 GB checkpoint
takes about a minute, so each hash is remembered under the file's version: (path, size, mtime,
ctime, inode, device). ctime cannot be set by a user (`touch -d` and copying with preserved
times still move it), and a file moved into place has a new inode, so a replaced file always
gets a new version and is hashed again. The memo lives in this process and in a small SQLite
file in the cache folder, shared by every process, so a second start does not hash again.

A model folder (diffusers / Hugging Face layout) is identified by the hashes of its files, with
their relative names, in name order.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from pathlib import Path

_CHUNK = 1 << 22  # 4 MiB reads


class FileHasher:
    def __init__(self, store: Path | None = None):
        self._memo: dict[tuple, str] = {}
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self.store = store
        self.hashed = 0  # files actually read in this process (tests check a second load reads none)
        if store is not None:
            try:
                store.parent.mkdir(parents=True, exist_ok=True)
                self._db = sqlite3.connect(str(store), timeout=30.0, isolation_level=None,
                                           check_same_thread=False)
                self._db.execute("CREATE TABLE IF NOT EXISTS hashes (path TEXT PRIMARY KEY, "
                                 "version TEXT NOT NULL, sha256 TEXT NOT NULL)")
            except (OSError, sqlite3.Error):
                self._db = None  # an unwritable cache folder: remember in this process only

    def sha256(self, path: Path | str) -> str:
        """SHA-256 of a file, or of a model folder's files. Raises OSError if it is missing."""
        path = Path(path).resolve()
        if path.is_dir():
            digest = hashlib.sha256()
            for item in sorted(p for p in path.rglob("*") if p.is_file()):
                digest.update(item.relative_to(path).as_posix().encode("utf-8", "surrogatepass"))
                digest.update(b"\0" + self._file_sha256(item).encode() + b"\n")
            return digest.hexdigest()
        return self._file_sha256(path)

    def _file_sha256(self, path: Path) -> str:
        st = path.stat()
        version = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)
        key = (str(path),) + version
        with self._lock:
            known = self._memo.get(key)
        if known is not None:
            return known
        stored = self._lookup(str(path), version)
        if stored is None:
            stored = _hash_bytes(path)
            self.hashed += 1
            self._remember(str(path), version, stored)
        with self._lock:
            self._memo[key] = stored
        return stored

    def _lookup(self, path: str, version: tuple) -> str | None:
        if self._db is None:
            return None
        try:
            with self._lock:
                row = self._db.execute("SELECT version, sha256 FROM hashes WHERE path=?",
                                       (path,)).fetchone()
        except sqlite3.Error:
            return None
        return row[1] if row and row[0] == _version_text(version) else None

    def _remember(self, path: str, version: tuple, sha: str) -> None:
        if self._db is None:
            return
        try:
            with self._lock:
                self._db.execute("INSERT OR REPLACE INTO hashes VALUES (?, ?, ?)",
                                 (path, _version_text(version), sha))
        except sqlite3.Error:
            pass  # the memo is an optimisation; the hash itself is right


def _version_text(version: tuple) -> str:
    return ":".join(map(str, version))


def _hash_bytes(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


_DEFAULT: FileHasher | None = None
_DEFAULT_LOCK = threading.Lock()


def default_hasher() -> FileHasher:
    """The process's hasher (model loaders use it for provenance); `use_store` gives it its
    persistent memo once the cache folder is known."""
    global _DEFAULT
    with _DEFAULT_LOCK:
        if _DEFAULT is None:
            _DEFAULT = FileHasher()
        return _DEFAULT


def use_store(cache_dir: Path | str) -> FileHasher:
    """Point the process's hasher at `<cache_dir>/file_hashes.sqlite3` (idempotent per folder)."""
    global _DEFAULT
    store = Path(cache_dir) / "file_hashes.sqlite3"
    with _DEFAULT_LOCK:
        if _DEFAULT is None or _DEFAULT.store != store:
            _DEFAULT = FileHasher(store)
        return _DEFAULT


def file_sha256(path: Path | str) -> str:
    """SHA-256 of a file or model folder through the process's remembered hashes."""
    return default_hasher().sha256(path)


__all__ = ["FileHasher", "default_hasher", "file_sha256", "use_store"]
