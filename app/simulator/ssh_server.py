"""A small SSH server in pure paramiko: the simulated VM's sshd.

Public-key auth only, ``exec`` requests answered by the VM's command handler, pty sessions held open, and
``direct-tcpip`` forwards to the VM's loopback services (mapped to the real local ports of the fake vLLM and WebUI).
Works with paramiko clients and with the OpenSSH client (``ssh -N -L``). ``stop()`` drops every connection, which is
what a reboot or a destroyed VM looks like from the outside.
"""
from __future__ import annotations

import logging
import select
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass

import paramiko

from app.remote import close_channel, same_key

log = logging.getLogger(__name__)

PIPE_CHUNK = 65536
ACCEPT_POLL_S = 0.1  # how often a connection loop re-checks that it is still wanted (bounds stop())
HOLD_POLL_S = 0.1  # a held session (pty) re-checks this often whether its client closed it
STDIN_EOF_WAIT_S = 0.5  # longest wait for a client to close stdin before a command runs
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class ExecResult:
    """What a command printed and returned. ``hold`` keeps the channel open until the client closes it."""

    exit_code: int = 0
    stdout: str = ""
    stderr: str = ""
    hold: bool = False
    drop: bool = False  # hang up the whole connection instead of answering (a host that went away mid-command)
    # A long-running command that talks while it runs: called with the channel and the stdin received so far, it
    # reads the rest of stdin and writes its output itself, and returns the exit status.
    stream: Callable[[paramiko.Channel, bytes], int] | None = None


# handler(command, read_stdin) -> ExecResult; read_stdin() reads the client's stdin until EOF.
ExecHandler = Callable[[str, Callable[[], bytes]], ExecResult]
# maps a port on the VM's loopback to the local port that serves it, or None when nothing listens there.
PortMap = Callable[[int], int | None]


class _Interface(paramiko.ServerInterface):
    """Per-connection policy: who may log in, which channels and requests are allowed."""

    def __init__(self, server: SshServer) -> None:
        self.server = server
        self.forwards: dict[int, socket.socket] = {}  # channel id -> upstream socket, picked up after accept()

    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        if any(same_key(key, ok) for ok in self.server.keys_for(username)):
            return paramiko.AUTH_SUCCESSFUL
        return paramiko.AUTH_FAILED

    def check_channel_request(self, kind: str, chanid: int) -> int:
        if kind == "session":
            return paramiko.OPEN_SUCCEEDED
        return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_direct_tcpip_request(self, chanid: int, origin: tuple[str, int],
                                           destination: tuple[str, int]) -> int:
        host, port = destination
        local_port = self.server.port_map(port) if host in LOOPBACK_NAMES else None
        if local_port is None:
            return paramiko.OPEN_FAILED_CONNECT_FAILED
        try:
            upstream = socket.create_connection(("127.0.0.1", local_port), timeout=5)
        except OSError:
            return paramiko.OPEN_FAILED_CONNECT_FAILED
        upstream.settimeout(None)
        upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.forwards[chanid] = upstream
        return paramiko.OPEN_SUCCEEDED

    def check_channel_pty_request(self, channel, term, width, height, pixelwidth, pixelheight, modes) -> bool:
        return True

    def check_channel_shell_request(self, channel: paramiko.Channel) -> bool:
        return True  # an idle shell: held open, like a pty session waiting for input

    def check_channel_env_request(self, channel: paramiko.Channel, name: bytes, value: bytes) -> bool:
        return False

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        text = command.decode("utf-8", "replace")
        self.server._spawn(self.server._run_exec, channel, text, name="ssh-exec")
        return True

    def check_global_request(self, kind: str, msg: paramiko.Message) -> bool:
        return False  # keepalives get a failure reply, as from OpenSSH


class SshServer:
    """Listens on 127.0.0.1; the port is bound at construction (connections are refused until ``start()``)."""

    def __init__(self, host_key: paramiko.PKey, authorized_keys: list[paramiko.PKey], handle_exec: ExecHandler,
                 port_map: PortMap, port: int = 0, username: str = "root",
                 users: Callable[[str], list[paramiko.PKey]] | None = None,
                 admit: Callable[[], bool] | None = None) -> None:
        """``users``: the keys each login may use, asked at every attempt (a machine with several accounts whose
        authorized_keys change); by default only ``username`` with ``authorized_keys``. ``admit``: asked for every
        new connection; False hangs up at once (an unreachable host)."""
        self.host_key = host_key
        self.authorized_keys = list(authorized_keys)
        self._users = users
        self._admit = admit
        self.handle_exec = handle_exec
        self.port_map = port_map
        self.username = username
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._listener.bind(("127.0.0.1", port))
        except OSError:
            self._listener.close()
            raise
        self.port: int = self._listener.getsockname()[1]
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self._transports: set[paramiko.Transport] = set()
        self._sockets: set[socket.socket] = set()
        self._threads: set[threading.Thread] = set()
        self._accept_thread: threading.Thread | None = None

    def start(self) -> None:
        """Start accepting SSH connections."""
        self._listener.listen(64)
        self._accept_thread = threading.Thread(target=self._accept_loop, name=f"sim-sshd-{self.port}", daemon=True)
        self._accept_thread.start()

    def stop(self) -> None:
        """Close the listener and every connection and forward; wait for the server's threads."""
        self._stopped.set()
        try:
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()
        with self._lock:
            transports, sockets = list(self._transports), list(self._sockets)
        for transport in transports:
            transport.close()
        for sock in sockets:
            _close_quietly(sock)
        if self._accept_thread is not None:
            self._accept_thread.join(5)
        for thread in list(self._threads):
            if thread is not threading.current_thread():
                thread.join(5)

    def keys_for(self, username: str) -> list[paramiko.PKey]:
        if self._users is not None:
            return self._users(username)
        return self.authorized_keys if username == self.username else []

    @property
    def connection_count(self) -> int:
        with self._lock:
            return sum(1 for t in self._transports if t.is_active())

    def _spawn(self, target: Callable[..., None], *args: object, name: str) -> None:
        def run() -> None:
            try:
                target(*args)
            except Exception:  # noqa: BLE001 -- one bad connection must not take the server down
                if not self._stopped.is_set():
                    log.exception("simulated sshd: %s failed", name)
            finally:
                with self._lock:
                    self._threads.discard(thread)

        thread = threading.Thread(target=run, name=name, daemon=True)
        with self._lock:
            if self._stopped.is_set():
                return
            self._threads.add(thread)
            thread.start()  # under the lock: stop() must never find a thread in the set that has not started

    def _track(self, sock: socket.socket) -> bool:
        with self._lock:
            if self._stopped.is_set():
                return False
            self._sockets.add(sock)
            return True

    def _untrack(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.discard(sock)
        _close_quietly(sock)

    def _accept_loop(self) -> None:
        while not self._stopped.is_set():
            try:
                sock, _addr = self._listener.accept()
            except OSError:
                return  # listener shut down
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._admit is not None and not self._admit():
                _close_quietly(sock)
                continue
            if not self._track(sock):
                _close_quietly(sock)
                return
            self._spawn(self._serve_connection, sock, name="sim-sshd-conn")

    def _serve_connection(self, sock: socket.socket) -> None:
        transport = paramiko.Transport(sock)
        transport.add_server_key(self.host_key)
        with self._lock:
            if self._stopped.is_set():
                transport.close()
                return
            self._transports.add(transport)
        interface = _Interface(self)
        try:
            try:
                transport.start_server(server=interface)
            except (paramiko.SSHException, EOFError, OSError):
                return
            sessions: list[paramiko.Channel] = []
            while transport.is_active() and not self._stopped.is_set():
                channel = transport.accept(ACCEPT_POLL_S)
                if channel is None:
                    continue
                upstream = interface.forwards.pop(channel.get_id(), None)
                if upstream is not None:
                    if self._track(upstream):
                        self._spawn(self._pipe, channel, upstream, name="sim-sshd-forward")
                    else:
                        _close_quietly(upstream)
                else:
                    # Session channels are driven by their exec/pty/shell requests. paramiko holds channels
                    # weakly and closes them when collected, so the connection keeps them until they close.
                    sessions = [c for c in sessions if not c.closed] + [channel]
        finally:
            transport.close()
            for upstream in interface.forwards.values():  # forwards opened but never picked up
                _close_quietly(upstream)
            with self._lock:
                self._transports.discard(transport)
            self._untrack(sock)

    def _pipe(self, channel: paramiko.Channel, upstream: socket.socket) -> None:
        try:
            _pipe_both_ways(channel, upstream)
        except (OSError, ValueError, EOFError, paramiko.SSHException):
            pass  # one side vanished mid-copy (stop, reboot, client gone)
        finally:
            close_channel(channel)
            self._untrack(upstream)

    def _run_exec(self, channel: paramiko.Channel, command: str) -> None:
        # Paramiko acknowledges the exec request only after this thread has started, so a fast reply could reach
        # the client before that acknowledgement. Clients close stdin once the request is acknowledged: waiting
        # (briefly) for that EOF keeps the order every SSH client expects.
        received = bytearray()
        eof = False
        channel.settimeout(STDIN_EOF_WAIT_S)
        try:
            while not eof:
                chunk = channel.recv(PIPE_CHUNK)
                received += chunk
                eof = not chunk
        except TimeoutError:  # socket.timeout is TimeoutError since Python 3.10
            pass
        except (OSError, EOFError, paramiko.SSHException):
            return
        channel.settimeout(None)

        def read_stdin() -> bytes:
            nonlocal eof
            while not eof:
                chunk = channel.recv(PIPE_CHUNK)
                received.extend(chunk)
                eof = not chunk
            return bytes(received)

        try:
            result = self.handle_exec(command, read_stdin)
        except Exception:  # noqa: BLE001 -- a handler bug shows as a failed command, like a crashing script
            log.exception("simulated sshd: command failed")
            result = ExecResult(1, "", "internal error in the simulated VM\n")
        try:
            if result.drop:
                channel.get_transport().close()
                return
            if result.stream is not None:
                channel.send_exit_status(result.stream(channel, bytes(received)))
                channel.shutdown_write()
                return
            if result.hold:
                while not channel.closed and not self._stopped.is_set():  # like `sleep infinity`: input is
                    if not channel.recv(PIPE_CHUNK):  # ignored and only the client's close ends it
                        channel.status_event.wait(HOLD_POLL_S)
                return
            if result.stdout:
                channel.sendall(result.stdout.encode())
            if result.stderr:
                channel.sendall_stderr(result.stderr.encode())
            channel.send_exit_status(result.exit_code)
            channel.shutdown_write()
        except (OSError, EOFError, paramiko.SSHException):
            pass  # the client went away
        finally:
            close_channel(channel)


def _pipe_both_ways(channel: paramiko.Channel, upstream: socket.socket) -> None:
    """Copy bytes both ways until either side closes (one thread, select on both)."""
    while True:
        readable, _, _ = select.select([channel, upstream], [], [])
        if channel in readable:
            data = channel.recv(PIPE_CHUNK)
            if not data:
                break
            upstream.sendall(data)
        if upstream in readable:
            try:
                data = upstream.recv(PIPE_CHUNK)
            except OSError:
                break
            if not data:
                break
            channel.sendall(data)


def _close_quietly(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
