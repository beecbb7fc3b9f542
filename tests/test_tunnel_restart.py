"""A restarted maider gets every tunnel back on the ports its ``.aider-env`` files name, says so honestly meanwhile,
and when a port was taken, moves it and rewrites the files; demo VMs come back with it."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from app.domain.vllm_env import parse_env
from app.engine.runtime import runtime
from app.engine.session_tunnels import restore_tunnels
from app.extensions import db
from app.models import Event, Session, SessionState
from app.providers.simulated import SimulatedProvider
from app.services import sessions as sessions_service
from app.simulator.vm import VmBehaviour
from engine_helpers import FAST_TIMINGS, drive, in_state, sign_in_owner, wait_for

MAIDER = [sys.executable, "-c", "from app.cli import main; main()"]


@pytest.fixture
def demo_app(app, tmp_path):
    """The app as ``maider serve --demo`` runs it, with fast simulated VMs; ``restart()`` kills its process state
    (tunnels, SSH connections, the in-process VMs) the way kill -9 does, keeping only what is on disk."""
    sim_home = tmp_path / "maider-home"
    state = {"provider": SimulatedProvider(sim_home, behaviour_for=lambda spec: VmBehaviour.fast())}
    app.config.update(MAIDER_DEMO=True, MAIDER_TIMINGS=FAST_TIMINGS,
                      MAIDER_PROVIDER_FACTORY=lambda name, settings, home: state["provider"])
    (tmp_path / "project").mkdir(exist_ok=True)

    def restart() -> None:
        engine = app.extensions.pop("maider_engine")
        engine.close()
        state["provider"].close()  # powers the demo VMs off; their records stay on disk
        state["provider"] = SimulatedProvider(sim_home, behaviour_for=lambda spec: VmBehaviour.fast())

    app.restart = restart
    yield app
    runtime(app).close()
    state["provider"].close()


def ready_session(app, name: str, workdir: Path) -> Session:
    with app.app_context():
        request = sessions_service.LaunchRequest(workdir=str(workdir), name=name)
        sessions_service.request_launch(request, home=Path(app.config["MAIDER_HOME"]), demo=True)
    session = drive(app, name, in_state(SessionState.READY, SessionState.FAILED))
    assert session.status == "ready", session.status_message
    return session


def answers(env_path: Path) -> bool:
    """A request made only from what ``.aider-env`` says (base URL and key) succeeds."""
    env = parse_env(env_path.read_text().replace("export ", ""))
    try:
        reply = httpx.get(f"{env['OPENAI_API_BASE']}/models", timeout=3,
                          headers={"Authorization": f"Bearer {env['OPENAI_API_KEY']}"})
    except httpx.HTTPError:
        return False
    return reply.status_code == 200


def test_after_a_restart_tunnels_say_down_then_come_back_on_their_recorded_ports(demo_app, tmp_path):
    workdir = tmp_path / "project"
    before = ready_session(demo_app, "kept", workdir)
    env_path = workdir / ".aider-env"
    assert answers(env_path)
    with demo_app.app_context():
        ssh_port = db.session.get(Session, before.id).ssh_port
    demo_app.restart()
    assert not answers(env_path)  # nothing listens: the process that held the ports is gone
    with demo_app.app_context():  # what a killed maider left behind: a row that still says "up"
        db.session.execute(db.update(Session).values(tunnel_state="up"))
        db.session.commit()

    assert restore_tunnels(demo_app) == 1
    with demo_app.app_context():
        session = db.session.get(Session, before.id)
        assert session.tunnel_state != "up"  # honest until the SSH connection is really back
        assert (session.api_port, session.webui_port) == (before.api_port, before.webui_port)
        assert session.ssh_port == ssh_port  # the demo VM came back on its address, same host key
    wait_for(lambda: answers(env_path), timeout=20)  # the file written before the restart works again
    status = runtime(demo_app).tunnels.status(before.uid)
    assert status.state == "up" and status.ports == {"api": before.api_port, "webui": before.webui_port}


def test_a_port_taken_meanwhile_moves_and_the_aider_files_and_page_say_so(demo_app, tmp_path, client):
    workdir = tmp_path / "project"
    before = ready_session(demo_app, "moved", workdir)
    demo_app.restart()
    squatter = socket.socket()
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past the old connections' TIME_WAIT
    squatter.bind(("127.0.0.1", before.api_port))  # another local program took the API port
    squatter.listen(1)
    try:
        restore_tunnels(demo_app)
        with demo_app.app_context():
            session = db.session.get(Session, before.id)
            new_port = session.api_port
            events = [e.message for e in db.session.scalars(db.select(Event).where(Event.session_id == before.id))]
        assert new_port != before.api_port and session.webui_port == before.webui_port
        env = parse_env((workdir / ".aider-env").read_text().replace("export ", ""))
        assert env["OPENAI_API_BASE"] == f"http://127.0.0.1:{new_port}/v1"
        assert any(f"{before.api_port} → {new_port}" in m and ".aider-env" in m for m in events)
        wait_for(lambda: answers(workdir / ".aider-env"), timeout=20)
        page = client.get("/sessions/moved/sections/tunnel", headers={"HX-Request": "true"}).get_data(as_text=True)
        assert f"{before.api_port} → {new_port}" in page and "source it again" in page
    finally:
        squatter.close()


def test_a_demo_vm_whose_ssh_port_was_taken_comes_back_elsewhere_and_the_session_follows(demo_app, tmp_path):
    workdir = tmp_path / "project"
    before = ready_session(demo_app, "resshed", workdir)
    with demo_app.app_context():
        old_ssh = db.session.get(Session, before.id).ssh_port
    demo_app.restart()
    squatter = socket.socket()
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    squatter.bind(("127.0.0.1", old_ssh))
    squatter.listen(1)
    try:
        restore_tunnels(demo_app)
        with demo_app.app_context():
            session = db.session.get(Session, before.id)
            events = [e.message for e in db.session.scalars(db.select(Event).where(Event.session_id == before.id))]
        assert session.ssh_port != old_ssh and any(f"SSH port moved {old_ssh} → " in m for m in events)
        wait_for(lambda: answers(workdir / ".aider-env"), timeout=20)  # same host key: the pinned key still fits
    finally:
        squatter.close()


# --- The whole thing on a real server: kill -9 with 20 ready demo sessions, then a restart. ---

SESSIONS = 20


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _start_server(tmp_path: Path, env: dict[str, str], port: int, log_name: str) -> tuple[subprocess.Popen, dict]:
    info_path = Path(env["MAIDER_HOME"]) / "server.json"
    info_path.unlink(missing_ok=True)
    with open(tmp_path / log_name, "w") as log:
        server = subprocess.Popen(MAIDER + ["serve", "--demo", "--port", str(port)], cwd=tmp_path, env=env,
                                  stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 30
    while not info_path.exists():
        assert server.poll() is None, (tmp_path / log_name).read_text()
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    return server, json.loads(info_path.read_text())


def _sessions(info: dict) -> list[dict]:
    reply = httpx.get(f"{info['url']}/api/v1/sessions", headers={"Authorization": f"Bearer {info['api_token']}"},
                      timeout=10)
    return reply.json()["sessions"]


@pytest.mark.slow
def test_kill_9_with_20_ready_sessions_then_restart_every_aider_env_works_again(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("LINODE_TOKEN", "MAIDER_PORT")}
    env.update(MAIDER_HOME=str(tmp_path / "maider-home"), MAIDER_DEMO_SPEED="40", HOME=str(tmp_path / "home"),
               HF_HUB_OFFLINE="1")
    port = _free_port()
    server, info = _start_server(tmp_path, env, port, "serve-1.log")
    restarted = None
    try:
        headers = {"Authorization": f"Bearer {info['api_token']}"}
        projects = []
        for n in range(SESSIONS):
            project = tmp_path / f"project-{n}"
            project.mkdir()
            projects.append(project)
            reply = httpx.post(f"{info['url']}/api/v1/sessions", headers=headers, timeout=30,
                               json={"name": f"s{n}", "workdir": str(project)})
            assert reply.status_code == 201, reply.text
        deadline = time.monotonic() + 240
        while not all(s["status"] == "ready" and s["tunnel_state"] == "up" for s in _sessions(info)):
            assert time.monotonic() < deadline, [(s["name"], s["status"], s["status_message"]) for s in _sessions(info)]
            time.sleep(0.5)
        assert all(answers(p / ".aider-env") for p in projects)
        before = {s["name"]: (s["api_port"], s["webui_port"]) for s in _sessions(info)}

        os.killpg(server.pid, signal.SIGKILL)
        server.wait(10)
        assert not any(answers(p / ".aider-env") for p in projects)

        restarted, info = _start_server(tmp_path, env, port, "serve-2.log")
        started = time.monotonic()
        first = _sessions(info)
        assert not [s["name"] for s in first if s["tunnel_state"] == "up" and not answers(
            projects[int(s["name"][1:])] / ".aider-env")]  # "up" only where the tunnel really answers
        assert {s["name"]: (s["api_port"], s["webui_port"]) for s in first} == before  # no port moved
        pending = set(range(SESSIONS))
        while pending and time.monotonic() - started < 30:
            pending = {n for n in pending if not answers(projects[n] / ".aider-env")}
            time.sleep(0.2)
        assert not pending, f"not answering 30 s after the restart: {sorted(pending)}"
        print(f"all {SESSIONS} .aider-env files answered {time.monotonic() - started:.1f} s after the restart")
    finally:
        for process in (server, restarted):
            if process is not None and process.poll() is None:
                os.killpg(process.pid, signal.SIGINT)
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
