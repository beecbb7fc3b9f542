"""The dashboard's live channel stays cheap and exact: an idle poll reads no session rows, a commit from any process
shows at the very next poll, and the page and the channel share one render of the cards."""
from __future__ import annotations

import re
import sqlite3
import time
from datetime import timedelta

import pytest
import sqlalchemy as sa

from app.extensions import db
from app.web.sessions import db_stamp
from test_web_sessions import HX, ctx, make_session, text  # noqa: F401  (ctx is a fixture)


def _database(app) -> str:
    return str(db_stamp.database_file(app.config["SQLALCHEMY_DATABASE_URI"]))


def _page_version(client) -> str:
    return re.search(r'id="live-dashboard"[^>]*data-live-version="([^"]+)"', text(client.get("/"))).group(1)


def _settled() -> None:
    """Past the window in which a write is too recent to trust the files' stamp."""
    time.sleep(db_stamp.RACY_WINDOW.total_seconds() * 2)


def _as_a_worker(app, statement: str, *params) -> None:
    """A write on its own connection, as a worker thread or the CLI in another process commits it."""
    with sqlite3.connect(_database(app)) as connection:
        connection.execute(statement, params)


@pytest.fixture
def queries(ctx):
    seen: list[str] = []

    def count(_conn, _cursor, statement, *_args) -> None:
        seen.append(statement)

    sa.event.listen(db.engine, "before_cursor_execute", count)
    yield seen
    sa.event.remove(db.engine, "before_cursor_execute", count)


def test_an_idle_poll_reads_no_session_rows(client, ctx, queries):
    for _ in range(3):
        make_session("ready")
    version = _page_version(client)
    _settled()
    assert client.get("/live", query_string={"v": version}, headers=HX).status_code == 204  # remembers this stamp
    queries.clear()
    for _ in range(5):
        assert client.get("/live", query_string={"v": version}, headers=HX).status_code == 204
    assert not [q for q in queries if "FROM sessions" in q or "FROM orphan" in q], queries


@pytest.mark.parametrize("settle", [False, True], ids=["at-once", "after-a-pause"])
def test_a_commit_from_another_process_shows_at_the_next_poll(app, client, settle):
    with app.app_context():
        session = make_session("booting")
        name, session_id = session.name, session.id
    version = _page_version(client)
    _settled()
    assert client.get("/live", query_string={"v": version}, headers=HX).status_code == 204
    _as_a_worker(app, "UPDATE sessions SET status = 'ready', tunnel_state = 'up' WHERE id = ?", session_id)
    if settle:
        _settled()  # the stamp is trusted again: it must differ from the one remembered
    answer = client.get("/live", query_string={"v": version}, headers=HX)
    assert answer.status_code == 200 and answer.headers["X-Live-Version"] != version
    card = re.search(rf'<article[^>]*id="session-{name}".*?</article>', text(answer), re.S).group(0)
    assert 'data-state="ready"' in card


def test_a_new_orphan_found_by_the_sweep_shows_at_the_next_poll(app, client):
    version = _page_version(client)
    _settled()
    assert client.get("/live", query_string={"v": version}, headers=HX).status_code == 204
    _as_a_worker(app, "INSERT INTO orphan_instances (provider, instance_id, label, region, plan, hourly_price, "
                      "first_seen_at, last_seen_at) VALUES ('linode', '99', 'maider-feedbeef', 'us-ord', 'g1', 1.5, "
                      "'2026-01-01 00:00:00', '2026-01-01 00:00:00')")
    _settled()
    answer = client.get("/live", query_string={"v": version}, headers=HX)
    assert answer.status_code == 200 and "maider-feedbeef" in text(answer)


def test_the_page_and_the_channel_show_the_same_cards(client, ctx):
    for status in ("ready", "booting", "failed"):
        make_session(status)
    page = text(client.get("/"))
    answer = text(client.get("/live", query_string={"v": "stale"}, headers=HX))
    def cards(body: str) -> list[str]:  # the figures that tick in the browser were rendered a moment apart
        return [re.sub(r' data-tick-[a-z]+="[^"]*"', "", card)
                for card in re.findall(r'<article class="card session-card".*?</article>', body, re.DOTALL)]

    assert len(cards(page)) == 3 and cards(page) == cards(answer)
    assert 'id="sessions" hx-swap-oob="true"' in answer and 'id="sessions">' in page  # out of band only on the channel


def test_a_stamp_is_not_trusted_right_after_a_write(tmp_path):
    path = tmp_path / "x.db"
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("CREATE TABLE t (v)")
    assert db_stamp.stamp(path) is None  # written a moment ago: a commit in the same tick could hide
    _settled()
    before = db_stamp.stamp(path)
    assert before is not None and db_stamp.stamp(path) == before
    with sqlite3.connect(path) as connection:
        connection.execute("INSERT INTO t VALUES (1)")
    _settled()
    assert db_stamp.stamp(path) not in (None, before)
    assert db_stamp.database_file("sqlite://") is None and db_stamp.database_file("sqlite:///:memory:") is None


def test_an_idle_tab_gets_its_cookie_re_signed_hourly_not_at_every_poll(client, ctx, monkeypatch):
    version = _page_version(client)
    client.get("/live", query_string={"v": version}, headers=HX)  # the first answer after sign-in notes the time
    polls = [client.get("/live", query_string={"v": version}, headers=HX) for _ in range(3)]
    assert all(p.status_code == 204 and "Set-Cookie" not in p.headers for p in polls)
    with monkeypatch.context() as hour_later:
        hour_later.setattr("app.web.COOKIE_REFRESH", timedelta(0))
        later = client.get("/live", query_string={"v": version}, headers=HX)
    cookie = later.headers["Set-Cookie"]
    assert later.status_code == 204 and "Expires=" in cookie and "HttpOnly" in cookie  # the 7 days start again
    assert client.get("/live", query_string={"v": version}, headers=HX).status_code == 204  # still signed in
