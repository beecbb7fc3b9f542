"""The dashboard page, rendered once and served again while nothing it shows can have changed.

Many tabs (and reloads) of one browser ask for the same page; rendering it costs a few milliseconds of the one core
the panel's threads share, which every live poll then queues behind. A render is reused only when all of these are
what they were: the dashboard's change version (any commit to the database moves it), the signed-in user and role,
the address the page was asked for,
the browser session's CSRF secret (the page's forms carry a token signed from it), the remembered project folders
and the chosen folder's ``.env``/``.env.secrets``; and never for more than ``MAX_AGE`` (the launch card also reads
the clouds' local credentials and cached prices, which have no cheap version). A request with arguments, or with a
flash message waiting to be shown, always renders afresh.
"""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from app.config import ENV_FILE, SECRETS_FILE

MAX_AGE_S = 1.0
MAX_ENTRIES = 32  # one per browser session and user; old ones are dropped first

Key = tuple[object, ...]
_entries: dict[Key, tuple[float, str, str, tuple[object, ...]]] = {}  # key -> (expiry, workdir, body, env stamp)
_lock = threading.Lock()


def _stat(path: Path) -> tuple[int, int] | None:
    try:
        found = os.stat(path)
    except OSError:
        return None
    return found.st_size, found.st_mtime_ns


def env_stamp(workdir: str) -> tuple[object, ...]:
    """Size and mtime of the folder's configuration files (None for a missing one)."""
    return _stat(Path(workdir) / ENV_FILE), _stat(Path(workdir) / SECRETS_FILE)


def key(version: str, user_id: int, role: str, csrf_secret: str, folders_file: Path, host: str, shared: bool) -> Key:
    """Everything besides the folder's ``.env`` that the page depends on (``host``/``shared``: the same page reached
    through ``--share``'s front shows other links)."""
    return version, user_id, role, csrf_secret, _stat(folders_file), host, shared


def get(page_key: Key) -> str | None:
    """The page rendered under ``page_key``, if it is young enough and its folder's configuration is unchanged."""
    with _lock:
        entry = _entries.get(page_key)
    if entry is None:
        return None
    expires, workdir, body, stamp = entry
    if time.monotonic() > expires or env_stamp(workdir) != stamp:
        return None
    return body


def keep(page_key: Key, workdir: str, body: str, stamp: tuple[object, ...]) -> None:
    """Remember a render; ``stamp`` is the folder's ``env_stamp`` taken before the render read it."""
    with _lock:
        _entries[page_key] = (time.monotonic() + MAX_AGE_S, workdir, body, stamp)
        while len(_entries) > MAX_ENTRIES:
            _entries.pop(next(iter(_entries)))


def clear() -> None:
    with _lock:
        _entries.clear()
