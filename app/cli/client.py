"""The CLI's way to the running ``maider serve``: find it through MAIDER_HOME/server.json, or start one.

The CLI is a thin client so the terminal and the panel always show the same truth, and tunnels live as long as
the server, not as long as a command.
"""
from __future__ import annotations

import getpass
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import httpx

from app.config import default_home

START_TIMEOUT_S = 60.0
REQUEST_TIMEOUT_S = 120.0  # validation may read the provider's catalog on a cold cache
CURRENT_FILE = "current_session"


class ServerError(click.ClickException):
    """The server answered with an error; its message is already written for the user."""


@dataclass
class MaiderClient:
    url: str
    token: str
    demo: bool

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.token}", "X-Maider-Actor": f"{getpass.getuser()} (cli)"}
        try:
            response = httpx.request(method, f"{self.url}/api/v1{path}", headers=headers,
                                     timeout=REQUEST_TIMEOUT_S, **kwargs)
        except httpx.HTTPError as exc:
            raise click.ClickException(f"could not reach the maider server at {self.url}: {exc}") from None
        try:
            body = response.json()
        except ValueError:
            body = {"error": response.text[:300]}
        if response.status_code >= 400:
            raise ServerError(body.get("error") or f"the server answered {response.status_code}")
        return body

    def get(self, path: str, **params: Any) -> Any:
        return self._request("GET", path, params=params or None)

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return self._request("POST", path, json=body or {})

    def delete(self, path: str) -> Any:
        return self._request("DELETE", path)


def _server_info(home: Path) -> dict[str, Any] | None:
    try:
        info = json.loads((home / "server.json").read_text())
    except (OSError, ValueError):
        return None
    try:
        response = httpx.get(f"{info['url']}/api/v1/health", timeout=3)
        if response.status_code == 200 and response.json().get("service") == "maider":
            return info
    except (httpx.HTTPError, ValueError, KeyError):
        return None
    return None


def _start_server(home: Path) -> dict[str, Any]:
    """Start ``maider serve`` in the background, in this directory, and wait until it answers."""
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    log_path = home / "server.log"
    click.echo("No maider server is running: starting one in the background "
               f"(log: {log_path}).", err=True)
    with open(log_path, "ab") as log_file:
        subprocess.Popen([sys.executable, "-c", "from app.cli import main; main()", "serve"],
                         stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                         start_new_session=True, cwd=os.getcwd())
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        info = _server_info(home)
        if info is not None:
            click.echo(f"maider panel: {info['url']}/{'  (demo mode)' if info.get('demo') else ''}", err=True)
            return info
        time.sleep(0.3)
    raise click.ClickException(f"the maider server did not start within {START_TIMEOUT_S:.0f} s; see {log_path}")


def connect(start: bool = True) -> MaiderClient:
    """A client for the running server; starts one when none answers (unless ``start`` is False)."""
    home = default_home()
    info = _server_info(home)
    if info is None:
        if not start:
            raise click.ClickException("no maider server is running (start one with 'maider serve')")
        info = _start_server(home)
    return MaiderClient(info["url"], info["api_token"], bool(info.get("demo")))


def current_session() -> str | None:
    try:
        return (default_home() / CURRENT_FILE).read_text().strip() or None
    except OSError:
        return None


def set_current_session(name: str) -> None:
    home = default_home()
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    (home / CURRENT_FILE).write_text(name + "\n")


def resolve_name(name: str | None) -> str:
    """The named session, else the current one ('maider use')."""
    resolved = name or current_session()
    if not resolved:
        raise click.ClickException("no session named and no current session: run 'maider list', then "
                                   "'maider use NAME' or pass the name")
    return resolved
