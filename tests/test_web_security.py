"""The panel's guards: host allowlist (DNS rebinding), CSRF on state changes, CSP with no inline script."""
from __future__ import annotations

import re

import pytest

from app.web.security import host_is_allowed
from engine_helpers import csrf_token


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1:8765", "localhost:1", "[::1]:8765", "[::1]", "LOCALHOST"])
def test_loopback_hosts_are_allowed(host):
    assert host_is_allowed(host)


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8765", "127.0.0.1.evil.example", "localhost.evil",
                                  "10.0.0.5:8765", "", "127.0.0.1:80:80"])
def test_other_hosts_are_refused(host):
    assert not host_is_allowed(host)


def test_dns_rebinding_request_gets_403(client):
    response = client.get("/", headers={"Host": "evil.example:8765"})
    assert response.status_code == 403
    assert b"localhost" in response.data


def test_dashboard_answers_on_loopback(app, anon_client):
    token = app.extensions["maider_login_links"].mint()
    anon_client.get(f"/login?token={token}", headers={"Host": "127.0.0.1:8765"})
    response = anon_client.get("/", headers={"Host": "127.0.0.1:8765"})
    assert response.status_code == 200
    assert b"Sessions" in response.data


def test_post_without_csrf_token_is_refused(client):
    response = client.post("/settings/plan-cache")
    assert response.status_code == 400
    assert b"CSRF token is missing" in response.data


def test_post_with_csrf_token_header_succeeds(client):
    response = client.post("/settings/plan-cache", headers={"X-CSRFToken": csrf_token(client, "/settings/")})
    assert response.status_code == 303


def test_csp_forbids_inline_scripts_and_pages_have_none(client):
    response = client.get("/")
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    html = response.get_data(as_text=True)
    for tag in re.findall(r"<script[^>]*>", html):
        assert "src=" in tag, f"inline script found: {tag}"
    assert " on" + "click=" not in html


def test_vendored_htmx_is_version_2(client):
    with client.get("/static/vendor/htmx-2.0.11.min.js") as response:
        assert response.status_code == 200
        assert b'version:"2.0.11"' in response.data.replace(b" ", b"")


def test_unknown_page_is_a_friendly_404(client):
    response = client.get("/no/such/page")
    assert response.status_code == 404
    assert b"Traceback" not in response.data
    assert b"Back to sessions" in response.data


def test_api_errors_are_json(client):
    response = client.get("/api/v1/nothing-here")
    assert response.status_code == 404
    assert response.is_json and response.json["status"] == 404
