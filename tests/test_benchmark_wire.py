"""The benchmark's clock at the socket (app.benchmark.wire), against a real HTTP/1.1 server over TCP and TLS."""
import asyncio
import itertools
import json
import socket
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from app.benchmark.client import Level, Target, WarmupFailed, _timed_transport, run_sweep
from app.benchmark.prompts import Prompt
from app.tls import self_signed

GAP_S = 0.05
TOKENS = 3


class _Sse(BaseHTTPRequestHandler):
    """A completion stream: TOKENS token chunks GAP_S apart, then usage and [DONE]; ``drop`` cuts it after one."""

    protocol_version = "HTTP/1.1"
    drop = False

    def do_GET(self) -> None:  # the benchmark opening its connections
        body = b'{"object": "list", "data": []}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for i in range(TOKENS):
            if i:
                time.sleep(GAP_S)
            self._message({"choices": [{"index": 0, "text": " x", "finish_reason": None}]})
            if self.drop:
                self.close_connection = True
                return
        self._message({"choices": [], "usage": {"prompt_tokens": 2, "completion_tokens": TOKENS}})
        done = b"data: [DONE]\n\n"
        self.wfile.write(f"{len(done):x}\r\n".encode() + done + b"\r\n0\r\n\r\n")

    def _message(self, message: dict) -> None:
        data = f"data: {json.dumps(message)}\n\n".encode()
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def sse_server():
    servers = []

    def start(tls: ssl.SSLContext | None = None, drop: bool = False) -> int:
        server = ThreadingHTTPServer(("127.0.0.1", 0), type("Handler", (_Sse,), {"drop": drop}))
        if tls is not None:
            server.socket = tls.wrap_socket(server.socket, server_side=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server.server_address[1]

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_chunks_are_timed_when_they_arrive_not_when_a_busy_client_reads_them(sse_server):
    """The task reads nothing for 0.3 s while the chunks arrive 50 ms apart: their times still say 50 ms apart."""
    port = sse_server()

    async def read_late() -> tuple[float, list[float], float]:
        async with httpx.AsyncClient(transport=_timed_transport(ssl.create_default_context())) as client, \
                client.stream("POST", f"http://127.0.0.1:{port}/v1/completions", json={}) as response:
            wire = response.extensions["network_stream"]
            await asyncio.sleep(0.3)
            stamps = [wire.received_at async for _ in response.aiter_raw()]
            return wire.sent_at, stamps, time.perf_counter()

    # its own thread, as the product runs the client: a browser test earlier in the run leaves Playwright's event
    # loop running in this one, where asyncio.run() refuses to start another
    with ThreadPoolExecutor(max_workers=1) as pool:
        sent_at, stamps, read_at = pool.submit(asyncio.run, read_late()).result()
    arrivals = sorted(set(stamps))
    assert len(arrivals) >= TOKENS
    assert all(later - earlier >= GAP_S * 0.8 for earlier, later in itertools.pairwise(arrivals[:TOKENS]))
    assert sent_at < arrivals[0] < read_at - 0.2


def test_a_level_of_one_request_lasts_exactly_that_request(sse_server):
    port = sse_server()
    [run] = run_sweep(Target(f"http://127.0.0.1:{port}", "m"), [Prompt("hi", TOKENS, 1)], [Level(1)],
                      ignore_eos=True, warmup=0)
    [outcome] = run.outcomes
    assert outcome.success and outcome.output_len == TOKENS and len(outcome.itl) == TOKENS - 1
    assert all(gap >= GAP_S * 0.8 for gap in outcome.itl)
    assert run.duration == pytest.approx(outcome.latency)  # from its bytes leaving to its last token arriving


def test_https_is_timed_through_tls_too(sse_server, tmp_path, monkeypatch):
    cert = self_signed(tmp_path, ["127.0.0.1"])
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert.cert_path, cert.key_path)
    port = sse_server(tls=context)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert.cert_path))  # the client trusts it as it trusts the system's CAs
    [run] = run_sweep(Target(f"https://127.0.0.1:{port}", "m"), [Prompt("hi", TOKENS, 1)] * 2, [Level(2)],
                      ignore_eos=True, warmup=1)
    assert [o.success for o in run.outcomes] == [True, True]
    assert all(o.output_len == TOKENS and min(o.itl) >= GAP_S * 0.8 for o in run.outcomes)


def test_an_untrusted_certificate_stops_the_run_with_the_reason(sse_server, tmp_path):
    cert = self_signed(tmp_path, ["127.0.0.1"])
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert.cert_path, cert.key_path)
    port = sse_server(tls=context)
    target = Target(f"https://127.0.0.1:{port}", "m")
    with pytest.raises(WarmupFailed, match="ConnectError: .*CERTIFICATE_VERIFY_FAILED"):
        run_sweep(target, [Prompt("hi", TOKENS, 1)], [Level(1)], ignore_eos=True)
    [run] = run_sweep(target, [Prompt("hi", TOKENS, 1)], [Level(1)], ignore_eos=True, warmup=0)
    assert "CERTIFICATE_VERIFY_FAILED" in run.outcomes[0].error


def test_a_reply_cut_off_midway_is_a_failed_request_that_says_so(sse_server):
    port = sse_server(drop=True)
    [run] = run_sweep(Target(f"http://127.0.0.1:{port}", "m"), [Prompt("hi", TOKENS, 1)], [Level(1)],
                      ignore_eos=True, warmup=0)
    [outcome] = run.outcomes
    assert not outcome.success and "RemoteProtocolError" in outcome.error


def test_nothing_listening_stops_the_run_with_the_reason():
    with socket.socket() as sock:  # a port that was just free: connecting to it is refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(WarmupFailed, match="ConnectError"):
        run_sweep(Target(f"http://127.0.0.1:{port}", "m"), [Prompt("hi", TOKENS, 1)], [Level(1)], ignore_eos=True)
