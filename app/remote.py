"""SSH to a maider VM with paramiko: one transport per VM, the host key pinned, shared by commands and forwards.

maider generates each VM's host key itself and sends it through cloud-init, so the key the server must present is
known before the first connection: anything else is refused (no trust-on-first-use). No agent, no ``~/.ssh`` lookups:
only the session's own client key is offered.
"""
from __future__ import annotations

import base64
import binascii
import contextlib
import hmac
import io
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from app.domain import vm_contract
from app.errors import MaiderError

KEEPALIVE = timedelta(seconds=15)  # SSH-level keepalive: notices a dead peer and keeps NAT entries warm
CHANNEL_OPEN_TIMEOUT = timedelta(seconds=10)
READ_SLICE = timedelta(milliseconds=50)  # longest wait between checks of a command's exit status
LOOPBACK = "127.0.0.1"


class RemoteError(MaiderError):
    """Base of every failure talking to a VM over SSH."""


class SshUnreachable(RemoteError):
    """No SSH session could be set up: refused, timed out, no route, or the server hung up during the handshake."""


class HostKeyMismatch(RemoteError):
    """The server presented a host key other than the one maider gave the VM: never connect to it."""

    def __init__(self, message: str, expected: str, presented: str) -> None:
        super().__init__(message)
        self.expected = expected  # fingerprint (SHA256:...) of the pinned key
        self.presented = presented  # fingerprint of the key the server showed


class SshAuthError(RemoteError):
    """The server refused the session's client key."""


class CommandTimeout(RemoteError):
    """A remote command did not finish in time; its channel was closed."""

    def __init__(self, message: str, command: str, timeout: float) -> None:
        super().__init__(message)
        self.command = command
        self.timeout = timeout


@dataclass(frozen=True)
class KeyPair:
    private_openssh: str  # "-----BEGIN OPENSSH PRIVATE KEY-----..." (unencrypted; stored 0600 by the caller)
    public_openssh: str  # "ssh-ed25519 AAAA... maider"


@dataclass(frozen=True)
class CommandResult:
    exit_code: int  # -1 when the server closed the channel without an exit status (e.g. during a reboot)
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


def new_keypair(comment: str = "maider") -> KeyPair:
    """A fresh Ed25519 key pair in OpenSSH formats (paramiko cannot generate Ed25519 keys itself)."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return KeyPair(private_openssh=private, public_openssh=f"{public.decode()} {comment}".strip())


def load_private_key(text: str) -> paramiko.PKey:
    """Parse an unencrypted OpenSSH or PEM private key (Ed25519, ECDSA or RSA)."""
    for key_class in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            return key_class.from_private_key(io.StringIO(text))
        except (paramiko.SSHException, ValueError, TypeError):
            continue
    raise RemoteError("not a usable private key (expected an unencrypted Ed25519, ECDSA or RSA key)")


def load_public_key(text: str) -> paramiko.PKey:
    """Parse one ``authorized_keys``-style line ("ssh-ed25519 AAAA... comment")."""
    parts = text.strip().split()
    if len(parts) < 2:
        raise RemoteError("not an OpenSSH public key line")
    try:
        return paramiko.PKey.from_type_string(parts[0], base64.b64decode(parts[1], validate=True))
    except (paramiko.SSHException, ValueError, TypeError, binascii.Error) as exc:
        raise RemoteError(f"not a usable public key ({type(exc).__name__})") from None


def public_key_line(key: paramiko.PKey, comment: str = "") -> str:
    """The ``authorized_keys``/``known_hosts`` form of a key."""
    return f"{key.get_name()} {key.get_base64()} {comment}".strip()


def same_key(a: paramiko.PKey, b: paramiko.PKey) -> bool:
    """Keys are equal when their type and public blob are equal (constant-time compare)."""
    return a.get_name() == b.get_name() and hmac.compare_digest(a.asbytes(), b.asbytes())


def close_channel(channel: paramiko.Channel) -> None:
    """Close a channel whose transport may already be gone (paramiko then raises from close())."""
    try:
        channel.close()
    except (OSError, EOFError, paramiko.SSHException):
        pass


class RemoteHost:
    """One pinned SSH transport to one VM, shared by commands, forwards and metrics from several threads."""

    def __init__(self, host: str, port: int, host_key: paramiko.PKey, client_key: paramiko.PKey,
                 username: str = "root", connect_timeout: float = 10.0) -> None:
        self.host = host
        self.port = port
        self.host_key = host_key
        self.client_key = client_key
        self.username = username
        self.connect_timeout = connect_timeout
        self._transport: paramiko.Transport | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<RemoteHost {self.username}@{self.host}:{self.port}>"

    def connect(self) -> None:
        """Open the shared transport (no-op when it is alive); raise SshUnreachable/HostKeyMismatch/SshAuthError."""
        with self._lock:
            if self._transport is not None and self._transport.is_active():
                return
            self._transport = self._open_transport()

    def _open_transport(self) -> paramiko.Transport:
        where = f"{self.host}:{self.port}"
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout)
        except OSError as exc:
            raise SshUnreachable(f"cannot reach SSH at {where}: {exc.strerror or type(exc).__name__}") from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport = paramiko.Transport(sock)
        transport.banner_timeout = self.connect_timeout
        transport.handshake_timeout = self.connect_timeout
        # Ask only for the pinned key's type, so a server with several keys shows the one we can check.
        transport.get_security_options().key_types = [self.host_key.get_name()]
        try:
            transport.start_client(timeout=self.connect_timeout)
        except paramiko.ssh_exception.IncompatiblePeer:
            transport.close()
            raise HostKeyMismatch(f"SSH server at {where} has no {self.host_key.get_name()} host key; "
                                  "refusing to connect", self.host_key.fingerprint, "none of that type") from None
        except (paramiko.SSHException, OSError, EOFError) as exc:
            transport.close()
            raise SshUnreachable(f"SSH handshake with {where} failed ({type(exc).__name__})") from None
        presented = transport.get_remote_server_key()
        if not same_key(presented, self.host_key):
            transport.close()
            raise HostKeyMismatch(
                f"SSH server at {where} presented host key {presented.fingerprint}, expected "
                f"{self.host_key.fingerprint}: refusing to connect (possible interception or a different VM)",
                self.host_key.fingerprint, presented.fingerprint)
        try:
            transport.auth_publickey(self.username, self.client_key)
        except paramiko.AuthenticationException:
            transport.close()
            raise SshAuthError(f"SSH server at {where} refused maider's key for {self.username}") from None
        except (paramiko.SSHException, OSError, EOFError) as exc:
            transport.close()
            raise SshUnreachable(f"SSH authentication with {where} failed ({type(exc).__name__})") from None
        transport.set_keepalive(int(KEEPALIVE.total_seconds()))
        return transport

    def _active_transport(self) -> paramiko.Transport:
        transport = self._transport
        if transport is None or not transport.is_active():
            self.connect()
            transport = self._transport
        assert transport is not None
        return transport

    def is_alive(self) -> bool:
        transport = self._transport
        return transport is not None and transport.is_active() and transport.is_authenticated()

    def ping(self, timeout: float = 5.0) -> bool:
        """A real round trip (open and close a session channel): catches a half-open connection after sleep."""
        transport = self._transport
        if transport is None or not transport.is_active():
            return False
        try:
            transport.open_session(timeout=timeout).close()
        except (paramiko.SSHException, OSError, EOFError):
            return False
        return True

    def run(self, command: str, stdin: bytes | None = None, timeout: float = 60.0) -> CommandResult:
        """Run ``command`` on a new session channel; stdin (if any) is sent then closed."""
        stdout = bytearray()
        with self._session(timeout) as channel:
            exit_code, stderr = self._exchange(channel, command, stdin, timeout, stdout.extend, close_stdin=True)
        return CommandResult(exit_code, stdout.decode("utf-8", "replace"), stderr.decode("utf-8", "replace"))

    def stream(self, command: str, stdin: bytes, on_line: Callable[[str], None], cancel: threading.Event,
               timeout: float = 3600.0) -> CommandResult:
        """Run ``command`` with ``on_line`` called for each line of its stdout as it arrives (a long job's progress).

        stdin is sent but left open: the remote program may treat its end as "stop". Setting ``cancel`` closes the
        channel within a read slice, which ends stdin and the program's session; the result then has exit code -1.
        ``stdout`` of the result holds only an unfinished last line.
        """
        pending = bytearray()

        def lines(data: bytes) -> None:
            pending.extend(data)
            *complete, rest = pending.split(b"\n")
            pending[:] = rest
            for line in complete:
                on_line(line.decode("utf-8", "replace"))

        with self._session(timeout) as channel:
            exit_code, stderr = self._exchange(channel, command, stdin, timeout, lines, cancel=cancel)
        return CommandResult(exit_code, pending.decode("utf-8", "replace"), stderr.decode("utf-8", "replace"))

    @contextlib.contextmanager
    def _session(self, timeout: float) -> Iterator[paramiko.Channel]:
        """A new session channel on the shared connection, closed afterwards."""
        transport = self._active_transport()
        try:
            channel = transport.open_session(timeout=min(timeout, CHANNEL_OPEN_TIMEOUT.total_seconds()))
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise SshUnreachable(f"cannot open a session on {self.host}:{self.port} ({type(exc).__name__})") from None
        try:
            yield channel
        finally:
            close_channel(channel)

    def _exchange(self, channel: paramiko.Channel, command: str, stdin: bytes | None, timeout: float,
                  on_stdout: Callable[[bytes], None], *, close_stdin: bool = False,
                  cancel: threading.Event | None = None) -> tuple[int, bytearray]:
        """Execute ``command``, hand its stdout to ``on_stdout`` as it arrives, and return (exit code, stderr); the
        exit code is -1 when ``cancel`` was set or the command ended without one."""
        deadline = time.monotonic() + timeout
        stderr = bytearray()
        try:
            channel.exec_command(command)
            if stdin:
                channel.sendall(stdin)
            if close_stdin:
                channel.shutdown_write()
            wake = channel.fileno()  # readable when stdout/stderr data or EOF arrives
            while cancel is None or not cancel.is_set():
                while channel.recv_ready():
                    on_stdout(channel.recv(65536))
                while channel.recv_stderr_ready():
                    stderr += channel.recv_stderr(65536)
                finished = channel.exit_status_ready() or channel.closed
                if finished and (channel.eof_received or channel.closed) and not channel.recv_ready() \
                        and not channel.recv_stderr_ready():
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise CommandTimeout(f"'{command}' did not finish within {timeout:g} s", command, timeout)
                select.select([wake], [], [], min(remaining, READ_SLICE.total_seconds()))
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise SshUnreachable(f"connection to {self.host}:{self.port} lost while running a command "
                                 f"({type(exc).__name__}: {exc})") from None
        if cancel is not None and cancel.is_set():
            return -1, stderr
        return (channel.recv_exit_status() if channel.exit_status_ready() else -1), stderr

    def open_channel(self, remote_host: str, remote_port: int) -> paramiko.Channel:
        """A direct-tcpip channel to ``remote_host:remote_port`` as seen from the VM (a port forward)."""
        transport = self._active_transport()
        try:
            return transport.open_channel("direct-tcpip", (remote_host, remote_port), (LOOPBACK, 0),
                                          timeout=CHANNEL_OPEN_TIMEOUT.total_seconds())
        except paramiko.ChannelException as exc:
            raise RemoteError(f"the VM refused a forward to {remote_host}:{remote_port} "
                              f"({exc.text or 'connect failed'})") from None
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise SshUnreachable(f"cannot open a forward on {self.host}:{self.port} ({type(exc).__name__})") from None

    def keep_pty(self) -> paramiko.Channel:
        """A pty session that runs forever: OpenSSH's sshd sets TCP_NODELAY on the connection once a pty exists,
        which removes the ~44 ms Nagle/delayed-ACK stall from small forwarded writes."""
        transport = self._active_transport()
        try:
            channel = transport.open_session(timeout=CHANNEL_OPEN_TIMEOUT.total_seconds())
            channel.get_pty()
            channel.exec_command(vm_contract.CMD_KEEP_PTY)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise SshUnreachable(f"cannot open the pty session on {self.host}:{self.port} "
                                 f"({type(exc).__name__})") from None
        return channel

    def close(self) -> None:
        with self._lock:
            transport, self._transport = self._transport, None
        if transport is not None:
            transport.close()
