"""Write aider's hand-off files (``.aider-env`` and ``.aider.model.metadata.json``) into the user's project."""
from __future__ import annotations

import json
from pathlib import Path

from app.domain.aider import AIDER_ENV_FILENAME, METADATA_FILENAME, aider_env_file, model_metadata
from app.files import write_private


def write_aider_files(directory: str | Path, *, session_name: str, served_name: str, api_key: str, api_port: int,
                      webui_port: int, max_model_len: int, hourly_price: float | None = None) -> tuple[Path, Path]:
    """Write both files; return their paths."""
    folder = Path(directory)
    env_path, meta_path = folder / AIDER_ENV_FILENAME, folder / METADATA_FILENAME
    write_private(env_path, aider_env_file(api_port, webui_port, api_key, served_name, session_name))
    metadata = model_metadata(served_name, max_model_len, hourly_price=hourly_price)
    write_private(meta_path, json.dumps(metadata, indent=2) + "\n")
    return env_path, meta_path
