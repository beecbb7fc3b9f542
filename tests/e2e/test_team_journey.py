"""Teammates in Chromium against a real ``maider serve --demo``: the owner invites an operator and a viewer from the
Team page; each opens the invite link, chooses a password and lands signed in; the operator launches and gets an
API key, signs out and back in with the password; the viewer watches but the panel refuses their launch (403)."""
from __future__ import annotations

import re

from playwright.sync_api import Browser, expect

from e2e.test_journey import _shot, panel, sign_in  # noqa: F401  (the panel fixture)

PASSWORD = "olga's long password"


def _invite(owner, name: str, role: str) -> str:
    owner.goto("/team/")
    owner.fill("#add-name", name)
    owner.select_option("#add-role", role)
    owner.click("#add-user")
    box = owner.locator("#invite-link-box")
    expect(box).to_contain_text(f"Invite link for {name}")
    expect(owner.locator(f"#user-{name}")).to_contain_text("invited")
    return owner.locator("#invite-link").inner_text().strip()


def _accept(context, link: str, name: str, password: str):
    page = context.new_page()
    page.goto(link)
    expect(page.locator("h1")).to_have_text(f"Welcome, {name}")
    page.fill("#invite-password", password)
    page.fill("#invite-confirm", password + "x")
    page.click("#invite-submit")
    expect(page.locator("#invite-error")).to_contain_text("differ")
    page.fill("#invite-password", password)
    page.fill("#invite-confirm", password)
    page.click("#invite-submit")
    expect(page).to_have_url(re.compile(r"/$"))
    expect(page.locator(".whoami")).to_contain_text(name)
    return page


def test_invite_password_sign_in_and_act_by_role(panel, browser: Browser):  # noqa: F811
    url = panel["url"]
    owner_context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=url)
    sign_in(panel, owner_context)
    owner = owner_context.new_page()
    olga_link = _invite(owner, "olga", "operator")
    _shot(owner, "10-team-invite")
    vic_link = _invite(owner, "vic", "viewer")

    # The operator: invite → password → dashboard → launch → own API key.
    olga_context = browser.new_context(viewport={"width": 1100, "height": 850}, base_url=url)
    olga = _accept(olga_context, olga_link, "olga", PASSWORD)
    expect(olga.locator('nav a[href="/team/"]')).to_have_count(0)
    olga.click("#launch-demo")
    card = olga.locator(".session-card").first
    expect(card).to_be_visible(timeout=15_000)
    card.get_by_role("link", name="Open").click()
    expect(olga.locator("#session-events")).to_contain_text("olga", timeout=10_000)
    olga.click("#new-api-key")
    expect(olga.locator("#api-key-value")).to_contain_text("export MAIDER_API_KEY=mk-")
    _shot(olga, "11-operator-session-api-key")

    # Signing out and in again with the password she chose.
    olga.click("#sign-out")
    expect(olga.locator("#login-title")).to_have_text("Sign in")
    olga.fill("#login-name", "olga")
    olga.fill("#login-password", "not her password")
    olga.click("#login-submit")
    expect(olga.locator("#login-error")).to_contain_text("Wrong user name or password")
    olga.fill("#login-name", "olga")
    olga.fill("#login-password", PASSWORD)
    olga.click("#login-submit")
    expect(olga).to_have_url(re.compile(r"/$"))
    expect(olga.locator(".session-card")).to_have_count(1)

    # The viewer sees the session and its cost, no buttons that act, and the routes refuse acting anyway.
    vic_context = browser.new_context(viewport={"width": 400, "height": 850}, base_url=url)
    vic = _accept(vic_context, vic_link, "vic", "vic's long password")
    expect(vic.locator(".session-card")).to_have_count(1)
    expect(vic.locator("[data-testid=cost]").first).to_be_visible()
    expect(vic.locator("#launch")).to_have_count(0)
    expect(vic.locator(".session-card .button-danger")).to_have_count(0)
    status = vic.evaluate("""async () => {
        const token = document.querySelector('meta[name=csrf-token]').content;
        const response = await fetch('/sessions', {method: 'POST', headers: {'X-CSRFToken': token,
            'Content-Type': 'application/x-www-form-urlencoded'}, body: 'name=sneaky'});
        return response.status;
    }""")
    assert status == 403
    _shot(vic, "12-viewer-narrow")

    # The owner's Team page shows both teammates active.
    owner.goto("/team/")
    expect(owner.locator("#user-olga")).to_contain_text("active")
    expect(owner.locator("#user-vic")).to_contain_text("active")
    for context in (owner_context, olga_context, vic_context):
        context.close()
