"""The terminal journey on a real ``maider serve --demo`` process: up → curl through the tunnel → aider files → use →
switch-model → down with the cost summary. Every command is the installed console script, as a user types it."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import httpx
import pytest

from app.domain.vllm_env import parse_env
from engine_helpers import free_port

pytestmark = pytest.mark.slow
MAIDER = [sys.executable, "-c", "from app.cli import main; main()"]


@pytest.fixture
def demo_server(tmp_path):
    """A real server in demo mode, in a fresh MAIDER_HOME, started the way the README says."""
    project = tmp_path / "project"
    project.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("LINODE_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
    env.update(MAIDER_HOME=str(tmp_path / "maider-home"), MAIDER_DEMO_SPEED="8", HOME=str(tmp_path / "home"))
    port = free_port()
    log_path = tmp_path / "server.log"
    with open(log_path, "w") as log:
        server = subprocess.Popen(MAIDER + ["serve", "--port", str(port)], cwd=project, env=env, stdout=log,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    info_path = tmp_path / "maider-home" / "server.json"
    deadline = time.monotonic() + 30
    while not info_path.exists():
        assert server.poll() is None, log_path.read_text()
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.1)
    yield {"project": project, "env": env, "port": port, "info": json.loads(info_path.read_text())}
    os.killpg(server.pid, signal.SIGINT)
    try:
        server.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)


def maider(world, *args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    return subprocess.run(MAIDER + list(args), cwd=world["project"], env=world["env"], capture_output=True,
                          text=True, timeout=timeout)


def test_without_credentials_serve_starts_in_demo_mode(demo_server):
    assert demo_server["info"]["demo"] is True
    page = httpx.get(f"http://127.0.0.1:{demo_server['port']}/")
    # Signed out: the sign-in page (still saying it is the demo), never the dashboard.
    assert page.status_code == 401 and "Demo mode" in page.text and "maider open" in page.text
    assert httpx.get(f"http://127.0.0.1:{demo_server['port']}/", headers={"Host": "evil.example"}).status_code == 403


def test_up_curl_use_switch_down(demo_server):
    up = maider(demo_server, "up", "demo1")
    assert up.returncode == 0, up.stdout + up.stderr
    assert "demo1 is ready" in up.stdout
    project = demo_server["project"]
    env_file = parse_env((project / ".aider-env").read_text())
    assert env_file["AIDER_MODEL"] == "openai/coder"
    api_base = env_file["OPENAI_API_BASE"]
    assert api_base == f"http://127.0.0.1:{env_file['ACTUAL_API_PORT']}/v1"
    assert f"source '{project / '.aider-env'}' && aider --model \"$AIDER_MODEL\"" in up.stdout
    assert env_file["OPENAI_API_KEY"] not in up.stdout  # the key stays in the file

    models = httpx.get(f"{api_base}/models", headers={"Authorization": f"Bearer {env_file['OPENAI_API_KEY']}"})
    assert models.json()["data"][0]["id"] == "coder"
    metadata = json.loads((project / ".aider.model.metadata.json").read_text())
    assert metadata["openai/coder"]["max_input_tokens"] == models.json()["data"][0]["max_model_len"]

    listing = maider(demo_server, "list")
    assert "demo1" in listing.stdout and "Ready" in listing.stdout and "$0.52" in listing.stdout

    elsewhere = project / "other"
    elsewhere.mkdir()
    use = subprocess.run(MAIDER + ["use", "demo1"], cwd=elsewhere, env=demo_server["env"], capture_output=True,
                         text=True, timeout=30)
    assert use.returncode == 0, use.stderr
    assert (elsewhere / ".aider-env").read_text() == (project / ".aider-env").read_text()

    switched = maider(demo_server, "switch-model", "Qwen/Qwen2.5-Coder-14B-Instruct-AWQ", "--max-model-len", "16384")
    assert switched.returncode == 0, switched.stdout + switched.stderr
    models = httpx.get(f"{api_base}/models", headers={"Authorization": f"Bearer {env_file['OPENAI_API_KEY']}"})
    assert models.json()["data"][0]["root"] == "Qwen/Qwen2.5-Coder-14B-Instruct-AWQ"
    assert models.json()["data"][0]["max_model_len"] == 16384

    oversize = maider(demo_server, "switch-model", "Qwen/Qwen2.5-Coder-32B-Instruct")
    assert oversize.returncode != 0 and "won't fit" in oversize.stderr

    down = maider(demo_server, "down", "demo1")
    assert down.returncode == 0, down.stdout + down.stderr
    assert "Runtime:" in down.stdout and "Total cost:" in down.stdout and "$0.52" in down.stdout
    assert "Requested → Creating VM" not in down.stdout  # only what happened after the request
    after = maider(demo_server, "list")
    assert "demo1" not in after.stdout


def test_bad_input_gets_one_clear_line(demo_server):
    bad_name = maider(demo_server, "up", "Bad_Name!")
    assert bad_name.returncode != 0 and "not a valid session name" in bad_name.stderr
    assert "Traceback" not in bad_name.stderr
    missing = maider(demo_server, "down", "nope")
    assert missing.returncode != 0 and "no session named 'nope'" in missing.stderr
    too_big = maider(demo_server, "up", "huge", "--model", "Qwen/Qwen2.5-Coder-32B-Instruct")
    assert too_big.returncode != 0 and "won't fit" in too_big.stderr
    assert "huge" not in maider(demo_server, "list").stdout


@pytest.mark.skipif(shutil.which("ssh") is None, reason="needs the OpenSSH client")
def test_diagnose_reads_stdin(demo_server):
    log = "RuntimeError: Bfloat16 is only supported on GPUs with compute capability of at least 8.0.\n"
    result = subprocess.run(MAIDER + ["diagnose", "-"], input=log, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and "half" in result.stdout


def test_a_second_server_on_the_same_home_is_refused(demo_server):
    second = maider(demo_server, "serve", "--port", str(free_port()), timeout=30)
    assert second.returncode != 0
    assert "already running at " + demo_server["info"]["url"] in second.stderr


def test_cli_starts_a_server_when_none_runs_and_says_so(tmp_path):
    project = tmp_path / "p"
    project.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("LINODE_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
    env.update(MAIDER_HOME=str(tmp_path / "home-auto"), HOME=str(tmp_path / "h"), MAIDER_PORT=str(free_port()))
    result = subprocess.run(MAIDER + ["list"], cwd=project, env=env, capture_output=True, text=True, timeout=90)
    info = json.loads((tmp_path / "home-auto" / "server.json").read_text())
    try:
        assert result.returncode == 0, result.stderr
        assert "No maider server is running: starting one in the background" in result.stderr
        assert info["url"] in result.stderr and "No sessions" in result.stdout
    finally:
        os.kill(info["pid"], signal.SIGINT)
