"""Two tabs on one dashboard in Chromium against a real ``maider serve --demo``: a launch in one shows in the other
through the tab's one live channel, the cost ticks in the browser, nothing errs in the console, and no page scrolls
sideways on a 400 px phone."""
from __future__ import annotations

import re
import time

import pytest
from playwright.sync_api import Browser, expect

from test_journey import SHOTS, _shot, panel, sign_in  # noqa: F401  (panel is a fixture)

pytestmark = pytest.mark.browser


def _console_errors(page, errors: list[str]) -> None:
    page.on("console", lambda msg: errors.append(f"{page.url}: {msg.text}") if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(f"{page.url}: {exc}"))


def _scrolls_sideways(page) -> bool:
    return page.evaluate("document.scrollingElement.scrollWidth > document.scrollingElement.clientWidth + 1")


def test_a_launch_in_one_tab_shows_in_the_other_and_the_cost_ticks(panel, browser: Browser):  # noqa: F811
    errors: list[str] = []
    context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=panel["url"])
    sign_in(panel, context)
    first, second = context.new_page(), context.new_page()
    for page in (first, second):
        _console_errors(page, errors)
        page.on("dialog", lambda dialog: dialog.accept())
        page.goto("/")
    expect(first.locator("[data-testid=launch-folder]")).to_have_text(str(panel["project"]))
    requests: list[str] = []
    second.on("request", lambda request: requests.append(request.url)
              if request.resource_type in ("xhr", "fetch") else None)

    first.click("#launch-demo")
    launched = time.monotonic()
    card = second.locator(".session-card")
    expect(card).to_be_visible()
    print(f"the launch showed in the other tab after {(time.monotonic() - launched) * 1000:.0f} ms")
    assert all("/live" in url for url in requests), requests  # one channel, no poll per card or per part

    cost = card.locator("[data-testid=cost]")
    expect(cost).to_have_attribute("data-tick-rate", "0.52")  # billed from the VM's creation
    before = cost.inner_text()
    calls = len(requests)
    second.wait_for_timeout(2500)
    assert cost.inner_text() != before  # ticked in the browser
    assert all("/live" in url for url in requests[calls:])
    _shot(second, "live-tabs-1280")

    mobile = browser.new_context(viewport={"width": 400, "height": 860}, base_url=panel["url"])
    sign_in(panel, mobile)
    phone = mobile.new_page()
    _console_errors(phone, errors)
    for path, name in (("/", "dashboard"), ("/settings/", "settings"), ("/history/", "history")):
        phone.goto(path)
        wide = phone.evaluate("""[...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > 401)
            .slice(0, 5).map(e => e.tagName + '.' + e.className + ' ' + Math.round(e.getBoundingClientRect().right))""")
        assert not _scrolls_sideways(phone), f"{path} scrolls sideways at 400 px: {wide}"
        _shot(phone, f"live-tabs-400-{name}")
    phone.goto("/")
    phone.click(".session-card .card-title a")
    expect(phone.locator("#session-header")).to_be_visible()
    on_page: list[str] = []
    phone.on("request", lambda request: on_page.append(request.url)
             if request.resource_type in ("xhr", "fetch") else None)  # the load charts too ride the one channel
    state = phone.locator("#session-header .badge").first
    shown = state.inner_text()
    expect(state).not_to_have_text(shown, timeout=60000)  # the launch moves on, through the page's live channel
    assert on_page and all("/live" in url for url in on_page), on_page
    assert not _scrolls_sideways(phone), "the session page scrolls sideways at 400 px"
    _shot(phone, "live-tabs-400-session")

    # Once ready, the load charts draw from the page and take each new sample from the same channel.
    expect(phone.locator("#session-header .state-badge")).to_have_text("Ready", timeout=90_000)
    phone.reload()
    tokens = phone.locator("#session-live-charts canvas[data-live=tokens_per_s]")
    expect(tokens).to_have_attribute("data-points", re.compile(r"^[1-9]"), timeout=15_000)
    points = int(tokens.get_attribute("data-points"))
    on_page.clear()
    expect(tokens).not_to_have_attribute("data-points", str(points), timeout=20_000)  # the monitor's next sample
    assert on_page and all("/live" in url for url in on_page), on_page
    phone.locator("#session-live-charts").scroll_into_view_if_needed()
    phone.screenshot(path=str(SHOTS / "live-tabs-400-session-charts.png"))

    second.click(".session-card button.button-danger")
    expect(first.locator(".session-card")).to_have_count(0, timeout=30000)

    # The spend charts, drawn by the vendored Chart.js from the data in the page.
    first.reload()
    expect(first.locator("#spend-chart canvas[data-drawn=true]")).to_have_count(1)
    first.goto("/history/")
    expect(first.locator("#history-charts canvas[data-drawn=true]")).to_have_count(3)
    _shot(first, "spend-charts-history-1280")
    assert errors == [], errors
