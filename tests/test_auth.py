"""Signing in to the panel: the owner's one-time link, invites, passwords, lock-outs, roles, and who did what.

Each test plays the person it names -- another local user with curl, a viewer, an operator, an admin -- through the
real app and a real SQLite file, and checks what they can and cannot do.
"""
from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest

from app.extensions import db
from app.models import Event, Session, User, utcnow
from app.services import users as users_service
from engine_helpers import csrf_token
from test_web_sessions import make_session

HX = {"HX-Request": "true"}


@pytest.fixture
def ctx(app):
    """Demo mode. No app context stays pushed across requests: Flask would then share ``g`` (and Flask-WTF's cached
    CSRF token) between the several browsers these tests play."""
    app.config["MAIDER_DEMO"] = True
    return app




def _login_page_token(client) -> str:
    """The CSRF token a signed-out visitor can read from the sign-in page."""
    return re.search(r'name="csrf-token" content="([^"]+)"', client.get("/").get_data(as_text=True)).group(1)


def invite_and_sign_in(app, ctx, name: str, role: str, password: str = "correct horse battery") -> object:
    """Add ``name`` as ``role``, follow the invite link in a fresh browser, choose a password; returns that browser."""
    with app.app_context():
        invite = users_service.add_user(name, role, actor="test")
    browser = app.test_client()
    page = browser.get(f"/invite/{invite.token}")
    assert page.status_code == 200 and f"Welcome, {name}" in page.get_data(as_text=True)
    token = csrf_token(browser, f"/invite/{invite.token}")
    response = browser.post(f"/invite/{invite.token}", data={"password": password, "confirm": password,
                                                            "csrf_token": token})
    assert response.status_code == 303 and response.headers["Location"] == "/"
    return browser


# ---- signed out -------------------------------------------------------------------------------------------------

def test_dashboard_without_the_cookie_shows_only_how_to_sign_in(anon_client, ctx):
    response = anon_client.get("/")
    page = response.get_data(as_text=True)
    assert response.status_code == 401
    assert "maider open" in page and "Sign in" in page
    assert "Launch a session" not in page and "Sessions</a>" not in page


@pytest.mark.parametrize("path", ["/sessions/list", "/sessions/totals", "/history/", "/settings/", "/setup/",
                                  "/team/"])
def test_every_page_and_partial_needs_a_sign_in(anon_client, ctx, path):
    response = anon_client.get(path, headers=HX)
    assert response.status_code == 401
    assert "maider:signed-out" in response.headers.get("HX-Trigger", "")


def test_a_csrf_token_harvested_from_the_login_page_launches_destroys_and_saves_nothing(anon_client, ctx):
    """Another local user with curl: read the sign-in page, take its CSRF token, try to act."""
    with ctx.app_context():
        make_session("ready", name="mine")
    headers = {"X-CSRFToken": _login_page_token(anon_client)}
    assert anon_client.post("/sessions", data={"name": "theirs"}, headers=headers).status_code == 401
    assert anon_client.delete("/sessions/mine", headers=headers).status_code == 401
    assert anon_client.post("/setup/save", data={"region": "us-ord"}, headers=headers).status_code == 401
    assert anon_client.post("/team/users", data={"name": "eve", "role": "admin"}, headers=headers).status_code == 401
    with ctx.app_context():
        assert db.session.query(Session).count() == 1
        assert db.session.query(Session).one().destroy_requested_at is None
        assert db.session.query(User).filter_by(name="eve").count() == 0
    assert not list(Path(ctx.config["MAIDER_WORKDIR"]).glob(".env*"))


def test_the_one_time_link_works_once(app, anon_client, ctx):
    token = app.extensions["maider_login_links"].mint()
    first = anon_client.get(f"/login?token={token}")
    assert first.status_code == 303 and first.headers["Location"] == "/"
    assert anon_client.get("/").status_code == 200
    other = app.test_client()
    second = other.get(f"/login?token={token}")
    assert second.status_code == 401 and "used already" in second.get_data(as_text=True)
    assert other.get("/").status_code == 401


def test_a_made_up_token_signs_nobody_in(anon_client, ctx):
    assert anon_client.get("/login?token=guess").status_code == 401
    assert anon_client.get("/").status_code == 401


def test_the_cookie_is_httponly_strict_and_named_for_the_port(tmp_path):
    from app import create_app

    app = create_app({"TESTING": True, "MAIDER_HOME": str(tmp_path / "h"), "MAIDER_PORT": 8911})
    client = app.test_client()
    token = app.extensions["maider_login_links"].mint()
    cookie = client.get(f"/login?token={token}").headers["Set-Cookie"]
    assert cookie.startswith("maider_8911=")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Secure" not in cookie


def test_the_cookie_is_secure_over_tls(tmp_path):
    from app import create_app

    app = create_app({"TESTING": True, "MAIDER_HOME": str(tmp_path / "h"), "MAIDER_PORT": 8912, "MAIDER_TLS": True})
    token = app.extensions["maider_login_links"].mint()
    assert "Secure" in app.test_client().get(f"/login?token={token}").headers["Set-Cookie"]


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/x", "/\\evil.example", "javascript:x"])
def test_sign_in_never_redirects_off_the_panel(app, anon_client, ctx, target):
    token = app.extensions["maider_login_links"].mint()
    response = anon_client.get("/login", query_string={"token": token, "next": target})
    assert response.status_code == 303 and response.headers["Location"] == "/"


# ---- invites, passwords, lock-outs -----------------------------------------------------------------------------

def test_an_invite_sets_a_password_once_and_then_the_password_signs_in(app, ctx):
    with app.app_context():
        invite = users_service.add_user("ana", "viewer", actor="test")
    browser = app.test_client()
    token = csrf_token(browser, f"/invite/{invite.token}")
    short = browser.post(f"/invite/{invite.token}", data={"password": "short", "confirm": "short", "csrf_token": token})
    assert short.status_code == 400 and "at least 10 characters" in short.get_data(as_text=True)
    ok = browser.post(f"/invite/{invite.token}", data={"password": "a long password", "confirm": "a long password",
                                                      "csrf_token": token})
    assert ok.status_code == 303
    again = app.test_client().get(f"/invite/{invite.token}")
    assert again.status_code == 404 and "used already" in again.get_data(as_text=True)

    fresh = app.test_client()
    token = csrf_token(fresh, "/login")
    wrong = fresh.post("/login", data={"name": "ana", "password": "not it at all", "csrf_token": token})
    assert wrong.status_code == 401 and "wrong user name or password" in wrong.get_data(as_text=True).lower()
    right = fresh.post("/login", data={"name": "ana", "password": "a long password", "csrf_token": token})
    assert right.status_code == 303 and fresh.get("/").status_code == 200


def test_an_invite_expires_after_a_day(app, ctx):
    with app.app_context():
        invite = users_service.add_user("old", "viewer", actor="test", now=utcnow() - timedelta(hours=25))
    response = app.test_client().get(f"/invite/{invite.token}")
    assert response.status_code == 404 and "expired" in response.get_data(as_text=True)


def test_ten_wrong_passwords_in_a_minute_lock_the_account_for_five_minutes(app, ctx):
    invite_and_sign_in(app, ctx, "bo", "operator", password="bo's real password")
    # Attempts from several addresses: the per-account lock holds whatever address guesses.
    for attempt in range(10):
        browser = app.test_client()
        token = csrf_token(browser, "/login")
        response = browser.post("/login", data={"name": "bo", "password": f"guess {attempt}", "csrf_token": token},
                                environ_base={"REMOTE_ADDR": f"10.0.0.{attempt}"})
        assert response.status_code == 401
    assert "locked for 5 minutes" in response.get_data(as_text=True)
    browser = app.test_client()
    token = csrf_token(browser, "/login")
    locked = browser.post("/login", data={"name": "bo", "password": "bo's real password", "csrf_token": token})
    assert locked.status_code == 401 and "locked" in locked.get_data(as_text=True)
    with app.app_context():
        user = db.session.query(User).filter_by(name="bo").one()
        user.locked_until = utcnow() - timedelta(seconds=1)  # five minutes later
        db.session.commit()
    later = browser.post("/login", data={"name": "bo", "password": "bo's real password", "csrf_token": token})
    assert later.status_code == 303


def test_one_address_guessing_many_accounts_is_slowed_down(app, ctx):
    browser = app.test_client()
    token = csrf_token(browser, "/login")
    codes = [browser.post("/login", data={"name": f"user{i}", "password": "guess guess", "csrf_token": token},
                          environ_base={"REMOTE_ADDR": "10.9.9.9"}).status_code for i in range(25)]
    assert codes[:20] == [401] * 20
    assert codes[-1] == 429


# ---- roles ------------------------------------------------------------------------------------------------------

def test_a_viewer_sees_sessions_and_cost_but_cannot_act(app, ctx):
    with app.app_context():
        session_name = make_session("ready", name="shared").name
    viewer = invite_and_sign_in(app, ctx, "vic", "viewer")
    assert viewer.get("/").status_code == 200
    assert "shared" in viewer.get("/").get_data(as_text=True)
    assert viewer.get(f"/sessions/{session_name}").status_code == 200
    assert viewer.get("/history/").status_code == 200
    token = csrf_token(viewer)
    headers = {**HX, "X-CSRFToken": token}
    assert viewer.post("/sessions", data={"name": "mine"}, headers=headers).status_code == 403
    assert viewer.delete(f"/sessions/{session_name}", headers=headers).status_code == 403
    assert viewer.post(f"/sessions/{session_name}/extend", headers=headers).status_code == 403
    assert viewer.post("/setup/save", data={}, headers=headers).status_code == 403
    assert viewer.get("/settings/").status_code == 403
    assert viewer.get("/team/").status_code == 403
    refused = viewer.post("/sessions", data={"name": "mine"}, headers={"X-CSRFToken": token})
    assert "Your role (viewer) cannot launch" in refused.get_data(as_text=True)
    with app.app_context():
        assert db.session.query(Session).count() == 1
        assert db.session.query(Session).one().destroy_requested_at is None


def test_a_viewer_sees_no_launch_form_or_admin_links(app, ctx):
    viewer = invite_and_sign_in(app, ctx, "vera", "viewer")
    page = viewer.get("/").get_data(as_text=True)
    assert 'href="/team/"' not in page and 'href="/settings/"' not in page and 'href="/setup/"' not in page


def test_an_operator_launches_and_destroys_and_events_name_them(app, ctx):
    operator = invite_and_sign_in(app, ctx, "olga", "operator")
    headers = {**HX, "X-CSRFToken": csrf_token(operator)}
    assert operator.post("/sessions", data={"name": "olgas"}, headers=headers).status_code == 200
    assert operator.get("/team/").status_code == 403
    assert operator.delete("/sessions/olgas", headers=headers).status_code == 200
    with app.app_context():
        session = db.session.query(Session).filter_by(name="olgas").one()
        assert session.created_by == "olga" and session.destroy_requested_at is not None
        actors = {e.actor for e in db.session.query(Event).filter_by(session_id=session.id)}
    assert "olga" in actors


def test_an_admin_manages_users_and_a_removed_user_is_signed_out_at_once(app, ctx, client):
    bob = invite_and_sign_in(app, ctx, "bob", "operator")
    assert bob.get("/").status_code == 200
    headers = {**HX, "X-CSRFToken": csrf_token(client, "/team/")}
    added = client.post("/team/users", data={"name": "cy", "role": "viewer"}, headers=headers)
    link = re.search(r'id="invite-link">([^<]+)<', added.get_data(as_text=True)).group(1)
    assert "/invite/" in link
    demoted = client.post("/team/users/bob/role", data={"role": "viewer"}, headers=headers)
    assert "bob is now viewer" in demoted.get_data(as_text=True)
    assert bob.get("/").status_code == 401  # a role change signs the user out everywhere
    removed = client.delete("/team/users/cy", headers=headers)
    assert removed.status_code == 200 and "Removed cy" in removed.get_data(as_text=True)
    with app.app_context():
        assert db.session.query(User).filter_by(name="cy").count() == 0
        owner = db.session.query(User).filter_by(is_owner=True).one()
        messages = {(e.actor, e.message) for e in db.session.query(Event).filter_by(kind="user")}
    assert (owner.name, "Removed cy") in messages


def test_the_owner_cannot_be_removed_or_demoted(app, ctx, client):
    with app.app_context():
        owner = db.session.query(User).filter_by(is_owner=True).one().name
    headers = {**HX, "X-CSRFToken": csrf_token(client, "/team/")}
    removal = client.delete(f"/team/users/{owner}", headers=headers)
    assert "the owner cannot be removed" in removal.headers["HX-Trigger"]
    demotion = client.post(f"/team/users/{owner}/role", data={"role": "viewer"}, headers=headers)
    assert "always an admin" in demotion.headers["HX-Trigger"]
    with app.app_context():
        assert db.session.query(User).filter_by(is_owner=True).one().role == "admin"


def test_team_page_refuses_a_bad_name_with_a_message(app, ctx, client):
    headers = {**HX, "X-CSRFToken": csrf_token(client, "/team/")}
    response = client.post("/team/users", data={"name": "<b>x</b>", "role": "viewer"}, headers=headers)
    assert response.status_code == 200 and "A lowercase letter first" in response.get_data(as_text=True)
    response = client.post("/team/users", data={"name": "zed", "role": "root"}, headers=headers)
    assert "Not a valid choice" in response.get_data(as_text=True)
    with app.app_context():
        assert db.session.query(User).filter(User.name.in_(["zed", "<b>x</b>"])).count() == 0


def test_a_removed_users_cookie_never_signs_in_as_the_next_user_added(app, ctx, client):
    """Mallory is removed; Alice is added next (an admin). Mallory's old cookie must not become Alice's."""
    mallory = invite_and_sign_in(app, ctx, "mallory", "viewer", password="mallory's password")
    stolen = mallory.get_cookie("maider_session").value
    headers = {**HX, "X-CSRFToken": csrf_token(client, "/team/")}
    assert client.delete("/team/users/mallory", headers=headers).status_code == 200
    invite_and_sign_in(app, ctx, "alice", "admin", password="alice's password")
    replay = app.test_client()
    replay.set_cookie("maider_session", stolen)
    assert replay.get("/team/").status_code == 401
    assert replay.get("/").status_code == 401
    with app.app_context():
        ids = {u.name: u.id for u in db.session.query(User)}
    assert "mallory" not in ids and ids["alice"] > max(i for n, i in ids.items() if n != "alice")


def test_signing_out_ends_every_copy_of_the_cookie(app, ctx):
    browser = invite_and_sign_in(app, ctx, "sam", "viewer")
    copy = app.test_client()
    copy.set_cookie("maider_session", browser.get_cookie("maider_session").value)
    assert copy.get("/").status_code == 200
    signed_out = browser.post("/logout", headers={"X-CSRFToken": csrf_token(browser)})
    assert signed_out.status_code == 303  # a viewer may sign out
    assert browser.get("/").status_code == 401 and copy.get("/").status_code == 401
