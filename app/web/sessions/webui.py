"""The panel's door into a session's tunnelled Open WebUI: a one-time link for the logged-in user's browser.

The WebUI port admits only browsers holding maider's access cookie (``app.engine.tunnel_front``); this route, behind
the panel's login, mints a one-time, short-lived token and sends the browser to the WebUI port, which trades it for
the cookie. A web page or another local user cannot get one.
"""
from __future__ import annotations

from flask import current_app, redirect, request
from werkzeug.wrappers import Response

from app.services import tunnels as tunnels_service
from app.web.sessions import bp


@bp.get("/sessions/<name>/webui")
def webui(name: str) -> Response:
    """Redirect to the session's Open WebUI through a link that works once, for a minute."""
    port, path = tunnels_service.webui_entry(current_app, name)
    # The same host name as the panel, so the cookie is set same-site (SameSite=Strict) in a frame or a tab.
    host = "localhost" if request.host.split(":")[0].lower() == "localhost" else "127.0.0.1"
    response = redirect(f"http://{host}:{port}{path}", code=303)
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response
