"""The panel's link into a session's Open WebUI: for its signed-in user only, once, and it gives a working WebUI;
a local client without it gets nothing from Open WebUI."""
from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import httpx

from app.services import sessions as sessions_service

from test_tunnel_restart import demo_app, ready_session  # noqa: F401  (the fixture is used by name)

WEBUI_TEXT = "served by vLLM through maider's tunnel"


def test_the_panels_link_signs_the_browser_into_open_webui_once(demo_app, tmp_path, client):  # noqa: F811
    session = ready_session(demo_app, "chat", tmp_path / "project")
    plain = httpx.get(f"http://127.0.0.1:{session.webui_port}/", timeout=10)
    assert plain.status_code == 403 and "from the maider panel" in plain.text and WEBUI_TEXT not in plain.text

    link = client.get("/sessions/chat/webui")  # the panel as http://localhost:PORT/: the link keeps that name
    assert link.status_code == 303 and link.headers["Cache-Control"] == "no-store"
    target = urlsplit(link.headers["Location"])
    assert (target.hostname, target.port, target.path) == ("localhost", session.webui_port, "/__maider/enter")
    with httpx.Client(timeout=10, follow_redirects=True) as browser:
        page = browser.get(link.headers["Location"])
        assert page.status_code == 200 and WEBUI_TEXT in page.text
        assert browser.get(f"http://localhost:{session.webui_port}/").status_code == 200  # the cookie holds
    again = httpx.get(link.headers["Location"], timeout=10)
    assert again.status_code == 403  # a link works once


def test_no_link_for_a_session_without_open_webui(demo_app, tmp_path, client):  # noqa: F811
    assert client.get("/sessions/ghost/webui").status_code == 404
    with demo_app.app_context():
        request = sessions_service.LaunchRequest(workdir=str(tmp_path / "project"), name="early")
        sessions_service.request_launch(request, home=Path(demo_app.config["MAIDER_HOME"]), demo=True)
    early = client.get("/sessions/early/webui")
    assert early.status_code == 400 and "opens once it is ready" in early.get_data(as_text=True)


def test_a_visitor_who_is_not_signed_in_gets_no_link(demo_app, tmp_path, anon_client):  # noqa: F811
    ready_session(demo_app, "private", tmp_path / "project")
    response = anon_client.get("/sessions/private/webui")
    assert response.status_code in (302, 303, 401, 403)
    assert "/__maider/enter" not in response.headers.get("Location", "")
