"""Tunnels end to end: local port -> maider's paramiko transport -> simulated sshd -> fake vLLM on the 'VM'."""
from __future__ import annotations

import json
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta

import httpx
import pytest

from app.domain import vm_contract as vc
from app.engine.tunnels import ForwardSpec, LivenessTiming, TunnelSupervisor
from app.remote import KeyPair, RemoteHost, load_private_key, load_public_key, new_keypair
from app.simulator.vm import SimulatedVm, VmBehaviour
from engine_helpers import free_port, wait_for

API_KEY = "sk-tunnel-test-77"
ENV = f"MODEL_ID=Qwen/Qwen2.5-Coder-7B-Instruct\nSERVED_MODEL_NAME=coder\nVLLM_API_KEY={API_KEY}\n"
AUTH = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture
def vm(keys: tuple[KeyPair, KeyPair]) -> Iterator[SimulatedVm]:
    host, client = keys
    machine = SimulatedVm(host.private_openssh, [client.public_openssh], ENV, VmBehaviour.fast(), configured=True)
    machine.start()
    wait_for(lambda: machine.vllm is not None)
    yield machine
    machine.stop()


@pytest.fixture
def remote_factory(keys: tuple[KeyPair, KeyPair], vm: SimulatedVm) -> Callable[[], RemoteHost]:
    host, client = keys
    return lambda: RemoteHost("127.0.0.1", vm.ssh_port, load_public_key(host.public_openssh),
                              load_private_key(client.private_openssh), connect_timeout=2)


@pytest.fixture
def supervisor() -> Iterator[TunnelSupervisor]:
    tunnels = TunnelSupervisor()
    yield tunnels
    tunnels.close_all()


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_forwards_reach_vllm_and_webui_on_the_vm(supervisor, remote_factory):
    api_port, webui_port = free_port(), free_port()
    ports = supervisor.open("s1", remote_factory, [ForwardSpec("api", vc.VLLM_PORT, api_port),
                                                   ForwardSpec("webui", vc.WEBUI_PORT, webui_port)])
    assert ports == {"api": api_port, "webui": webui_port}
    assert supervisor.status("s1").state == "up"
    base = f"http://127.0.0.1:{api_port}"
    assert httpx.get(f"{base}/v1/models").status_code == 401  # the key is still required through the tunnel
    assert httpx.get(f"{base}/v1/models", headers=AUTH).json()["data"][0]["id"] == "coder"
    body = {"model": "coder", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    with httpx.stream("POST", f"{base}/v1/chat/completions", json=body, headers=AUTH) as response:
        events = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]" and json.loads(events[1][6:])["choices"][0]["delta"]["content"]
    assert "Open WebUI" in httpx.get(f"http://127.0.0.1:{webui_port}/").text
    status = supervisor.status("s1")
    assert status.bytes_in > 0 and status.bytes_out > 0 and status.last_traffic_at is not None


def test_taken_preferred_port_falls_back_to_the_next_free_one(supervisor, remote_factory):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen(1)
        taken = squatter.getsockname()[1]
        ports = supervisor.open("s1", remote_factory, [ForwardSpec("api", vc.VLLM_PORT, taken)])
        assert ports["api"] != taken and ports["api"] > 0
        assert _healthy(ports["api"])


def test_a_reboot_drops_the_transport_and_the_tunnel_comes_back_on_the_same_port(supervisor, remote_factory, vm):
    ports = supervisor.open("s1", remote_factory, [ForwardSpec("api", vc.VLLM_PORT, free_port())])
    assert _healthy(ports["api"])
    admin = remote_factory()
    admin.run(vc.CMD_REBOOT)
    admin.close()
    wait_for(lambda: supervisor.status("s1").state == "reconnecting" or not _healthy(ports["api"]))
    wait_for(lambda: _healthy(ports["api"]))  # same port, new transport, vLLM back after the reboot
    assert supervisor.status("s1").state == "up" and supervisor.status("s1").ports == ports


def test_reconnect_forces_a_fresh_transport_and_keeps_serving(supervisor, remote_factory):
    ports = supervisor.open("s1", remote_factory, [ForwardSpec("api", vc.VLLM_PORT, free_port())])
    with httpx.Client(base_url=f"http://127.0.0.1:{ports['api']}") as client:
        assert client.get("/health").status_code == 200
        supervisor.reconnect("s1")
        wait_for(lambda: supervisor.status("s1").state == "up")
    assert _healthy(ports["api"])


def test_host_key_mismatch_leaves_the_tunnel_down_without_forwarding(supervisor, keys, vm):
    _host, client = keys
    impostor_key = load_public_key(new_keypair().public_openssh)
    factory = lambda: RemoteHost("127.0.0.1", vm.ssh_port, impostor_key,  # noqa: E731
                                 load_private_key(client.private_openssh), connect_timeout=2)
    ports = supervisor.open("s1", factory, [ForwardSpec("api", vc.VLLM_PORT, free_port())])
    status = supervisor.status("s1")
    assert status.state == "down" and "host key" in status.last_error
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{ports['api']}/health", timeout=8)
    time.sleep(1.2)  # the watcher must not retry a pinned-key failure on its own
    assert supervisor.status("s1").state == "down" and supervisor.status("s1").bytes_out == 0


def test_close_releases_ports_and_threads(supervisor, remote_factory):
    before = threading.active_count()
    ports = supervisor.open("s1", remote_factory, [ForwardSpec("api", vc.VLLM_PORT, free_port())])
    assert _healthy(ports["api"])
    supervisor.close("s1")
    assert supervisor.status("s1") is None
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", ports["api"]))  # free again
    wait_for(lambda: threading.active_count() <= before, timeout=3)


class Blackhole:
    """A TCP relay in front of the VM's sshd that can go silent without closing anything, as a network does
    when the laptop sleeps or the Wi-Fi drops: connections made before ``freeze()`` hang, new ones pass."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.frozen: list[socket.socket] = []
        self.live: list[tuple[socket.socket, socket.socket]] = []
        self.stopped = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            self.live.append((client, upstream))
            threading.Thread(target=self._relay, args=(client, upstream), daemon=True).start()

    def _relay(self, a: socket.socket, b: socket.socket) -> None:
        try:
            while not self.stopped.is_set():
                readable, _, _ = select.select([a, b], [], [], 0.05)
                if any(s in self.frozen for s in (a, b)):
                    continue  # swallowed: nothing moves, nothing closes
                for source in readable:
                    data = source.recv(65536)
                    if not data:
                        return
                    (b if source is a else a).sendall(data)
        except OSError:
            return
        finally:
            a.close()
            b.close()

    def freeze(self) -> None:
        for pair in self.live:
            self.frozen.extend(pair)

    def close(self) -> None:
        self.stopped.set()
        self.listener.close()


def test_a_silent_network_is_noticed_by_the_ping_and_the_tunnel_comes_back(keys, vm):
    host, client = keys
    hole = Blackhole(vm.ssh_port)
    tunnels = TunnelSupervisor(LivenessTiming(watch_interval=timedelta(seconds=0.1),
                                              ping_interval=timedelta(seconds=0.3),
                                              ping_timeout=timedelta(seconds=0.5)))
    factory = lambda: RemoteHost("127.0.0.1", hole.port, load_public_key(host.public_openssh),  # noqa: E731
                                 load_private_key(client.private_openssh), connect_timeout=2)
    try:
        ports = tunnels.open("s1", factory, [ForwardSpec("api", vc.VLLM_PORT, free_port())])
        assert _healthy(ports["api"])
        hole.freeze()  # the transport still looks open: only a round trip can tell
        wait_for(lambda: tunnels.status("s1").state == "reconnecting" or len(hole.live) > 1, timeout=5)
        wait_for(lambda: tunnels.status("s1").state == "up" and _healthy(ports["api"]), timeout=5)
        assert tunnels.status("s1").ports == ports
    finally:
        tunnels.close_all()
        hole.close()


def test_a_factory_sharing_the_engines_connection_survives_a_reboot(supervisor, keys, vm):
    """The engine hands tunnels its one shared RemoteHost and connects it in the factory, which raises while the
    VM reboots: the watcher must survive that and commands and forwards keep sharing one transport."""
    host, client = keys
    shared = RemoteHost("127.0.0.1", vm.ssh_port, load_public_key(host.public_openssh),
                        load_private_key(client.private_openssh), connect_timeout=2)
    calls = []

    def engine_remote() -> RemoteHost:
        calls.append(1)
        if not shared.is_alive():
            shared.connect()  # SshUnreachable while the VM is down
        return shared

    ports = supervisor.open("s1", engine_remote, [ForwardSpec("api", vc.VLLM_PORT, free_port())])
    first_boot = shared.run(vc.CMD_BOOT_ID).stdout
    assert _healthy(ports["api"]) and vm._ssh.connection_count == 1  # one transport for both
    shared.run(vc.CMD_REBOOT)
    wait_for(lambda: not _healthy(ports["api"]))
    wait_for(lambda: _healthy(ports["api"]))
    assert shared.run(vc.CMD_BOOT_ID).stdout != first_boot
    assert supervisor.status("s1").state == "up" and len(calls) >= 2
    wait_for(lambda: vm._ssh.connection_count == 1)
