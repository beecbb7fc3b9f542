"""Refuse to serve from a damaged database.

A damaged ``maider.db`` would otherwise be served: every page a 500, every worker tick failing, while VMs keep
billing. ``PRAGMA quick_check`` at start finds it; a copy of the damaged file is kept aside (for recovery tools or a
bug report) and the server stops with a message that says what is damaged and how to go on.
"""
from __future__ import annotations

import shutil
import sqlite3
from datetime import datetime, timezone
from pathlib import Path

DATABASE_FILE = "maider.db"
MAX_REPORTED_PROBLEMS = 5
SIDE_FILES = ("-wal", "-shm")  # SQLite's write-ahead log and its index travel with the database


class DatabaseDamaged(RuntimeError):
    """The database failed its integrity check; the message is written for the user."""

    def __init__(self, path: Path, copy: Path, problems: list[str]) -> None:
        self.path, self.copy, self.problems = path, copy, problems
        listed = "; ".join(problems[:MAX_REPORTED_PROBLEMS])
        more = f" (and {len(problems) - MAX_REPORTED_PROBLEMS} more)" if len(problems) > MAX_REPORTED_PROBLEMS else ""
        super().__init__(
            f"maider's database {path} is damaged: {listed}{more}. maider will not start on it: what it says about "
            f"sessions and VMs cannot be trusted. A copy of the damaged file was kept at {copy}. "
            f"To go on, restore a backup of {path.name} to {path}, or remove {path} to start with a fresh one. "
            "Either way, VMs still running at the provider keep billing: after the restart maider's reconciler "
            "lists every maider-tagged VM that the database does not know as an orphan on the dashboard, "
            "where you can destroy it.")


def quick_check(path: Path) -> list[str]:
    """What ``PRAGMA quick_check`` reports wrong with ``path`` (empty when it is sound)."""
    try:
        connection = sqlite3.connect(path, timeout=15)
    except sqlite3.Error as exc:
        return [f"cannot be opened ({exc})"]
    try:
        rows = [str(row[0]) for row in connection.execute("PRAGMA quick_check")]
    except sqlite3.DatabaseError as exc:
        return [str(exc)]
    finally:
        connection.close()
    return [] if rows == ["ok"] else rows


def _with_side_files(path: Path) -> list[Path]:
    return [path, *(path.with_name(path.name + suffix) for suffix in SIDE_FILES)]


def _copy_with_side_files(source: Path, target: Path) -> None:
    for side, target_side in zip(_with_side_files(source), _with_side_files(target)):
        if side.exists():
            shutil.copy2(side, target_side)


def check_database(path: Path, now: datetime | None = None) -> None:
    """Raise ``DatabaseDamaged`` when ``path`` exists and fails ``PRAGMA quick_check``; a missing file is fine
    (maider creates it). The check runs on a copy, so the damaged file itself is never touched (closing a
    connection would fold its WAL into it); a damaged copy is the one kept aside."""
    if not path.exists():
        return
    checking = path.with_name(f"{path.name}.checking")
    _copy_with_side_files(path, checking)
    problems = quick_check(checking)
    if not problems:
        for leftover in _with_side_files(checking):
            leftover.unlink(missing_ok=True)
        return
    stamp = (now or datetime.now(timezone.utc)).strftime("%Y%m%dT%H%M%SZ")
    kept = path.with_name(f"{path.name}.damaged-{stamp}")
    for source, target in zip(_with_side_files(checking), _with_side_files(kept)):
        if source.exists():
            source.replace(target)
    raise DatabaseDamaged(path, kept, problems)
