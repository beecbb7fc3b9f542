"""Port forwards to each VM's vLLM API and Open WebUI, kept alive for as long as maider runs.

Each tunnel owns local listeners on 127.0.0.1 (the preferred port or the next free one) and one SSH transport to the
VM. Every accepted connection gets TCP_NODELAY and rides its own direct-tcpip channel on that transport; a pty
session keeps OpenSSH's sshd from delaying small writes (the 44 ms trap). A watcher thread notices a dead transport
(network drop, laptop sleep, VM reboot) and reconnects with bounded, jittered backoff while the listeners stay bound,
so the ports users pasted into aider keep working. A pinned-host-key or auth failure is not retried: the tunnel goes
"down" with the reason until ``reconnect()``. Forwards that carry HTTP pass their door first (``tunnel_front``: the
Host check, and for Open WebUI maider's access cookie) before anything reaches the VM.
"""
from __future__ import annotations

import logging
import random
import select
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Literal

import paramiko

from app.engine.tunnel_front import Decision, Front, WebUiAccess, decide, read_head
from app.remote import HostKeyMismatch, RemoteError, RemoteHost, SshAuthError, close_channel

log = logging.getLogger(__name__)

PORT_SEARCH_SPAN = 100  # preferred port, then the next 99, then any free port
WATCH_INTERVAL = timedelta(seconds=1)  # how often the watcher looks at the transport
PING_INTERVAL = timedelta(seconds=15)  # round trip that catches a half-open connection after sleep
PING_TIMEOUT = timedelta(seconds=5)  # no answer in this long: the connection is dead (blackhole, sleep)
RECONNECT_BACKOFF_START = timedelta(seconds=0.5)
RECONNECT_BACKOFF_MAX = timedelta(seconds=30)
BACKOFF_JITTER = 0.2  # +-20 %, so many tunnels do not retry in lockstep
WAIT_FOR_TRANSPORT = timedelta(seconds=5)  # a connection accepted while reconnecting waits this long for it
PIPE_CHUNK = 65536

TunnelState = Literal["up", "reconnecting", "down"]


@dataclass(frozen=True)
class ForwardSpec:
    name: str  # "api" or "webui"
    remote_port: int  # port on the VM's 127.0.0.1
    preferred_local_port: int  # e.g. 8000; the next free port is used when taken
    front: Front = "raw"  # "http": Host-checked; "webui": Host-checked and behind maider's access cookie


@dataclass(frozen=True)
class LivenessTiming:
    """How often a tunnel checks its transport; tests shorten these."""

    watch_interval: timedelta = WATCH_INTERVAL
    ping_interval: timedelta = PING_INTERVAL
    ping_timeout: timedelta = PING_TIMEOUT


@dataclass(frozen=True)
class TunnelStatus:
    state: TunnelState
    ports: dict[str, int]  # forward name -> local port actually bound
    last_error: str | None  # why the last connection attempt failed (no secrets)
    last_traffic_at: datetime | None  # naive UTC; feeds the idle watchdog
    bytes_in: int  # VM -> laptop
    bytes_out: int  # laptop -> VM


def bind_local_port(preferred: int) -> socket.socket:
    """A listening socket on 127.0.0.1: ``preferred`` or the next free port (never 0.0.0.0)."""
    candidates = [p for p in range(preferred, preferred + PORT_SEARCH_SPAN) if 0 < p < 65536] if preferred else []
    for port in [*candidates, 0]:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # Linux: lets maider take its port back over connections in TIME_WAIT, never over a live listener.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            sock.close()
            continue
        sock.listen(64)
        return sock
    raise OSError("no free local port")  # unreachable: port 0 always binds


class _Tunnel:
    """One VM's forwards and the transport they share."""

    def __init__(self, key: str, remote_factory: Callable[[], RemoteHost], forwards: list[ForwardSpec],
                 timing: LivenessTiming) -> None:
        self.key = key
        self.timing = timing
        self.remote_factory = remote_factory
        self.forwards = list(forwards)
        self.listeners = {f.name: bind_local_port(f.preferred_local_port) for f in self.forwards}
        self.ports = {name: sock.getsockname()[1] for name, sock in self.listeners.items()}
        self.state: TunnelState = "reconnecting"
        self.last_error: str | None = None
        self.last_traffic: float | None = None  # time.time()
        self.bytes_in = 0
        self.bytes_out = 0
        self.remote: RemoteHost | None = None
        self.pty: paramiko.Channel | None = None
        self.lock = threading.Lock()
        self.counter_lock = threading.Lock()
        self.up = threading.Event()
        self.wake = threading.Event()
        self.closed = threading.Event()
        self.threads: list[threading.Thread] = []
        self.pipes: set[socket.socket] = set()
        self.webui_access = WebUiAccess()

    def start(self, wait: bool = True) -> None:
        """Serve the listeners; ``wait``: connect before returning, else the watcher connects at once."""
        if wait:
            self._connect_once()
        for spec in self.forwards:
            self._spawn(self._accept_loop, spec, name=f"tunnel-{self.key}-{spec.name}")
        self._spawn(self._watch, name=f"tunnel-{self.key}-watch")

    def _spawn(self, target: Callable[..., None], *args: object, name: str) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        self.threads.append(thread)

    def status(self) -> TunnelStatus:
        traffic = (datetime.fromtimestamp(self.last_traffic, timezone.utc).replace(tzinfo=None)
                   if self.last_traffic is not None else None)
        return TunnelStatus(self.state, dict(self.ports), self.last_error, traffic, self.bytes_in, self.bytes_out)

    def _connect_once(self) -> bool:
        """One attempt at a fresh transport + pty; records the outcome in state/last_error.

        The factory may hand out a RemoteHost shared with the engine's commands (and may connect it itself, so it
        may raise too): the tunnel closes it when it reconnects or closes, and its owner reconnects on next use.
        """
        remote: RemoteHost | None = None
        try:
            remote = self.remote_factory()
            remote.connect()
            pty = remote.keep_pty()
        except (HostKeyMismatch, SshAuthError) as exc:
            if remote is not None:
                remote.close()
            self._set_down(str(exc))
            return False
        except Exception as exc:  # noqa: BLE001 -- RemoteError, or a factory bug: either way retry with backoff
            if remote is not None:
                remote.close()
            if not isinstance(exc, RemoteError):
                log.exception("tunnel %s: building the SSH connection failed", self.key)
            with self.lock:
                self.state, self.last_error = "reconnecting", str(exc) if isinstance(exc, RemoteError) \
                    else f"internal error ({type(exc).__name__})"
                self.up.clear()
            return False
        with self.lock:
            if self.closed.is_set():
                remote.close()
                return False
            old, self.remote, self.pty = self.remote, remote, pty
            self.state, self.last_error = "up", None
            self.up.set()
        if old is not None and old is not remote:
            old.close()
        log.info("tunnel %s: up on %s", self.key, self.ports)
        return True

    def _set_down(self, reason: str) -> None:
        with self.lock:
            self.state, self.last_error = "down", reason
            self.up.clear()
        log.warning("tunnel %s: down: %s", self.key, reason)

    def drop_transport(self) -> None:
        with self.lock:
            remote, self.remote, self.pty = self.remote, None, None
            if self.state == "up":
                self.state = "reconnecting"
            self.up.clear()
        if remote is not None:
            remote.close()

    def _watch(self) -> None:
        backoff = RECONNECT_BACKOFF_START.total_seconds()
        next_ping = time.monotonic() + self.timing.ping_interval.total_seconds()
        delay = 0.0
        while not self.closed.is_set():
            self.wake.wait(delay)
            forced = self.wake.is_set()
            self.wake.clear()
            if self.closed.is_set():
                return
            delay = self.timing.watch_interval.total_seconds()
            if forced:
                backoff = RECONNECT_BACKOFF_START.total_seconds()
            if self.state == "down" and not forced:
                continue  # pinned key or auth refused: only reconnect() retries
            remote = self.remote
            if not forced and remote is not None and remote.is_alive():
                if time.monotonic() < next_ping:
                    continue
                next_ping = time.monotonic() + self.timing.ping_interval.total_seconds()
                if remote.ping(self.timing.ping_timeout.total_seconds()):
                    continue
            self.drop_transport()
            if self._connect_once():
                backoff = RECONNECT_BACKOFF_START.total_seconds()
                next_ping = time.monotonic() + self.timing.ping_interval.total_seconds()
            elif self.state != "down":
                delay = backoff * (1 + random.uniform(-BACKOFF_JITTER, BACKOFF_JITTER))
                backoff = min(backoff * 2, RECONNECT_BACKOFF_MAX.total_seconds())

    def _accept_loop(self, spec: ForwardSpec) -> None:
        listener = self.listeners[spec.name]
        while not self.closed.is_set():
            try:
                client, _addr = listener.accept()
            except OSError:
                return  # listener closed
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._spawn(self._serve, client, spec, name=f"tunnel-{self.key}-{spec.name}-conn")
            self.threads = [t for t in self.threads if t.is_alive()]

    def _serve(self, client: socket.socket, spec: ForwardSpec) -> None:
        first = b""
        if spec.front != "raw":
            decision = self._door(client, spec)
            if decision is None or decision.forward is None:
                client.close()
                return
            first = decision.forward
        channel = self._open_channel(spec)
        if channel is None:
            client.close()
            return
        with self.lock:
            self.pipes.add(client)
        try:
            if first:
                channel.sendall(first)
                self._count(0, len(first))
            self._pipe(client, channel)
        except (OSError, ValueError, EOFError, paramiko.SSHException):
            pass  # either end vanished mid-copy
        except Exception:  # noqa: BLE001 -- one broken connection must not go unnoticed, nor kill the tunnel
            log.exception("tunnel %s: forwarding failed", self.key)
        finally:
            with self.lock:
                self.pipes.discard(client)
            close_channel(channel)
            client.close()

    def _door(self, client: socket.socket, spec: ForwardSpec) -> Decision | None:
        """Read the first request head and decide; a refusal is answered here and never reaches the VM."""
        received = read_head(client)
        if received is None:
            return None
        decision = decide(*received, spec.front, self.ports[spec.name], self.webui_access)
        if decision.reply is not None:
            try:
                client.sendall(decision.reply)
                client.shutdown(socket.SHUT_WR)
                client.settimeout(1.0)  # read what the client still sends, so closing does not reset the reply
                while client.recv(65536):
                    pass
            except OSError:
                pass
        return decision

    def _open_channel(self, spec: ForwardSpec) -> paramiko.Channel | None:
        deadline = time.monotonic() + WAIT_FOR_TRANSPORT.total_seconds()
        while not self.up.wait(0.1):  # reconnecting: hold the connection briefly; down: refuse at once
            if self.state == "down" or self.closed.is_set() or time.monotonic() > deadline:
                return None
        remote = self.remote
        if remote is None:
            return None
        try:
            return remote.open_channel("127.0.0.1", spec.remote_port)
        except RemoteError as exc:
            if not remote.is_alive():
                self.wake.set()  # the transport died under us: let the watcher reconnect now
            log.debug("tunnel %s: %s", self.key, exc)
            return None

    def _pipe(self, client: socket.socket, channel: paramiko.Channel) -> None:
        while True:
            readable, _, _ = select.select([client, channel], [], [])
            if client in readable:
                data = client.recv(PIPE_CHUNK)
                if not data:
                    channel.shutdown_write()
                    self._drain(client, channel)
                    return
                channel.sendall(data)
                self._count(0, len(data))
            if channel in readable:
                data = channel.recv(PIPE_CHUNK)
                if not data:
                    return
                client.sendall(data)
                self._count(len(data), 0)

    def _count(self, received: int, sent: int) -> None:
        with self.counter_lock:  # several connections pipe at once
            self.bytes_in += received
            self.bytes_out += sent
            self.last_traffic = time.time()

    def _drain(self, client: socket.socket, channel: paramiko.Channel) -> None:
        """The client closed its side: deliver what the VM still sends (HTTP/1.0-style request-then-read)."""
        while True:
            data = channel.recv(PIPE_CHUNK)
            if not data:
                return
            client.sendall(data)
            self._count(len(data), 0)

    def close(self) -> None:
        self.closed.set()
        self.wake.set()
        for sock in self.listeners.values():
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        with self.lock:
            pipes = list(self.pipes)
        for client in pipes:
            try:
                client.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.drop_transport()
        self.up.set()  # release connections waiting for a transport; they find none and close
        with self.lock:
            self.state = "down"
        for thread in self.threads:
            if thread is not threading.current_thread():
                thread.join(5)


class TunnelSupervisor:
    """All tunnels of one maider process, by key (the session's name)."""

    def __init__(self, timing: LivenessTiming | None = None) -> None:
        self.timing = timing or LivenessTiming()
        self._tunnels: dict[str, _Tunnel] = {}
        self._lock = threading.Lock()

    def open(self, key: str, remote_factory: Callable[[], RemoteHost], forwards: list[ForwardSpec],
             wait: bool = True) -> dict[str, int]:
        """Bind the local ports and connect; returns forward name -> local port. Never raises for SSH failures:
        they show in ``status``. Opening an open key keeps its ports and adopts the new factory.
        ``wait=False`` returns once the ports are bound and connects in the background (restoring many at once)."""
        with self._lock:
            tunnel = self._tunnels.get(key)
            if tunnel is not None and [(f.name, f.remote_port) for f in tunnel.forwards] == \
                    [(f.name, f.remote_port) for f in forwards]:
                tunnel.remote_factory = remote_factory
                if tunnel.state != "up":
                    tunnel.wake.set()
                return dict(tunnel.ports)
        if tunnel is not None:
            self.close(key)
        tunnel = _Tunnel(key, remote_factory, forwards, self.timing)
        with self._lock:
            self._tunnels[key] = tunnel
        tunnel.start(wait)
        return dict(tunnel.ports)

    def status(self, key: str) -> TunnelStatus | None:
        """The tunnel's state, or None when maider holds no tunnel under ``key``."""
        tunnel = self._tunnels.get(key)
        return tunnel.status() if tunnel is not None else None

    def webui_link(self, key: str, forward: str = "webui") -> tuple[int, str] | None:
        """(port, one-time token) for the panel's link into the tunnel's Open WebUI; None without such a tunnel."""
        tunnel = self._tunnels.get(key)
        if tunnel is None or forward not in tunnel.ports:
            return None
        return tunnel.ports[forward], tunnel.webui_access.mint_link()

    def keys(self) -> list[str]:
        return list(self._tunnels)

    def reconnect(self, key: str) -> None:
        """Drop the transport and connect afresh now (also retries a tunnel that is down)."""
        tunnel = self._tunnels.get(key)
        if tunnel is not None:
            tunnel.drop_transport()
            with tunnel.lock:
                tunnel.state = "reconnecting"
            tunnel.wake.set()

    def close(self, key: str) -> None:
        """Close the forwards and the transport; the local ports are released."""
        with self._lock:
            tunnel = self._tunnels.pop(key, None)
        if tunnel is not None:
            tunnel.close()

    def close_all(self) -> None:
        for key in list(self._tunnels):
            self.close(key)
