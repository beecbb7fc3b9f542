"""The whole panel in Chromium against a real ``maider serve --demo``: first run to launch, ready, aider, Open WebUI,
model switch, destroy and history, with a teammate's tab watching the same session live."""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[2]
PYTHON = REPO / ".venv" / "bin" / "python"
SHOTS = Path(os.environ.get("MAIDER_SCREENSHOTS") or REPO / "test-results" / "screenshots")
SESSION = "journey"
NEXT_MODEL = "Qwen/Qwen2.5-Coder-14B-Instruct-AWQ"
STATE_LABELS = {"Requested", "Creating VM", "Booting", "Installing drivers", "Rebooting", "Starting vLLM", "Ready"}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def panel(tmp_path: Path):
    """A real ``maider serve --demo`` on a free port, run from a fresh project folder, with no cloud token."""
    port = _free_port()
    home = tmp_path / "maider-home"
    project = tmp_path / "project"
    project.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("LINODE_TOKEN", "MAIDER_PORT")}
    env.update(MAIDER_HOME=str(home), PYTHONPATH=str(REPO), HOME=str(tmp_path / "home"), HF_HUB_OFFLINE="1")
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [str(PYTHON), "-c", "from app.cli import main; main()", "serve", "--demo", "--port", str(port)],
            cwd=project, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/api/v1/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"maider serve did not start:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.2)
        yield {"url": url, "home": home, "project": project, "log": log_path, "process": process}
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def sign_in(panel: dict, context) -> None:
    """Sign a browser context in as the owner through a fresh one-time link, as 'maider open' prints it."""
    info = json.loads((panel["home"] / "server.json").read_text())
    link = httpx.post(f"{panel['url']}/api/v1/login-link", headers={"Authorization": f"Bearer {info['api_token']}"},
                      timeout=10).json()["url"]
    page = context.new_page()
    page.goto(link)
    expect(page).to_have_url(re.compile(r"/$"))
    page.close()


def _shot(page: Page, name: str, full: bool = True) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=full)


def _money(text: str) -> float:
    return float(re.sub(r"[^0-9.]", "", text))


CSP_PROBE = ("document.addEventListener('securitypolicyviolation', e => console.error('CSP violation: ' + "
             "e.violatedDirective + ' by ' + ((e.target && e.target.outerHTML) || '').slice(0, 200)));")


def _is_csp_problem(text: str) -> bool:
    return "Content Security Policy" in text or "CSP violation" in text or "Refused" in text


def _watch_csp(page: Page, problems: list[str]) -> None:
    page.add_init_script(CSP_PROBE)
    page.on("console", lambda msg: problems.append(f"{page.url}: {msg.text}")
            if msg.type == "error" and _is_csp_problem(msg.text) else None)
    page.on("pageerror", lambda exc: problems.append(str(exc)))


def test_first_run_to_history(panel, browser: Browser):
    url = panel["url"]
    problems: list[str] = []
    mine = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=url)
    mine.grant_permissions(["clipboard-read", "clipboard-write"], origin=url)
    teammate = browser.new_context(viewport={"width": 1100, "height": 850}, base_url=url, color_scheme="dark")
    sign_in(panel, mine)
    sign_in(panel, teammate)
    page = mine.new_page()
    _watch_csp(page, problems)
    page.on("dialog", lambda dialog: dialog.accept())

    # First run: nothing yet, and the page says how to start.
    page.goto("/")
    empty = page.locator("#empty-state")
    expect(empty).to_contain_text("No GPU sessions running")
    expect(empty).to_contain_text("Launch a demo session")
    expect(empty).to_contain_text("setup wizard")
    expect(page.locator(".demo-banner")).to_contain_text("Demo mode")
    _shot(page, "01-first-run")

    # A mistake in the quick form is shown next to its field, and nothing is launched.
    page.click(".quick-launch summary")
    page.fill("#launch-name", "Bad Name!")
    page.click("#launch-submit")
    expect(page.locator("#launch-name-error")).to_contain_text("lower-case letters")
    _shot(page, "02-launch-form-error")

    # The setup wizard: accept each step's recommendation, save, and land back on the dashboard.
    page.click("#run-wizard")
    expect(page).to_have_url(re.compile(r"/setup/?$"))
    for _ in range(8):
        if page.locator("#wizard-form button", has_text="Save settings").count():
            break
        title = page.locator(".wizard-title").inner_text()
        page.locator("#wizard-form button", has_text="Next").click()
        expect(page.locator(".wizard-title")).not_to_have_text(title, timeout=10_000)
    _shot(page, "03-wizard-review")
    page.locator("#wizard-form button", has_text="Save settings").click()
    expect(page).to_have_url(re.compile(r"/$"))
    expect(page.locator(".flash")).to_contain_text("Saved .env")
    saved = (panel["project"] / ".env").read_text()
    region = re.search(r"^REGION=(\S+)", saved, re.M).group(1)
    expect(page.locator("#launch")).to_contain_text(region)

    # Launch what the wizard saved, under a name of our choosing.
    page.click(".quick-launch summary")
    page.fill("#launch-name", SESSION)
    page.click("#launch-submit")
    expect(page.locator("#launch-result")).to_contain_text(f"Launching {SESSION}")
    card = page.locator(f"#session-{SESSION}")
    expect(card).to_contain_text(region)
    expect(card).to_be_visible()

    # A teammate's tab sees the same session without reloading.
    other = teammate.new_page()
    _watch_csp(other, problems)
    other.goto("/")
    other_card = other.locator(f"#session-{SESSION}")
    expect(other_card).to_be_visible()
    watcher = teammate.new_page()
    _watch_csp(watcher, problems)
    watcher.goto(f"/sessions/{SESSION}")

    # The card walks through the launch states to Ready, with a step counter while launching.
    seen, steps = set(), set()
    launching_shot = False
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        label = card.locator(".state-badge").inner_text().strip()
        seen.add(label)
        progress = card.locator(".progress-text")
        if progress.count():
            steps.update(re.findall(r"Step (\d)/6", progress.inner_text()))
            if not launching_shot and label in ("Booting", "Installing drivers", "Rebooting", "Starting vLLM"):
                _shot(page, "04-dashboard-launching")
                launching_shot = True
        if label == "Starting vLLM" and not (SHOTS / "05-session-launching.png").exists():
            expect(watcher.locator("#session-header .state-badge")).to_have_text("Starting vLLM")
            _shot(watcher, "05-session-launching")
        if label == "Ready":
            break
        if label == "Failed":
            raise AssertionError(f"launch failed: {card.inner_text()}\n{panel['log'].read_text()[-3000:]}")
        page.wait_for_timeout(400)
    assert "Ready" in seen, f"never ready; saw {seen}\n{panel['log'].read_text()[-3000:]}"
    assert len(seen & (STATE_LABELS - {"Ready"})) >= 2, seen
    assert len(steps) >= 2, steps
    expect(card.locator("[data-testid=cost]")).not_to_have_text("$0.00")

    # The cost ticks without a reload, and the teammate's tab shows Ready too.
    cost = card.locator("[data-testid=cost]")
    first_text = cost.inner_text()
    expect(cost).not_to_have_text(first_text, timeout=15_000)  # the card's own poll brings the new figure
    assert _money(cost.inner_text()) > _money(first_text), (first_text, cost.inner_text())
    expect(other_card.locator(".state-badge")).to_have_text("Ready", timeout=10_000)
    expect(page.locator("[data-testid=burn-rate]")).not_to_have_text("$0.00")
    _shot(page, "06-dashboard-ready")
    _shot(other, "07-teammate-dark")
    watcher.close()

    # The session page: header, timeline, tunnels, aider, Open WebUI.
    card.get_by_role("link", name="Open").click()
    expect(page).to_have_url(re.compile(rf"/sessions/{SESSION}(\?uid=[0-9a-f]+)?$"))
    expect(page.locator("#session-header .state-badge")).to_have_text("Ready")
    expect(page).to_have_title(re.compile(rf"^{SESSION} · Ready · \$"))
    expect(page.locator("#session-tunnel [data-testid=tunnel-state]")).to_have_text("up")
    expect(page.locator("#session-timeline")).to_contain_text("Boot")
    expect(page.locator("#session-timeline")).to_contain_text("Ready in")

    page.click("#aider-command-button")
    expect(page.locator("#session-aider .copy-status")).to_have_text("Copied ✓")
    command = page.locator("#aider-command").inner_text().strip()
    assert page.evaluate("navigator.clipboard.readText()").strip() == command
    assert "aider --model" in command and ".aider-env" in command

    frame = page.frame_locator("#webui-frame")
    expect(frame.locator("body")).to_contain_text("Open WebUI", timeout=15_000)
    expect(page.locator("#session-log pre")).not_to_be_empty(timeout=40_000)
    _shot(page, "08-session-ready")

    # The tunnels can be rebuilt on the same ports, and the idle watchdog's timer reset.
    ports = page.locator("#session-tunnel td.mono").all_inner_texts()
    page.click("#reconnect-button")
    expect(page.locator("#session-tunnel")).to_contain_text("Reconnecting the tunnels")
    # "up" shows at the monitor's next tick after the tunnel is back (every 5 s), even when that comes before the
    # page's next poll (tests/e2e/test_tunnel_badge.py holds the polls to make sure).
    expect(page.locator("#session-tunnel [data-testid=tunnel-state]")).to_have_text("up", timeout=20_000)
    assert page.locator("#session-tunnel td.mono").all_inner_texts() == ports
    page.click("#extend-button")
    expect(page.locator("#session-header")).to_contain_text("Watchdog timer reset.")

    api_keys = [p.read_text().strip() for p in (panel["home"] / "demo" / "sessions").glob("*/api_key")]
    assert api_keys, "the session's API key file should exist"
    for html in (page.content(), other.content()):
        assert not any(key in html for key in api_keys), "the vLLM API key leaked into a page"

    # Switch model: a bad id is explained at the field; a good one switches, then the page is Ready again.
    page.fill("#switch-model_id", "not a model")
    page.click("#switch-submit")
    expect(page.locator("#switch-model_id-error")).to_contain_text("Hugging Face id")
    page.fill("#switch-model_id", NEXT_MODEL)
    page.fill("#switch-max_model_len", "16384")
    page.click("#switch-submit")
    header_badge = page.locator("#session-header .state-badge")
    expect(header_badge).to_have_text("Switching model", timeout=10_000)
    expect(page).to_have_title(re.compile(rf"^{SESSION} · Switching model · "), timeout=5_000)
    assert page.locator("body title").count() == 0  # htmx lifts the partial's <title> into the tab title
    _shot(page, "09-switching-model")
    expect(header_badge).to_have_text("Ready", timeout=60_000)
    expect(page.locator("[data-testid=current-model]")).to_have_text(NEXT_MODEL, timeout=10_000)
    expect(other_card).to_contain_text(NEXT_MODEL, timeout=10_000)

    narrow = mine.new_page()
    narrow.set_viewport_size({"width": 400, "height": 860})
    narrow.goto(f"/sessions/{SESSION}")
    expect(narrow.locator("#session-header .state-badge")).to_have_text("Ready")
    _shot(narrow, "10-narrow-session", full=False)
    for part in ("timeline", "metrics", "events"):
        narrow.locator(f"#session-{part}").screenshot(path=str(SHOTS / f"10-narrow-session-{part}.png"))

    # Destroy from the page; it ends with the cost summary, and the teammate's card says so too.
    page.click("#destroy-button")
    summary = page.locator("#cost-summary")
    expect(summary).to_be_visible(timeout=40_000)
    final_cost = page.locator("[data-testid=final-cost]").inner_text()
    assert _money(final_cost) > 0
    expect(page.locator("#webui-frame")).to_have_count(0, timeout=5_000)
    expect(page.locator("#session-tunnel")).to_contain_text("Closed")
    _shot(page, "11-destroyed")
    expect(other.locator(".ended")).to_contain_text(SESSION, timeout=15_000)

    # History lists it with its cost.
    page.click("nav >> text=History")
    row = page.locator("table.history tbody tr", has_text=SESSION)
    expect(row).to_contain_text(final_cost)
    expect(page.locator("[data-testid=history-total]")).to_have_text(final_cost)
    _shot(page, "12-history")

    # A narrow window still reads well.
    narrow.goto("/")
    _shot(narrow, "13-narrow-dashboard")
    narrow.goto("/history/")
    expect(narrow.locator("table.history tbody tr", has_text=SESSION)).to_contain_text(final_cost)
    _shot(narrow, "14-narrow-history")

    # A wrong address gets a page that says so, in the panel's own look, with a way back.
    response = page.goto("/sessions/no-such-session")
    assert response.status == 404
    expect(page.locator(".error-card")).to_contain_text("No session named 'no-such-session'")
    _shot(page, "15-not-found", full=False)
    page.click("text=Back to sessions")
    expect(page).to_have_url(re.compile(r"/$"))

    # If the server goes away, the open dashboard says so instead of silently showing stale figures.
    narrow.goto("/")
    expect(narrow.locator("#offline-banner")).to_be_hidden()
    panel["process"].terminate()
    panel["process"].wait(timeout=15)
    expect(narrow.locator("#offline-banner")).to_be_visible(timeout=20_000)
    _shot(narrow, "16-server-gone", full=False)

    assert not problems, "\n".join(problems)
    mine.close()
    teammate.close()
