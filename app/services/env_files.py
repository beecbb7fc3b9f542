"""Merge settings into dotenv files without losing anything the user wrote.

Managed keys are updated in place (keeping ``export`` and inline comments), removed when set to None, or appended;
every other line and comment stays. Writes are atomic and leave the file mode 0600, because .env.secrets holds
tokens.
"""
from __future__ import annotations

import io
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path

from dotenv.parser import parse_stream

FILE_MODE = 0o600
_PLAIN_VALUE = re.compile(r"^[A-Za-z0-9_./:@+,=-]*$")


def format_env_value(value: str) -> str:
    """A value as dotenv reads it back verbatim: bare when plain, else single-quoted (no ``${}`` expansion)."""
    if "\n" in value or "\r" in value:
        raise ValueError("a .env value cannot span lines")
    if _PLAIN_VALUE.match(value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _inline_comment(original: str) -> str:
    """The `` # comment`` after a one-line binding's value, kept when the value is replaced."""
    line = original.strip()
    if "\n" in line or "=" not in line:
        return ""
    rest = line.split("=", 1)[1].lstrip()
    if rest[:1] in ("'", '"'):
        closing = re.match(r"""(['"])(?:\\.|(?!\1).)*\1(.*)$""", rest)
        tail = closing.group(2) if closing else ""
    else:
        found = re.search(r"\s#.*$", rest)
        tail = found.group(0) if found else ""
    return " " + tail.strip() if tail.strip().startswith("#") else ""


def merge_env_text(text: str, updates: Mapping[str, str | None]) -> str:
    """``text`` with each key in ``updates`` set in place (every occurrence), removed when None, or appended."""
    out: list[str] = []
    done: set[str] = set()
    for binding in parse_stream(io.StringIO(text)):
        original = binding.original.string
        if binding.key is None or binding.key not in updates:
            out.append(original)
            continue
        value = updates[binding.key]
        if value is None:
            continue
        leading = re.match(r"\s*(?:export[ \t]+)?", original).group(0)  # keep indentation and ``export``
        ending = "\n" if original.endswith(("\n", "\r")) else ""
        out.append(f"{leading}{binding.key}={format_env_value(value)}{_inline_comment(original)}{ending}")
        done.add(binding.key)
    merged = "".join(out)
    missing = [(k, v) for k, v in updates.items() if v is not None and k not in done]
    if missing:
        if merged and not merged.endswith("\n"):
            merged += "\n"
        merged += "".join(f"{k}={format_env_value(v)}\n" for k, v in missing)
    return merged


def merge_env_file(path: Path, updates: Mapping[str, str | None]) -> None:
    """Merge ``updates`` into the dotenv file at ``path`` atomically, leaving it mode 0600."""
    target = path.resolve() if path.is_symlink() else path
    text = target.read_text() if target.exists() else ""
    merged = merge_env_text(text, updates)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "w") as handle:
            handle.write(merged)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    os.chmod(target, FILE_MODE)
