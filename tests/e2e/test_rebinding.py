"""DNS rebinding against the tunnels, in Chromium as the attack was made: ``evil.example`` resolved to 127.0.0.1
reaches the tunnel ports, but gets a refusal it cannot turn into data; Open WebUI opens only through the panel."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, BrowserType, expect

pytestmark = pytest.mark.browser

MAIDER = [sys.executable, "-c", "from app.cli import main; main()"]
WEBUI_TEXT = "served by vLLM through maider's tunnel"  # only the (demo) Open WebUI page says this
READ_SAME_ORIGIN = "path => fetch(path).then(async r => ({status: r.status, body: await r.text()}))"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def ready_demo(tmp_path: Path) -> Iterator[dict]:
    """``maider serve --demo`` with one ready session."""
    env = {k: v for k, v in os.environ.items() if k not in ("LINODE_TOKEN", "MAIDER_PORT")}
    env.update(MAIDER_HOME=str(tmp_path / "maider-home"), MAIDER_DEMO_SPEED="40", HOME=str(tmp_path / "home"),
               HF_HUB_OFFLINE="1")
    log_path = tmp_path / "serve.log"
    info_path = tmp_path / "maider-home" / "server.json"
    with open(log_path, "w") as log:
        server = subprocess.Popen(MAIDER + ["serve", "--demo", "--port", str(_free_port())], cwd=tmp_path, env=env,
                                  stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while not info_path.exists():
            assert server.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.1)
        info = json.loads(info_path.read_text())
        headers = {"Authorization": f"Bearer {info['api_token']}"}
        created = httpx.post(f"{info['url']}/api/v1/sessions", headers=headers, json={"name": "web"}, timeout=30)
        assert created.status_code == 201, created.text
        deadline = time.monotonic() + 120
        while True:
            session = httpx.get(f"{info['url']}/api/v1/sessions/web", headers=headers, timeout=10).json()
            if session["status"] == "ready" and session["tunnel_state"] == "up":
                break
            assert time.monotonic() < deadline, session
            time.sleep(0.3)
        login = re.search(r"http://\S+/login\?token=\S+", log_path.read_text())
        yield {"url": info["url"], "session": session, "login": login.group(0) if login else None}
    finally:
        os.killpg(server.pid, signal.SIGINT)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


@pytest.fixture
def rebinding_browser(browser_type: BrowserType, browser_type_launch_args: dict) -> Iterator[Browser]:
    """Chromium in which evil.example resolves to 127.0.0.1, as after a DNS rebinding."""
    args = [*browser_type_launch_args.get("args", []), "--host-resolver-rules=MAP evil.example 127.0.0.1"]
    browser = browser_type.launch(**{**browser_type_launch_args, "args": args})
    yield browser
    browser.close()


def test_a_rebound_name_is_refused_on_both_tunnel_ports_and_reads_nothing(ready_demo, rebinding_browser):
    page = rebinding_browser.new_page()
    for port, path in ((ready_demo["session"]["webui_port"], "/"), (ready_demo["session"]["api_port"], "/health")):
        response = page.goto(f"http://evil.example:{port}{path}")
        assert response is not None and response.status == 403
        read = page.evaluate(READ_SAME_ORIGIN, path)  # the page's own origin: what the attack relied on
        assert read["status"] == 403 and "127.0.0.1 or localhost" in read["body"]
        assert WEBUI_TEXT not in read["body"] and "status" not in read["body"]
    page.close()


def test_open_webui_needs_the_panels_link_and_the_link_works(ready_demo, rebinding_browser):
    port = ready_demo["session"]["webui_port"]
    stranger = rebinding_browser.new_context()  # another local user's browser, or any client without the cookie
    page = stranger.new_page()
    response = page.goto(f"http://127.0.0.1:{port}/")
    assert response is not None and response.status == 403
    expect(page.locator("body")).to_contain_text("from the maider panel")
    assert WEBUI_TEXT not in page.content()
    stranger.close()

    user = rebinding_browser.new_context()
    page = user.new_page()
    if ready_demo["login"]:
        page.goto(ready_demo["login"])
    page.goto(f"{ready_demo['url']}/sessions/web")
    frame = page.frame_locator("#webui-frame")
    expect(frame.locator("body")).to_contain_text(WEBUI_TEXT, timeout=15_000)  # embedded, through the link
    with page.expect_popup() as popup:
        page.click("[data-testid=webui-link]")
    tab = popup.value
    expect(tab.locator("body")).to_contain_text(WEBUI_TEXT)
    assert tab.url == f"http://127.0.0.1:{port}/"  # the one-time token is gone from the address bar
    cookies = {c["name"]: c for c in user.cookies(f"http://127.0.0.1:{port}/")}
    access = cookies[f"maider_webui_{port}"]
    assert access["httpOnly"] and access["sameSite"] == "Strict"
    user.close()
