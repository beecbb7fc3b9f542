"""Whether anything has committed to the SQLite database since a moment ago, from two ``stat`` calls.

Every open tab asks "has anything changed?" about once a second. Answering that with queries costs a few database
round trips per poll, and each one releases and re-takes the GIL behind whatever page is rendering in another
thread. A commit from any connection or process (workers, the CLI, another thread) grows or rewrites the
write-ahead log and a checkpoint rewrites the main file, so the files' size and mtime change with every commit.

A stamp is trusted only when both files were last written more than ``RACY_WINDOW`` ago: a commit in the same
clock tick as the ``stat`` would leave the mtime as it was (the racy-git problem), so a recent write means
"don't know" and the caller asks the database.
"""
from __future__ import annotations

import os
import time
from datetime import timedelta
from pathlib import Path

RACY_WINDOW = timedelta(milliseconds=50)  # far above the kernel's mtime granularity (1-10 ms)

Stamp = tuple[int, int, int, int]


def database_file(uri: str) -> Path | None:
    """The database file behind a ``sqlite:///`` URI; None for anything else (memory, another engine)."""
    if not uri.startswith("sqlite:///") or ":memory:" in uri or "mode=memory" in uri:
        return None
    return Path(uri.removeprefix("sqlite:///").split("?", 1)[0])


def stamp(path: Path) -> Stamp | None:
    """Size and mtime of the database and its write-ahead log, or None when it cannot be trusted (a write in the
    last ``RACY_WINDOW``, or the files cannot be read)."""
    try:
        main = os.stat(path)
    except OSError:
        return None
    try:
        wal = os.stat(f"{path}-wal")
        wal_size, wal_mtime = wal.st_size, wal.st_mtime_ns
    except FileNotFoundError:
        wal_size, wal_mtime = -1, 0
    except OSError:
        return None
    newest = max(main.st_mtime_ns, wal_mtime)
    if time.time_ns() - newest < RACY_WINDOW.total_seconds() * 1e9:
        return None
    return main.st_size, main.st_mtime_ns, wal_size, wal_mtime
