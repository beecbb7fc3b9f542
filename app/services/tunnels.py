"""Tunnel use cases: re-establish a session's forwards on request (``maider tunnel``, the panel's button)."""
from __future__ import annotations

from typing import Any

from flask import Flask

from app.engine.runtime import runtime
from app.engine.state import record_event
from app.errors import UserError
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
