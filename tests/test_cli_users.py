"""``maider serve`` prints a one-time sign-in link; ``maider open`` and ``maider user ...`` work against a real server
process, as a user types them; the links they print work once in a fresh browser session."""
from __future__ import annotations

import os
import re
from pathlib import Path

import httpx
import pytest

from test_cli_demo_journey import demo_server, maider  # noqa: F401  (the fixture and the command runner)

pytestmark = pytest.mark.slow


def _server_log(world) -> str:
    return (world["project"].parent / "server.log").read_text()


def test_serve_prints_a_login_link_that_works_once(demo_server):  # noqa: F811
    link = re.search(r"Sign in \(this link works once[^)]*\): (\S+)", _server_log(demo_server)).group(1)
    assert link.startswith(f"http://127.0.0.1:{demo_server['port']}/login?token=")
    with httpx.Client() as browser:
        assert browser.get(f"http://127.0.0.1:{demo_server['port']}/").status_code == 401
        assert browser.get(link).status_code == 303
        assert browser.get(f"http://127.0.0.1:{demo_server['port']}/").status_code == 200
    with httpx.Client() as other:
        assert other.get(link).status_code == 401  # used already


def test_open_prints_a_fresh_link(demo_server):  # noqa: F811
    result = maider(demo_server, "open", "--no-browser")
    assert result.returncode == 0, result.stderr
    link = re.search(r"(http://127\.0\.0\.1:\d+/login\?token=\S+)", result.stdout).group(1)
    with httpx.Client() as browser:
        assert browser.get(link).status_code == 303
        assert "Sessions" in browser.get(link.split("/login")[0] + "/").text


def test_user_add_list_key_role_remove(demo_server):  # noqa: F811
    added = maider(demo_server, "user", "add", "ana", "--role", "operator")
    assert added.returncode == 0, added.stderr
    invite = re.search(r"(http://127\.0\.0\.1:\d+/invite/\S+)", added.stdout).group(1)
    assert httpx.get(invite).status_code == 200

    again = maider(demo_server, "user", "add", "ana")
    assert again.returncode == 1 and "exists already" in again.stderr
    bad = maider(demo_server, "user", "add", "Bad Name!")
    assert bad.returncode == 1 and "lowercase letter first" in bad.stderr

    key = maider(demo_server, "user", "key", "ana")
    assert key.returncode == 0
    plain_key = re.search(r"^(mk-\S+)$", key.stdout, re.M).group(1)

    listing = maider(demo_server, "user", "list").stdout
    assert re.search(r"^ana\s+operator\s+invited\s+" + re.escape(plain_key[:10]), listing, re.M)
    assert plain_key not in listing

    assert "ana is now viewer" in maider(demo_server, "user", "role", "ana", "viewer").stdout
    removed = maider(demo_server, "user", "remove", "ana", "--yes")
    assert removed.returncode == 0 and "Removed ana." in removed.stdout
    assert httpx.get(invite).status_code == 404
    assert "ana" not in maider(demo_server, "user", "list").stdout
    missing = maider(demo_server, "user", "remove", "nobody", "--yes")
    assert missing.returncode == 1 and "no user named" in missing.stderr


def test_open_hands_the_browser_a_private_page_not_the_token(tmp_path, monkeypatch):
    """Another local user can read every command line in /proc: the browser is started on a 0600 page that redirects,
    so the one-time token never appears in one."""
    from app.cli.users import _redirect_page

    page = _redirect_page("http://127.0.0.1:8765/login?token=secret-token&x=1")
    assert page.parent == Path(os.environ["MAIDER_HOME"])
    assert page.stat().st_mode & 0o777 == 0o600
    assert 'url=http://127.0.0.1:8765/login?token=secret-token&amp;x=1"' in page.read_text()
    assert "secret-token" not in page.as_uri()
