"""Autosave and crash recovery: unsaved work is written to a recovery folder shortly after each
edit, and offered back on the next start if the studio did not close cleanly.

Invariants:
- The user's own file is never written here; recovery files live in the user state dir
  (platformdirs) as `session-<pid>.json`, written atomically.
- A session that closes normally (saved, or changes discarded on purpose) deletes its file;
  a file whose process is gone is therefore a crash (or kill) leftover, and is offered back.
- A clean (saved) document has nothing to recover, so its recovery file is removed.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Callable

import platformdirs
from PySide6.QtCore import QObject, QTimer

from engine.atomic_files import atomic_write_text

APP_NAME = "reelgraph"
DELAY_MS = 1500


def default_recovery_dir() -> Path:
    return Path(platformdirs.user_state_dir(APP_NAME)) / "recovery"


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


class RecoveryStore:
    def __init__(self, folder: Path | str | None = None, pid: int | None = None):
        self.folder = Path(folder) if folder else default_recovery_dir()
        self.pid = os.getpid() if pid is None else pid

    @property
    def path(self) -> Path:
        return self.folder / f"session-{self.pid}.json"

    def write(self, workflow_json: dict[str, Any], source: str | None) -> None:
        record = {"saved_at": time.time(), "source": source, "pid": self.pid, "workflow": workflow_json}
        atomic_write_text(self.path, json.dumps(record, ensure_ascii=False))

    def discard(self) -> None:
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

    def orphans(self) -> list[tuple[Path, dict[str, Any]]]:
        """Recovery files left by sessions that are no longer running, newest first."""
        found = []
        for path in self.folder.glob("session-*.json"):
            try:
                pid = int(path.stem.split("-", 1)[1])
            except ValueError:
                continue
            if pid == self.pid or _pid_alive(pid):
                continue
            try:
                record = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if isinstance(record, dict) and isinstance(record.get("workflow"), dict):
                found.append((path, record))
        found.sort(key=lambda item: item[1].get("saved_at", 0), reverse=True)
        return found

    @staticmethod
    def remove(paths: list[Path]) -> None:
        for path in paths:
            try:
                path.unlink()
            except FileNotFoundError:
                pass


class Autosaver(QObject):
    """Debounced writer: call `schedule()` after edits; `snapshot()` supplies (json, source, dirty)."""

    def __init__(self, store: RecoveryStore,
                 snapshot: Callable[[], tuple[dict[str, Any], str | None, bool]],
                 delay_ms: int = DELAY_MS, parent: QObject | None = None):
        super().__init__(parent)  # parented to its window: its timer dies with the document
        self.store = store
        self._snapshot = snapshot
        self.timer = QTimer(self)
        self.timer.setSingleShot(True)
        self.timer.setInterval(delay_ms)
        self.timer.timeout.connect(self.save_now)
        self.last_error = ""

    def schedule(self, *_args: Any) -> None:
        self.timer.start()

    def save_now(self) -> None:
        workflow_json, source, dirty = self._snapshot()
        try:
            if dirty:
                self.store.write(workflow_json, source)
            else:
                self.store.discard()
            self.last_error = ""
        except OSError as exc:  # a full disk must not interrupt editing; the status bar says it
            self.last_error = f"autosave failed: {exc}"

    def finish(self) -> None:
        """Normal close: nothing left to recover."""
        self.timer.stop()
        self.store.discard()
