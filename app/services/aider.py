"""The aider hand-off: the files and the command that connect aider to a session's tunnelled vLLM."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from app.domain.aider import AIDER_ENV_FILENAME, METADATA_FILENAME, aider_command, aider_env_file, model_metadata
from app.engine.identity import load_identity
from app.errors import UserError
from app.models import Session, SessionState


def command_for(session: Session, directory: str | None = None) -> str:
    """The copy-button command: sources .aider-env in ``directory`` (the key never appears in the page)."""
    return _command_in(directory or session.workdir or ".")


@lru_cache(maxsize=64)
def _command_in(directory: str) -> str:
    """Depends on the folder alone, and every card on the dashboard asks for it: build it once per folder."""
    folder = Path(directory)
    return aider_command(str(folder / AIDER_ENV_FILENAME), str(folder / METADATA_FILENAME))


def handoff(session: Session, home: Path) -> dict[str, Any]:
    """File contents for ``maider up``/``use`` to write where the user works (contains the API key)."""
    if session.state != SessionState.READY or not session.api_port:
        raise UserError(f"session '{session.name}' is {session.state.label.lower()}; aider can connect once it is "
                        "ready")
    identity = load_identity(home, session.uid)
    return {
        "env_file": aider_env_file(session.api_port, session.webui_port or 0, identity.api_key, session.served_name,
                                   session.name),
        "metadata": model_metadata(session.served_name, session.max_model_len or 32768,
                                   hourly_price=session.hourly_price),
        "env_filename": AIDER_ENV_FILENAME, "metadata_filename": METADATA_FILENAME,
        "api_base": f"http://127.0.0.1:{session.api_port}/v1", "model": f"openai/{session.served_name}",
    }
