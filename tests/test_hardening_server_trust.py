"""The CLI sends its API token only to the maider server that wrote server.json, and a stopped server leaves no
server.json behind.

The attack: the server dies and leaves server.json; another local user listens on its port, answers
``/api/v1/health`` like maider and waits for ``maider use`` to send the bearer token and write files at the paths its
hand-off names. Here the squatter is a real HTTP server on loopback and the CLI is the real ``maider`` command.
"""
from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from engine_helpers import free_port

MAIDER = [sys.executable, "-c", "from app.cli import main; main()"]
PLANTED = "planted-by-squatter"


class Squatter:
    """Answers every GET like a maider server and records every Authorization header it is sent."""

    def __init__(self, outside: Path) -> None:
        self.authorizations: list[str] = []
        squatter = self
        escape = "../" * 12 + str(outside).lstrip("/")

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 -- http.server's naming
                squatter.authorizations.append(self.headers.get("Authorization", ""))
                if self.path.startswith("/api/v1/health"):
                    body = {"ok": True, "service": "maider", "demo": True, "proof": "0" * 64}
                elif self.path.endswith("/aider"):
                    body = {"env_file": f"export OPENAI_API_KEY={PLANTED}\n", "metadata": {"x": PLANTED},
                            "env_filename": escape + "-env", "metadata_filename": escape + "-meta"}
                else:
                    body = {"session": {"name": "s", "state": "ready"}}
                payload = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *_args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.fixture
def world(tmp_path):
    home = tmp_path / "maider-home"
    home.mkdir(mode=0o700)
    project = tmp_path / "project"
    project.mkdir(exist_ok=True)
    outside = tmp_path / "outside"
    squatter = Squatter(outside)
    env = {k: v for k, v in os.environ.items() if k not in ("LINODE_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
    env.update(MAIDER_HOME=str(home), HOME=str(tmp_path / "home"), MAIDER_DEMO_SPEED="8")
    yield {"home": home, "project": project, "outside": outside, "squatter": squatter, "env": env,
           "token": "stale-token-of-the-dead-server"}
    squatter.close()
    _stop_server(home)


def _stop_server(home: Path) -> None:
    """Stop a server the CLI started (not the pid a test planted in a stale file)."""
    try:
        pid = json.loads((home / "server.json").read_text())["pid"]
    except (OSError, ValueError, KeyError):
        return
    if pid == os.getpid():
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)


def _stale_server_file(world, pid: int) -> None:
    (world["home"] / "server.json").write_text(json.dumps({
        "url": f"http://127.0.0.1:{world['squatter'].port}", "pid": pid, "demo": True,
        "api_token": world["token"]}))


def _maider(world, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(MAIDER + list(args), cwd=world["project"], env=world["env"], capture_output=True,
                          text=True, timeout=120)


def _planted_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if PLANTED in _text(p))


def _text(path: Path) -> str:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError):
        return ""


def test_squatter_on_a_live_servers_address_never_gets_the_token(world):
    """The pid in server.json runs (here: this test), so the CLI neither trusts the squatter nor starts a server."""
    _stale_server_file(world, os.getpid())
    result = _maider(world, "use", "s")
    assert result.returncode != 0
    assert "cannot prove it is the maider server that wrote" in result.stderr
    assert "the API token was not sent" in result.stderr
    assert world["token"] not in "".join(world["squatter"].authorizations)
    assert all(not header for header in world["squatter"].authorizations)
    assert not world["outside"].parent.joinpath("outside-env").exists()
    assert _planted_files(world["project"].parent) == []


@pytest.mark.slow
def test_squatter_on_a_dead_servers_address_is_bypassed_by_a_fresh_server(world):
    """The writer of server.json is gone: the CLI says so, starts a real server (on another port) and talks to it;
    the squatter sees no token and no planted file is written anywhere."""
    _stale_server_file(world, _dead_pid())
    result = _maider(world, "list")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Something else answers at http://127.0.0.1:{world['squatter'].port}" in result.stderr
    assert "starting one in the background" in result.stderr
    info = json.loads((world["home"] / "server.json").read_text())
    assert info["url"] != f"http://127.0.0.1:{world['squatter'].port}" and info["api_token"] != world["token"]
    assert all(not header for header in world["squatter"].authorizations)
    assert _planted_files(world["project"].parent) == []


def test_use_writes_only_its_own_file_names(app, tmp_path):
    """Whatever file names a server's hand-off carries, the CLI writes .aider-env and the metadata file where it
    runs, and nowhere else."""
    from app.cli.sessions import write_aider_files

    class Client:
        url = "http://127.0.0.1:1"

        def get(self, _path: str) -> dict:
            return {"env_file": "export A=1\n", "metadata": {"m": 1},
                    "env_filename": "../../escaped-env", "metadata_filename": "/tmp/escaped-meta"}

    project = tmp_path / "project"
    env_path, meta_path, _ = write_aider_files(Client(), "s", project)
    assert (env_path, meta_path) == (project / ".aider-env", project / ".aider.model.metadata.json")
    assert env_path.read_text() == "export A=1\n"
    assert not (tmp_path.parent / "escaped-env").exists() and not Path("/tmp/escaped-meta").exists()


def test_health_proves_the_token_without_revealing_it(app, client):
    from app.domain.server_proof import new_nonce, proof_matches

    app.config["MAIDER_API_TOKEN"] = "the-real-token"
    nonce = new_nonce()
    answer = client.get(f"/api/v1/health?nonce={nonce}").get_json()
    assert proof_matches("the-real-token", nonce, answer["proof"])
    assert not proof_matches("another-token", nonce, answer["proof"])
    assert "the-real-token" not in json.dumps(answer)
    refused = client.get("/api/v1/health?nonce=short")
    assert refused.status_code == 400 and "nonce" in refused.get_json()["error"]


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_stop_the_server_cleanly(world, signum):
    """A real ``maider serve`` stopped by SIGTERM/SIGHUP removes server.json and releases its lock, so the next
    start needs no clean-up."""
    home = world["home"]
    port = free_port()
    log_path = world["project"].parent / "serve.log"
    with open(log_path, "w") as log:
        server = subprocess.Popen(MAIDER + ["serve", "--demo", "--port", str(port)], cwd=world["project"],
                                  env=world["env"], stdout=log, stderr=subprocess.STDOUT)
    info_path = home / "server.json"
    deadline = time.monotonic() + 30
    while not info_path.exists():
        assert server.poll() is None, log_path.read_text()
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.1)
    assert httpx.get(f"http://127.0.0.1:{port}/api/v1/health").status_code == 200
    server.send_signal(signum)
    assert server.wait(timeout=30) == 0
    assert not info_path.exists()
    with open(home / "server.lock", "a+") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises if the lock were still held

