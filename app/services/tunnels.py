"""Tunnel use cases: re-establish a session's forwards on request (``maider tunnel``, the panel's button)."""
from __future__ import annotations

from typing import Any

from flask import Flask

from app.engine.runtime import runtime
from app.engine.state import record_event
from app.engine.tunnel_front import ENTER_PATH
from app.errors import ConflictError, UserError
from app.extensions import db
from app.models import SessionState
from app.services import sessions as sessions_service


def request_reconnect(app: Flask, name: str, actor: str) -> dict[str, Any]:
    """Drop the session's SSH connection and forwards so they are rebuilt at once on the same local ports."""
    session = sessions_service.get_session(name)
    if session.state != SessionState.READY:
        raise UserError(f"session '{name}' is {session.state.label.lower()}; tunnels exist once it is ready")
    engine = runtime(app)
    engine.tunnels.reconnect(session.uid)
    session.tunnel_state = "reconnecting"
    record_event(session, "action", "tunnel reconnect requested", actor=actor)
    db.session.commit()
    return {"name": session.name, "tunnel_state": session.tunnel_state, "api_port": session.api_port,
            "webui_port": session.webui_port}


def webui_entry(app: Flask, name: str) -> tuple[int, str]:
    """(local port, path with a one-time token): a link that signs a browser into the session's Open WebUI."""
    session = sessions_service.get_session(name)
    if session.state not in (SessionState.READY, SessionState.SWITCHING_MODEL) or session.destroy_requested_at:
        raise ConflictError(f"session '{name}' is {session.state.label.lower()}; Open WebUI opens once it is ready")
    link = runtime(app).tunnels.webui_link(session.uid)
    if link is None:
        raise ConflictError(f"the tunnels of '{name}' are not open yet; maider reopens them within seconds")
    port, token = link
    return port, f"{ENTER_PATH}?t={token}"
