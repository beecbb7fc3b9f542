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
from app.engine.health import MetricsSnapshot, probe_ready, scrape_metrics
from app.engine.tunnels import ForwardSpec, TunnelSupervisor
from app.remote import RemoteHost, load_private_key, load_public_key, new_keypair
from app.simulator.ssh_server import ExecResult, SshServer

# Tokens asked for; the stream is closed after three chunks, long before they are all made. At the tiny model's
# ~170 tokens/s here, half of them take over 10 s: a client stalled on a busy machine still reads its chunks in time.
LONG_OUTPUT = 4000


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


IDLE_WAIT_S = 120  # even a stream of LONG_OUTPUT tokens that nobody closed is done within this


def _idle_metrics(port: int) -> MetricsSnapshot:
    """The counters once nothing runs and they stopped moving, so the tokens counted from here are this test's: an
    earlier test's stream may still be finishing (or be counted a moment after it closed)."""
    before = scrape_metrics(port, timeout=30)
    deadline = time.monotonic() + IDLE_WAIT_S
    while time.monotonic() < deadline:
        time.sleep(0.25)
        again = scrape_metrics(port, timeout=30)
        if again is not None and before is not None and again.requests_running == 0 \
                and again.requests_waiting == 0 and again.generation_tokens == before.generation_tokens:
            return again
        before = again
    raise AssertionError(f"the server never went idle in {IDLE_WAIT_S} s: {before}")


def test_chunks_arrive_while_the_server_is_still_generating(real_vllm: RealVllm, api_port: int) -> None:
    """The first chunks reach the laptop while vLLM has made only part of this request's output: the tunnel passes
    each chunk on as it comes, it does not wait for the response to end.

    The server's token counter decides, read straight from the server (not through the tunnel) as the third chunk
    arrives: it has moved by at least the tokens received (it counts this request) and by less than half of the
    LONG_OUTPUT tokens the request must make (``ignore_eos``), so this request was still being generated. Another
    request's tokens could only make it fail, never pass. The count of finished requests is not asked: any other
    request finishing meanwhile moves it, which says nothing about this one. (Neither is the running-requests gauge:
    vLLM publishes that one a step late.)"""
    before = _idle_metrics(real_vllm.port)
    body = {"model": real_vllm.served_name, "messages": [{"role": "user", "content": "Write a long story."}],
            "max_tokens": LONG_OUTPUT, "ignore_eos": True, "stream": True}
    contents: list[str] = []
    sent = time.monotonic()
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
        third_at = time.monotonic() - sent
        during = scrape_metrics(real_vllm.port, timeout=30)
    assert len(contents) == 3
    assert during is not None
    made = during.generation_tokens - before.generation_tokens
    seen = f"{made:.0f} tokens made when the third chunk arrived, {third_at:.2f} s after the request; {before} {during}"
    assert made >= len(contents), "the counter missed this request's tokens: " + seen
    assert made < LONG_OUTPUT / 2, "the chunks came only after half the output was made: " + seen
    # Closing the stream aborts the request; the next test must find the server idle again.
    assert wait_for(lambda: (scrape_metrics(real_vllm.port, timeout=30) or before).requests_running == 0, timeout=60)
