"""The CLI's way to the running ``maider serve``: find it through MAIDER_HOME/server.json, or start one.

The CLI is a thin client so the terminal and the panel always show the same truth, and tunnels live as long as
the server, not as long as a command.
"""
from __future__ import annotations

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
from app.domain.server_proof import new_nonce, proof_matches
from app.files import write_private

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
        headers = {"Authorization": f"Bearer {self.token}"}  # the server decides who acted: the token is the owner's
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


class Impostor(click.ClickException):
    """Something answers at server.json's address but cannot prove it is the maider server that wrote the file."""


def _read_server_file(home: Path) -> dict[str, Any] | None:
    try:
        info = json.loads((home / "server.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict) or not all(isinstance(info.get(key), str) for key in ("url", "api_token")):
        return None
    return info


def _proves_identity(info: dict[str, Any]) -> bool | None:
    """True when the server at ``info['url']`` proves it holds ``info['api_token']``; None when nothing answers.

    The token is never sent here: the server answers an HMAC of a fresh nonce keyed by the token."""
    nonce = new_nonce()
    try:
        response = httpx.get(f"{info['url']}/api/v1/health", params={"nonce": nonce}, timeout=3)
        answer = response.json()
    except httpx.HTTPError:
        return None
    except ValueError:
        return False
    if response.status_code != 200 or not isinstance(answer, dict):
        return False
    return answer.get("service") == "maider" and proof_matches(info["api_token"], nonce, answer.get("proof"))


def _pid_alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # a process of another user holds that pid
    return True


def _server_info(home: Path, announce_stale: bool = True) -> dict[str, Any] | None:
    """The verified running server, or None when none runs (no file, nothing answering, or its writer is gone).

    Raises ``Impostor`` when the process that wrote server.json still runs but whatever answers at its address
    cannot prove it holds the token: then neither the token is sent nor a second server started."""
    info = _read_server_file(home)
    if info is None:
        return None
    verified = _proves_identity(info)
    if verified:
        return info
    if verified is None or not _pid_alive(info.get("pid")):
        if verified is False and announce_stale:
            click.echo(f"Something else answers at {info['url']}, where a maider server that is no longer running "
                       "used to be; the API token was not sent to it.", err=True)
        return None
    raise Impostor(
        f"whatever answers at {info['url']} cannot prove it is the maider server that wrote "
        f"{home / 'server.json'} (pid {info.get('pid')}); the API token was not sent to it. Stop whatever listens "
        "there, or stop that maider server and start it again.")


def _start_server(home: Path) -> dict[str, Any]:
    """Start ``maider serve`` in the background, in this directory, and wait until it answers; if it stops instead
    (a damaged database, a bad setting), say why in its own words."""
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    log_path = home / "server.log"
    click.echo("No maider server is running: starting one in the background "
               f"(log: {log_path}).", err=True)
    with os.fdopen(os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab") as log_file:
        log_start = log_file.tell()
        server = subprocess.Popen([sys.executable, "-c", "from app.cli import main; main()", "serve"],
                                  stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  start_new_session=True, cwd=os.getcwd())
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        info = _server_info(home, announce_stale=False)
        if info is not None:
            click.echo(f"maider panel: {info['url']}/{'  (demo mode)' if info.get('demo') else ''}", err=True)
            return info
        if server.poll() is not None:
            raise click.ClickException(f"the maider server stopped at start: {_last_error(log_path, log_start)} "
                                       f"(log: {log_path})")
        time.sleep(0.3)
    raise click.ClickException(f"the maider server did not start within {START_TIMEOUT_S:.0f} s; see {log_path}")


def _last_error(log_path: Path, offset: int) -> str:
    """The server's own last words in this run's part of the log: its 'Error:' line, else its last line."""
    with open(log_path, "rb") as log_file:
        log_file.seek(offset)
        lines = [line.strip() for line in log_file.read().decode(errors="replace").splitlines() if line.strip()]
    errors = [line.removeprefix("Error: ") for line in lines if line.startswith("Error: ")]
    return (errors or lines or ["it wrote nothing"])[-1]


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
    write_private(home / CURRENT_FILE, name + "\n")


def resolve_name(name: str | None) -> str:
    """The named session, else the current one ('maider use')."""
    resolved = name or current_session()
    if not resolved:
        raise click.ClickException("no session named and no current session: run 'maider list', then "
                                   "'maider use NAME' or pass the name")
    return resolved
