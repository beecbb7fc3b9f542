"""Benchmarks in Chromium against a real ``maider serve --demo``: run from the panel, watch progress, see the charts
drawn with data, compare two runs, download the JSON, and read it all at 400 px."""
from __future__ import annotations

import json
import re
import time

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from test_journey import SHOTS, _shot, _watch_csp, panel, sign_in  # noqa: F401  (panel is a fixture)

pytestmark = pytest.mark.browser
SESSION = "bench-demo"


def _launch_ready(panel) -> None:  # noqa: F811
    info = json.loads((panel["home"] / "server.json").read_text())
    headers = {"Authorization": f"Bearer {info['api_token']}"}
    created = httpx.post(f"{panel['url']}/api/v1/sessions", headers=headers, json={"name": SESSION}, timeout=30)
    assert created.status_code == 201, created.text
    for _ in range(600):
        status = httpx.get(f"{panel['url']}/api/v1/sessions/{SESSION}", headers=headers, timeout=10).json()
        if status["status"] == "ready" and status["tunnel_state"] == "up":
            return
        assert status["status"] not in ("failed", "destroyed"), status
        time.sleep(0.2)
    raise AssertionError("the demo session did not become ready")


def _run_from_form(page: Page, concurrency: str) -> str:
    page.goto("/benchmarks/")
    page.fill("#bench-concurrency", concurrency)
    page.fill("#bench-num_prompts", "4")
    page.fill("#bench-input_len", "64")
    page.fill("#bench-output_len", "48")
    page.click("#bench-start")
    expect(page).to_have_url(re.compile(r"/benchmarks/\d+$"))
    return page.url


def _points(page: Page, chart: str) -> int:
    return int(page.locator(f"canvas[data-chart='{chart}']").get_attribute("data-points") or 0)


def test_run_watch_charts_compare_download(panel, browser: Browser, tmp_path):  # noqa: F811
    _launch_ready(panel)
    problems: list[str] = []
    context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=panel["url"],
                                  accept_downloads=True)
    sign_in(panel, context)
    page = context.new_page()
    _watch_csp(page, problems)

    first_url = _run_from_form(page, "1,2,4")
    progress = page.locator("[data-testid=bench-progress-text]")
    expect(progress).to_contain_text(re.compile(r"Level \d of 3"))
    expect(progress).to_contain_text(re.compile(r"[1-4] / 4 requests"), timeout=30_000)  # moves while it runs
    _shot(page, "bench-01-progress")
    expect(page.locator("[data-testid=bench-status]")).to_have_text("done", timeout=120_000)
    expect(page.locator("#bench-charts")).to_have_attribute("data-loaded", "true")
    assert _points(page, "output_throughput") == 3 and _points(page, "ttft") == 6  # p50 and p99 per level
    expect(page.locator("[data-testid=bench-results] tbody tr")).to_have_count(3)
    expect(page.locator("body")).to_contain_text("TPOT excludes the first token")
    _shot(page, "bench-02-run-charts")

    with page.expect_download() as download_info:
        page.click("#bench-export-json")
    saved = tmp_path / "run.json"
    download_info.value.save_as(saved)
    levels = json.loads(saved.read_text())
    assert [lv["max_concurrency"] for lv in levels] == [1, 2, 4]
    assert levels[0]["completed"] == 4 and levels[0]["gpu"] and levels[0]["where"] == "tunnel"

    _run_from_form(page, "2,8")
    expect(page.locator("[data-testid=bench-status]")).to_have_text("done", timeout=120_000)

    page.goto("/benchmarks/")
    boxes = page.locator("input[name=runs]")
    expect(boxes).to_have_count(2)
    boxes.nth(0).check()
    boxes.nth(1).check()
    _shot(page, "bench-03-runs-table")
    page.click("#bench-compare")
    expect(page).to_have_url(re.compile(r"/benchmarks/compare\?runs=\d+&runs=\d+"))
    expect(page.locator("#bench-charts")).to_have_attribute("data-loaded", "true")
    assert _points(page, "output_throughput") == 5  # 3 levels + 2 levels, overlaid
    _shot(page, "bench-04-compare")

    page.goto(f"/sessions/{SESSION}")  # the monitor's samples, charted live on the session page
    live = page.locator("#session-live-charts")
    expect(live).to_have_attribute("data-loaded", "true")
    assert int(live.locator("canvas[data-live='tokens_per_s']").get_attribute("data-points") or 0) >= 1
    live.scroll_into_view_if_needed()
    page.screenshot(path=str(SHOTS / "bench-06-session-live-charts.png"), full_page=False)
    page.click("#session-check")  # the GPU check button: a verdict per check
    expect(page.locator("#session-check-report")).to_have_attribute("data-ok", "true", timeout=30_000)
    expect(page.locator("#session-check-report")).to_contain_text("GPUs visible")
    page.locator("#session-checks").screenshot(path=str(SHOTS / "bench-07-session-check.png"))
    page.click("#session-validate-perf")  # minutes on a real GPU: the live channel shows the step, Cancel stops it
    expect(page.locator("#session-check-step")).to_contain_text("load at", timeout=30_000)
    expect(page.locator("#session-check")).to_be_disabled()
    page.locator("#session-checks").screenshot(path=str(SHOTS / "bench-08-validate-perf-running.png"))
    page.click("#session-check-cancel")
    expect(page.locator("#session-check-report")).to_have_attribute("data-status", "cancelled", timeout=10_000)
    expect(page.locator("#session-check")).to_be_enabled()

    narrow = browser.new_context(viewport={"width": 400, "height": 850}, base_url=panel["url"])
    sign_in(panel, narrow)
    small = narrow.new_page()
    small.goto(first_url)
    expect(small.locator("#bench-charts")).to_have_attribute("data-loaded", "true")
    width = small.evaluate("document.querySelector('#bench-charts').getBoundingClientRect().width")
    assert width <= 400
    assert small.evaluate("document.documentElement.scrollWidth") <= 400  # no sideways scrolling of the page
    _shot(small, "bench-05-run-400px")
    assert problems == []
