"""Who an API request acts as."""
from __future__ import annotations

from app.services import users as users_service


def api_actor() -> str:
    """The API token is the owner's (it lives in their MAIDER_HOME), so actions through it are the owner's, from the
    CLI. The server decides this: nothing a request says about itself is taken for who did it."""
    return f"{users_service.ensure_owner().name} (cli)"
