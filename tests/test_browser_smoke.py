"""Smoke test in Debian's Chromium: the page loads under the CSP without violations, htmx runs, and a form posts
with its CSRF token but is refused without it."""
from __future__ import annotations

import pytest

from engine_helpers import serve_in_thread

pytestmark = pytest.mark.browser


@pytest.fixture
def live_url(app, page):
    """The panel in a thread, with ``page`` signed in as the owner through a one-time link."""
    with serve_in_thread(app) as url:
        page.goto(f"{url}/login?token={app.extensions['maider_login_links'].mint()}")
        yield url


def _collect_csp_violations(page) -> list[str]:
    violations: list[str] = []
    page.on("console", lambda message: violations.append(message.text)
            if "Content Security Policy" in message.text else None)
    return violations


def test_dashboard_loads_with_htmx_and_no_csp_violation(page, live_url):
    violations = _collect_csp_violations(page)
    page.goto(live_url + "/")
    assert page.title().endswith("maider")
    page.wait_for_function("() => window.htmx !== undefined && typeof htmx.version === 'string'")
    assert page.evaluate("htmx.version").startswith("2.")
    assert violations == []


def test_form_posts_with_the_token_and_is_refused_without(page, live_url):
    violations = _collect_csp_violations(page)
    page.goto(live_url + "/settings/")
    page.get_by_role("button", name="Clear plan cache").click()
    page.wait_for_load_state()
    assert "plan cache" in page.locator(".flash").inner_text()

    page.goto(live_url + "/settings/")
    page.evaluate("document.querySelector('#clear-cache-form input[name=csrf_token]').remove()")
    page.get_by_role("button", name="Clear plan cache").click()
    page.wait_for_load_state()
    assert "CSRF token is missing" in page.content()
    assert violations == []
