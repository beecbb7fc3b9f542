"""MAIDER_HOME holds the API token, SSH keys and the database: owner-only (0700 folders, 0600 files) even when the
folder existed before with looser modes, and for every file the running server creates later."""
from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

MAIDER = [sys.executable, "-c", "from app.cli import main; main()"]
pytestmark = pytest.mark.slow


def _loose(home: Path) -> list[str]:
    return [f"{path} {stat.filemode(path.lstat().st_mode)}" for path in (home, *home.rglob("*"))
            if not path.is_symlink() and path.lstat().st_mode & 0o077]


def test_a_world_readable_home_is_made_private_and_stays_private(tmp_path):
    home = tmp_path / "maider-home"
    (home / "demo").mkdir(parents=True)
    os.chmod(home, 0o755)
    os.chmod(home / "demo", 0o755)
    for name in ("secret_key", "demo/maider.db.old", "server.log"):
        (home / name).write_text("x")
        os.chmod(home / name, 0o644)
    assert _loose(home)
    outside = tmp_path / "shared.txt"
    outside.write_text("not maider's")
    os.chmod(outside, 0o644)
    (home / "link-to-shared").symlink_to(outside)  # a link is not followed: the file it points to is not maider's

    env = {k: v for k, v in os.environ.items() if k not in ("LINODE_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
    env.update(MAIDER_HOME=str(home), HOME=str(tmp_path / "home"))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log_path = tmp_path / "serve.log"
    project = tmp_path / "project"
    with open(log_path, "w") as log:
        server = subprocess.Popen(MAIDER + ["serve", "--demo", "--port", str(port)], cwd=project, env=env,
                                  stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while not (home / "server.json").exists():
            assert server.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.1)
        assert httpx.get(f"http://127.0.0.1:{port}/api/v1/health").status_code == 200
        assert (home / "demo" / "maider.db").exists()
        assert _loose(home) == []
        assert stat.S_IMODE(outside.stat().st_mode) == 0o644
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
