"""The tunnels' door, over raw sockets: a DNS-rebound Host is refused on both HTTP forwards before anything reaches the
VM, and Open WebUI is only for a browser that came through the panel's one-time link."""
from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator

import pytest

from app.domain import vm_contract as vc
from app.engine.tunnel_front import ENTER_PATH, cookie_name
from app.engine.tunnels import ForwardSpec, TunnelSupervisor
from app.remote import KeyPair, RemoteHost, load_private_key, load_public_key
from app.simulator.fake_vllm import LoopbackHttpServer
from app.simulator.vm import SimulatedVm, VmBehaviour
from engine_helpers import wait_for

API_KEY = "sk-front-test-31"
ENV = f"MODEL_ID=Qwen/Qwen2.5-Coder-7B-Instruct\nSERVED_MODEL_NAME=coder\nVLLM_API_KEY={API_KEY}\n"


def echo_head_app(environ: dict, start_response: Callable) -> list[bytes]:
    """Stands in for Open WebUI on the VM: answers with the request headers it received."""
    seen = {k: v for k, v in environ.items() if k.startswith("HTTP_")}
    body = json.dumps(seen).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


@pytest.fixture
def vm(keys: tuple[KeyPair, KeyPair]) -> Iterator[SimulatedVm]:
    host, client = keys
    machine = SimulatedVm(host.private_openssh, [client.public_openssh], ENV, VmBehaviour.fast(), configured=True)
    machine.start()
    wait_for(lambda: machine.vllm is not None and machine.webui is not None)
    machine.webui.stop()
    machine.webui = LoopbackHttpServer(echo_head_app, threads=2)
    yield machine
    machine.stop()


@pytest.fixture
def tunnels(keys: tuple[KeyPair, KeyPair], vm: SimulatedVm) -> Iterator[tuple[TunnelSupervisor, dict[str, int]]]:
    host, client = keys
    supervisor = TunnelSupervisor()
    factory = lambda: RemoteHost("127.0.0.1", vm.ssh_port, load_public_key(host.public_openssh),  # noqa: E731
                                 load_private_key(client.private_openssh), connect_timeout=2)
    ports = supervisor.open("s1", factory, [ForwardSpec("api", vc.VLLM_PORT, 0, front="http"),
                                            ForwardSpec("webui", vc.WEBUI_PORT, 0, front="webui")])
    yield supervisor, ports
    supervisor.close_all()


def raw_request(port: int, head: str, body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    """Send ``head`` (lines joined with CRLF) as is; read the answer until the tunnel or the VM closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head_bytes, _, payload = data.partition(b"\r\n\r\n")
    lines = head_bytes.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.setdefault(name.strip().lower(), value.strip())
    return int(lines[0].split()[1]), headers, payload


def get(port: int, path: str = "/", host: str | None = None, extra: str = "") -> tuple[int, dict[str, str], bytes]:
    host = host if host is not None else f"127.0.0.1:{port}"
    return raw_request(port, f"GET {path} HTTP/1.1\nHost: {host}\n{extra}Connection: close\n")


def enter(supervisor: TunnelSupervisor) -> tuple[int, str]:
    """What the panel's route does for its logged-in user: a one-time link; here followed, returning the cookie."""
    port, token = supervisor.webui_link("s1")
    status, headers, _ = get(port, f"{ENTER_PATH}?t={token}")
    assert status == 303 and headers["location"] == "/"
    return port, headers["set-cookie"].split(";")[0]


@pytest.mark.parametrize("forward", ["api", "webui"])
@pytest.mark.parametrize("host", ["evil.example", "evil.example:{port}", "127.0.0.1.evil.example:{port}",
                                  "localhost.evil.example", "127.0.0.2:{port}", "127.0.0.1:1", "", "[::1]:{port}"])
def test_a_foreign_host_is_refused_before_the_vm_sees_it(tunnels, forward, host):
    _supervisor, ports = tunnels
    port = ports[forward]
    status, _headers, body = get(port, "/health", host=host.format(port=port))
    assert status == 403
    assert b"127.0.0.1 or localhost" in body and b"status" not in body  # the VM's /health answer never came


@pytest.mark.parametrize("forward", ["api", "webui"])
def test_a_missing_or_doubled_host_and_non_http_bytes_are_refused(tunnels, forward):
    port = tunnels[1][forward]
    assert raw_request(port, "GET /health HTTP/1.1\nConnection: close\n")[0] == 403
    assert raw_request(port, f"GET /health HTTP/1.1\nHost: 127.0.0.1:{port}\nHost: evil.example\n")[0] == 403
    assert raw_request(port, "\x16\x03\x01 hello\n")[0] == 400


@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "localhost:{port}", "LOCALHOST", "127.0.0.1"])
def test_the_api_answers_for_local_names_on_a_kept_alive_connection(tunnels, host):
    port = tunnels[1]["api"]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        for _ in range(2):  # the head check happens once; the second request rides the same connection
            sock.sendall(f"GET /health HTTP/1.1\r\nHost: {host.format(port=port)}\r\n\r\n".encode())
            answer = sock.recv(65536)
            assert answer.startswith(b"HTTP/1.1 200")


def test_the_api_key_still_guards_vllm_behind_the_door(tunnels):
    port = tunnels[1]["api"]
    assert get(port, "/v1/models")[0] == 401
    assert get(port, "/v1/models", extra=f"Authorization: Bearer {API_KEY}\n")[0] == 200


def test_open_webui_without_the_access_cookie_says_to_open_it_from_the_panel(tunnels):
    port = tunnels[1]["webui"]
    for extra in ("", f"Cookie: {cookie_name(port)}=forged\n", "Cookie: maider_session=stolen\n"):
        status, headers, body = get(port, "/", extra=extra)
        assert status == 403 and b"from the maider panel" in body
        assert "HTTP_HOST" not in body.decode()  # nothing came back from the VM


def test_the_panels_link_works_once_and_its_cookie_opens_open_webui(tunnels):
    supervisor, ports = tunnels
    port, token = supervisor.webui_link("s1")
    status, headers, _ = get(port, f"{ENTER_PATH}?t={token}")
    assert status == 303
    cookie = headers["set-cookie"]
    assert cookie.startswith(f"{cookie_name(port)}=") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert get(port, f"{ENTER_PATH}?t={token}")[0] == 403  # used up
    assert get(port, f"{ENTER_PATH}?t=guess")[0] == 403
    status, _headers, body = get(port, "/", extra=f"Cookie: {cookie.split(';')[0]}\n")
    assert status == 200 and json.loads(body)["HTTP_HOST"] == f"127.0.0.1:{port}"


def test_maiders_cookies_never_reach_the_vm_and_each_webui_request_is_checked(tunnels):
    supervisor, ports = tunnels
    port, cookie = enter(supervisor)
    status, _headers, body = get(port, "/", extra=f"Cookie: theme=dark; {cookie}; maider_session=panel-secret\n"
                                                  "Connection: keep-alive\n")
    seen = json.loads(body)
    assert status == 200 and seen["HTTP_COOKIE"] == "theme=dark"
    assert seen["HTTP_CONNECTION"] == "close"  # one request per connection: the next one passes the door again
    api = ports["api"]
    status, _headers, body = get(api, "/health", extra="Cookie: maider_session=panel-secret; a=b\n")
    assert status == 200


def test_a_cookie_is_only_good_for_the_tunnel_that_issued_it(tunnels, keys, vm):
    supervisor, _ports = tunnels
    _port, cookie = enter(supervisor)
    host, client = keys
    other = supervisor.open("s2", lambda: RemoteHost("127.0.0.1", vm.ssh_port, load_public_key(host.public_openssh),
                                                     load_private_key(client.private_openssh), connect_timeout=2),
                            [ForwardSpec("webui", vc.WEBUI_PORT, 0, front="webui")])["webui"]
    value = cookie.split("=", 1)[1]
    assert get(other, "/", extra=f"Cookie: {cookie_name(other)}={value}\n")[0] == 403


def test_an_api_request_carrying_maiders_cookies_is_the_connections_last():
    """Only a connection's first request passes the door: when it carries maider's cookies (a browser tab on the API
    port), it is rewritten to close the connection, so no later request on it reaches the VM with them."""
    from app.engine.tunnel_front import decide

    head = (b"GET /docs HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nCookie: maider_8765=signed; a=b\r\n"
            b"Connection: keep-alive")
    forwarded = decide(head, b"", "http", 8000, None).forward.decode()
    assert "maider_8765" not in forwarded and "Cookie: a=b" in forwarded
    assert "Connection: close" in forwarded and "keep-alive" not in forwarded
    plain = b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nConnection: keep-alive"
    assert decide(plain, b"", "http", 8000, None).forward == plain + b"\r\n\r\n"  # aider's requests: untouched
