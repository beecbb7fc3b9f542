"""One live session per name: concurrent launches cannot share one, databases with duplicates upgrade cleanly, and
the panel's pages and actions address the exact row they show."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest
import sqlalchemy as sa
from flask_migrate import upgrade

from app import MIGRATIONS_DIR, create_app
from app.extensions import db
from app.models import Event, Session
from engine_helpers import csrf_token, free_port, serve_in_thread, wait_for
from test_web_sessions import HX, make_session

TOKEN = "names-token"
LAUNCHES = 10
MAIDER = [sys.executable, "-c", "from app.cli import main; main()"]


def _race(url: str, token: str, bodies: list[dict]) -> list[httpx.Response]:
    """Send every body at the same instant, one thread each, as ten terminals running ``maider up`` would."""
    start = threading.Barrier(len(bodies))
    answers: list[httpx.Response | None] = [None] * len(bodies)

    def launch(index: int) -> None:
        start.wait()
        answers[index] = httpx.post(f"{url}/api/v1/sessions", json=bodies[index], timeout=60,
                                    headers={"Authorization": f"Bearer {token}"})

    threads = [threading.Thread(target=launch, args=(i,)) for i in range(len(bodies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    return [a for a in answers if a is not None]


@pytest.fixture
def demo_server(tmp_path):
    """``maider serve`` in demo mode, with its workers: launches there create (simulated) VMs."""
    project = tmp_path / "project"
    home = tmp_path / "maider-home"
    env = {k: v for k, v in os.environ.items() if k not in ("LINODE_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
    env.update(MAIDER_HOME=str(home), MAIDER_DEMO_SPEED="8", HOME=str(tmp_path / "home"))
    port = free_port()
    log_path = tmp_path / "server.log"
    with open(log_path, "w") as log:
        server = subprocess.Popen(MAIDER + ["serve", "--port", str(port)], cwd=project, env=env, stdout=log,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    info_path = home / "server.json"
    deadline = time.monotonic() + 30
    while not info_path.exists():
        assert server.poll() is None, log_path.read_text()
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.1)
    yield {"home": home, "info": json.loads(info_path.read_text())}
    os.killpg(server.pid, signal.SIGINT)
    try:
        server.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)


@pytest.mark.slow
def test_ten_concurrent_launches_with_one_name_make_one_session_and_one_vm(demo_server):
    info = demo_server["info"]
    answers = _race(info["url"], info["api_token"], [{"name": "race-1"}] * LAUNCHES)
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [201] + [409] * (LAUNCHES - 1), [a.text for a in answers]
    refused = [a.json() for a in answers if a.status_code == 409]
    assert all("a session named 'race-1' already exists" in r["error"] and r["status"] == 409 for r in refused)
    headers = {"Authorization": f"Bearer {info['api_token']}"}

    def created() -> dict | None:
        session = httpx.get(f"{info['url']}/api/v1/sessions/race-1", headers=headers).json()
        return session if session["instance_id"] or session["status"] in ("failed", "destroyed") else None

    session = wait_for(created, timeout=90)
    assert session["instance_id"], session
    listed = httpx.get(f"{info['url']}/api/v1/sessions", headers=headers).json()
    assert [s["name"] for s in listed["sessions"]] == ["race-1"] and listed["orphans"] == []
    records = json.loads(next(demo_server["home"].rglob("simulated/instances.json")).read_text())
    assert list(records) == [session["instance_id"]]  # the demo cloud holds one VM


def test_ten_concurrent_unnamed_launches_get_ten_names(app, tmp_path):
    app.config.update(MAIDER_API_TOKEN=TOKEN, MAIDER_DEMO=True)
    with serve_in_thread(app) as url:
        answers = _race(url, TOKEN, [{}] * LAUNCHES)
    assert sorted(a.status_code for a in answers) == [201] * LAUNCHES, [a.text for a in answers]
    names = sorted(a.json()["name"] for a in answers)
    assert len(set(names)) == LAUNCHES
    assert set(names) == {f"project-{n}" for n in range(1, LAUNCHES + 1)}  # after the project folder
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Session)) == LAUNCHES
    from app.engine.runtime import runtime

    runtime(app).close()


def test_the_database_refuses_a_second_live_session_with_one_name(app):
    with app.app_context():
        make_session("destroyed", name="twice")
        make_session("ready", name="twice")  # an ended session's name may be taken again
        with pytest.raises(sa.exc.IntegrityError):
            make_session("booting", name="twice")
        db.session.rollback()
        make_session("destroyed", name="twice")  # ended ones may share it
        assert db.session.scalar(sa.select(sa.func.count()).where(Session.name == "twice")) == 3


def _insert_session(connection, uid: str, name: str, status: str, destroyed_at: str | None = None) -> None:
    connection.execute(sa.text(
        "insert into sessions (uid, name, provider, label, region, plan, gpus, model_id, served_name, vllm_config,"
        " hourly_price, status, status_changed_at, ssh_port, tunnel_state, keep_on_failure, heal_attempts,"
        " destroy_attempts, budget_usd, max_lifetime_hours, created_by, created_at, poll_count, engine_state,"
        " destroyed_at) values (:uid, :name, 'simulated', :label, 'us-ord', 'g2-gpu-rtx4000a1-s', 1, 'm/m', 'coder',"
        " '{}', 0.52, :status, '2026-11-01 00:00:00', 22, 'up', 0, 0, 0, 0, 0, 'local', '2026-11-01 00:00:00', 0,"
        " '{}', :destroyed_at)"),
        {"uid": uid, "name": name, "label": f"maider-{uid}", "status": status, "destroyed_at": destroyed_at})


def test_upgrade_renames_live_duplicates_written_before_the_index(tmp_path):
    long_name = "a" * 40
    app = create_app({"MAIDER_HOME": str(tmp_path / "h"), "MAIDER_AUTO_MIGRATE": False,
                      "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'm.db'}"})
    with app.app_context():
        upgrade(directory=str(MIGRATIONS_DIR), revision="0002")
        with db.engine.begin() as connection:
            _insert_session(connection, "u1", "race-1", "ready")
            _insert_session(connection, "u2", "race-1", "booting")
            _insert_session(connection, "u3", "race-1", "ready")
            _insert_session(connection, "u4", "race-1", "destroyed", "2026-11-01 01:00:00")
            _insert_session(connection, "u5", "race-1-2", "destroyed", "2026-11-01 01:00:00")  # a past name
            _insert_session(connection, "u6", long_name, "ready")
            _insert_session(connection, "u7", long_name, "ready")
            _insert_session(connection, "u8", "gone", "destroyed")  # destroyed, but no time: never live
            _insert_session(connection, "u9", "gone", "ready")
        upgrade(directory=str(MIGRATIONS_DIR))
        names = dict(db.session.execute(sa.text("select uid, name from sessions")).all())
        assert names["u3"] == "race-1"  # the newest keeps the name it was addressed by
        assert {names["u1"], names["u2"]} == {"race-1-3", "race-1-4"}  # race-1-2 was taken in the past
        assert names["u4"] == "race-1" and names["u7"] == long_name
        assert names["u6"] == "a" * 38 + "-2" and len(names["u6"]) == 40
        assert names["u8"] == names["u9"] == "gone"
        renamed = db.session.execute(sa.text(
            "select s.uid, e.message from events e join sessions s on s.id = e.session_id")).all()
        assert {uid for uid, _ in renamed} == {"u1", "u2", "u6"}
        assert all("another live session had the same name" in message for _, message in renamed)
        with pytest.raises(sa.exc.IntegrityError):
            with db.engine.begin() as connection:
                _insert_session(connection, "u10", "race-1", "requested")


@pytest.fixture
def ctx(app):
    with app.app_context():
        yield app


def test_a_page_of_an_ended_session_addresses_that_session_not_the_live_one(client, ctx):
    old = make_session("destroyed", name="daily", model_id="org/old-model")
    live = make_session("ready", name="daily", model_id="org/new-model")
    page = client.get(f"/sessions/daily?uid={old.uid}").get_data(as_text=True)
    assert "org/old-model" in page and "org/new-model" not in page and f"uid={live.uid}" not in page
    for part in ("header", "sections/events", "sections/switch"):
        body = client.get(f"/sessions/daily/{part}?uid={old.uid}", headers=HX).get_data(as_text=True)
        assert "org/new-model" not in body and f"uid={live.uid}" not in body
    live_page = client.get(f"/sessions/daily?uid={live.uid}").get_data(as_text=True)
    assert f"/sessions/daily/live?uid={live.uid}" in live_page  # the page's live channel
    assert f'hx-delete="/sessions/daily?view=header&amp;uid={live.uid}"' in live_page
    assert f"uid={old.uid}" not in live_page


def test_an_action_from_an_ended_sessions_page_never_reaches_the_live_one(client, ctx):
    old = make_session("destroyed", name="daily")
    live = make_session("ready", name="daily")
    headers = {**HX, "X-CSRFToken": csrf_token(client)}
    refused = client.delete(f"/sessions/daily?view=header&uid={old.uid}", headers=headers)
    assert "an earlier session named" in json.dumps(dict(refused.headers))
    extend = client.post(f"/sessions/daily/extend?uid={old.uid}", headers=headers)
    assert "an earlier session named" in json.dumps(dict(extend.headers))
    db.session.expire_all()
    assert db.session.get(Session, live.id).destroy_requested_at is None
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Event)) == 0
    destroyed = client.delete(f"/sessions/daily?view=card&uid={live.uid}", headers=headers)
    assert destroyed.status_code == 200 and "Destroy requested" in destroyed.get_data(as_text=True)
    db.session.expire_all()
    assert db.session.get(Session, live.id).destroy_requested_at is not None


def test_every_session_url_on_the_dashboard_carries_the_uid(client, ctx):
    sessions = [make_session(status) for status in ("booting", "ready", "failed")]
    page = client.get("/").get_data(as_text=True)
    for session in sessions:
        card = client.get(f"/sessions/{session.name}/card?uid={session.uid}", headers=HX).get_data(as_text=True)
        for body in (page, card):
            urls = [u for u in _session_urls(body) if f"/sessions/{session.name}" in u]
            assert urls and all(f"uid={session.uid}" in u for u in urls), urls


def _session_urls(html: str) -> list[str]:
    import re

    return re.findall(r'(?:href|hx-get|hx-post|hx-delete|action)="(/sessions/[^"]+)"', html)
