"""Writing files that hold secrets: atomically, and readable by the owner only."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

PRIVATE_MODE = 0o600


def write_private(path: Path | str, text: str) -> None:
    """Replace ``path`` with ``text``, mode 0600 from the first byte; a reader never sees half a file, and an
    existing file with looser permissions is replaced, not reused."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        os.fchmod(fd, PRIVATE_MODE)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
