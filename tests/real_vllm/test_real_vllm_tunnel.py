"""Streaming from a real vLLM through maider's own tunnel: the local port, maider's paramiko transport and
direct-tcpip channel, the demo SSH server standing in for the VM's sshd, and the real server behind it."""
from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest
from engine_helpers import wait_for
from real_vllm_server import RealVllm, free_port

from app.domain import vm_contract as vc
from app.engine.health import probe_ready, scrape_metrics
from app.engine.tunnels import ForwardSpec, TunnelSupervisor
from app.remote import RemoteHost, load_private_key, load_public_key, new_keypair
from app.simulator.ssh_server import ExecResult, SshServer

LONG_OUTPUT = 1500  # tokens asked for; the stream is closed long before they are all made


@pytest.fixture
def api_port(real_vllm: RealVllm) -> Iterator[int]:
    """A session's API forward exactly as maider opens it (``front="http"``), to a 'VM' whose port 8000 is the
    real server."""
    host, client = new_keypair(), new_keypair()

    def handle_exec(command: str, _read_stdin) -> ExecResult:
        if command == vc.CMD_KEEP_PTY:
            return ExecResult(hold=True)
        return ExecResult(127, stderr=f"not on this VM: {command}")

    sshd = SshServer(load_private_key(host.private_openssh), [load_public_key(client.public_openssh)], handle_exec,
                     lambda port: real_vllm.port if port == vc.VLLM_PORT else None)
    sshd.start()
    tunnels = TunnelSupervisor()
    remote = lambda: RemoteHost("127.0.0.1", sshd.port, load_public_key(host.public_openssh),
                                load_private_key(client.private_openssh), connect_timeout=5)
    try:
        ports = tunnels.open("real", remote, [ForwardSpec("api", vc.VLLM_PORT, free_port(), front="http")])
        assert tunnels.status("real").state == "up"
        yield ports["api"]
        status = tunnels.status("real")
        assert status.bytes_in > 0 and status.bytes_out > 0 and status.last_traffic_at is not None  # idle signal
    finally:
        tunnels.close_all()
        sshd.stop()


def test_ready_and_keyed_through_the_tunnel(real_vllm: RealVllm, api_port: int) -> None:
    assert probe_ready(api_port, real_vllm.api_key, real_vllm.served_name, timeout=60).ready
    assert httpx.get(f"http://127.0.0.1:{api_port}/v1/models", timeout=30).status_code == 401


def _settled_metrics(port: int):
    """The counters once nothing runs and they stopped moving: an earlier test's aborted stream may still be counted
    a moment after it closed, and must not be taken for this test's tokens."""
    before = scrape_metrics(port, timeout=30)
    for _ in range(40):
        time.sleep(0.25)
        again = scrape_metrics(port, timeout=30)
        if again is not None and before is not None and again.requests_running == 0 \
                and again.generation_tokens == before.generation_tokens:
            return again
        before = again
    assert before is not None
    return before


def test_chunks_arrive_while_the_server_is_still_generating(real_vllm: RealVllm, api_port: int) -> None:
    """The first chunks reach the laptop while vLLM has made only part of the output and not finished the request:
    the tunnel passes each chunk on as it comes, it does not wait for the response to end. (The counters decide,
    not the running-requests gauge: vLLM publishes that one a step late.)"""
    before = _settled_metrics(real_vllm.port)
    body = {"model": real_vllm.served_name, "messages": [{"role": "user", "content": "Write a long story."}],
            "max_tokens": LONG_OUTPUT, "ignore_eos": True, "stream": True}
    contents: list[str] = []
    with httpx.stream("POST", f"http://127.0.0.1:{api_port}/v1/chat/completions", json=body, timeout=120,
                      headers={"Authorization": f"Bearer {real_vllm.api_key}"}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            delta = json.loads(line[6:])["choices"][0]["delta"]
            if delta.get("content"):
                contents.append(delta["content"])
            if len(contents) == 3:
                break
        during = scrape_metrics(real_vllm.port, timeout=30)  # read straight from the server, not through the tunnel
    assert during is not None
    assert during.requests_done == before.requests_done, (before, during)
    assert during.generation_tokens - before.generation_tokens < LONG_OUTPUT / 2, (before, during)
    assert len(contents) == 3
    # Closing the stream aborts the request; the next test must find the server idle again.
    assert wait_for(lambda: (scrape_metrics(real_vllm.port, timeout=30) or before).requests_running == 0, timeout=60)
