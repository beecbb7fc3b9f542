"""Write aider's hand-off files (``.aider-env`` and ``.aider.model.metadata.json``) into the user's project."""
from __future__ import annotations

import json
import os
from pathlib import Path

from app.domain.aider import AIDER_ENV_FILENAME, METADATA_FILENAME, aider_env_file, model_metadata


def _write_private(path: Path, text: str) -> None:
    """0600: .aider-env holds the vLLM API key."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


def write_aider_files(directory: str | Path, *, session_name: str, served_name: str, api_key: str, api_port: int,
                      webui_port: int, max_model_len: int, hourly_price: float | None = None) -> tuple[Path, Path]:
    """Write both files; return their paths."""
    folder = Path(directory)
    env_path, meta_path = folder / AIDER_ENV_FILENAME, folder / METADATA_FILENAME
    _write_private(env_path, aider_env_file(api_port, webui_port, api_key, served_name, session_name))
    metadata = model_metadata(served_name, max_model_len, hourly_price=hourly_price)
    _write_private(meta_path, json.dumps(metadata, indent=2) + "\n")
    return env_path, meta_path
