"""Helpers for engine tests: run the workers' ``run_once`` functions in the test thread until a condition holds."""
from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from flask import Flask


from app.engine import monitor, provision
from app.services import sessions as sessions_service
from app.extensions import db
from app.models import Session, SessionState

FAST_TIMINGS = {"poll_first": 0.05, "poll_max": 0.25, "destroy_retry_max": 0.2, "ssh_connect_timeout": 2,
                "http_timeout": 2}


def drive(app: Flask, name: str, until: Callable[[Session], bool], timeout: float = 30.0,
          with_monitor: bool = False) -> Session:
    """Advance sessions step by step (as the supervisor's threads would) until ``until(session)`` holds."""
    deadline = time.monotonic() + timeout
    while True:
        with app.app_context():
            provision.run_once(app)
            if with_monitor:
                monitor.run_once(app)
            session = db.session.scalar(db.select(Session).where(Session.name == name)
                                        .order_by(Session.id.desc()).limit(1))
            if session is not None and until(session):
                db.session.expunge(session)
                return session
            state = session.status if session is not None else "missing"
            message = session.status_message if session is not None else ""
            db.session.remove()
        if time.monotonic() > deadline:
            raise AssertionError(f"session {name} stuck in {state}: {message}")
        time.sleep(0.03)


def wait_for(predicate: Callable[[], object], timeout: float = 8.0) -> object:
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def in_state(*states: SessionState) -> Callable[[Session], bool]:
    values = {s.value for s in states}
    return lambda session: session.status in values


def free_port() -> int:
    """A loopback port free right now (the kernel's pick), for servers a test starts."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def write_project(workdir: Path, env: str, secrets: str = "") -> None:
    (workdir / ".env").write_text(env)
    if secrets:
        (workdir / ".env.secrets").write_text(secrets)


LINODE_TOKEN = "linode-test-token-planted"


def launch(app: Flask, name: str, workdir: Path, **kwargs) -> str:
    """Request a launch as the panel or the CLI would."""
    with app.app_context():
        request = sessions_service.LaunchRequest(workdir=str(workdir), name=name, **kwargs)
        return sessions_service.request_launch(request, home=Path(app.config["MAIDER_HOME"])).name


def sign_in_owner(app: Flask, client) -> None:
    """Sign ``client`` in through a fresh one-time owner link (what 'maider serve' / 'maider open' print)."""
    token = app.extensions["maider_login_links"].mint()
    response = client.get(f"/login?token={token}")
    assert response.status_code == 303, response.get_data(as_text=True)[:300]


def csrf_token(client, path: str = "/") -> str:
    """The CSRF token a page hands the browser (its meta tag), for posting as htmx does."""
    page = client.get(path).get_data(as_text=True)
    return re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)


@contextmanager
def serve_in_thread(app: Flask) -> Iterator[str]:
    """Serve ``app`` on a free loopback port for a browser; yields its base URL."""
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(5)
