"""Project folders: where a launch's .env is read and its aider files go.

The CLI works in the folder it runs in; the panel lets the user pick one. Every folder either of them used is
remembered (newest first) in maider's data dir, so the panel offers the folder ``maider wizard`` just saved to."""
from __future__ import annotations

import json
from pathlib import Path

import sqlalchemy as sa

from app.config import default_home
from app.files import write_private

FOLDERS_FILE = "project_folders.json"
REMEMBERED = 20


def _path(home: Path | None) -> Path:
    return (home or default_home()) / FOLDERS_FILE


def folders_file(home: Path | None = None) -> Path:
    """Where the remembered folders are kept (its mtime tells a cached page whether they changed)."""
    return _path(home)


def remembered(home: Path | None = None) -> list[str]:
    """Folders used before, newest first, that still exist."""
    try:
        folders = json.loads(_path(home).read_text())
    except (OSError, ValueError):
        return []
    if not isinstance(folders, list):
        return []
    return [f for f in folders if isinstance(f, str) and Path(f).is_dir()]


def remember(folder: str | Path, home: Path | None = None) -> None:
    """Put ``folder`` first in the list; a data dir that cannot be written only loses the memory, not the command."""
    text = str(Path(folder).resolve())
    folders = [text] + [f for f in remembered(home) if f != text]
    path = _path(home)
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_private(path, json.dumps(folders[:REMEMBERED], indent=1) + "\n")
    except OSError:
        pass


def chosen(folder: str | None, fallback: str, folders: list[str] | None = None) -> str:
    """The project folder a panel page works on (the launch card, the setup wizard): the one the user picked
    (checked: an existing folder of theirs), else the one the launch card opens on -- the last one used, else
    ``fallback`` (the server's)."""
    if folder:
        from app.services.sessions import checked_workdir

        return checked_workdir(folder)
    return (folders or known(fallback))[0]


def known(fallback: str, home: Path | None = None) -> list[str]:
    """Every folder to offer: remembered ones, then those of past sessions, then ``fallback`` (the server's)."""
    from app.extensions import db
    from app.models import Session

    used = db.session.scalars(sa.select(Session.workdir).where(Session.workdir.is_not(None))
                              .group_by(Session.workdir).order_by(sa.func.max(Session.id).desc()).limit(REMEMBERED))
    folders = remembered(home) + [f for f in used if Path(f).is_dir()] + [fallback]
    return list(dict.fromkeys(folders))
