"""HTTPS for ``maider serve --share``: a TLS front on the shared address, in front of the loopback waitress.

waitress speaks no TLS, so each accepted connection is decrypted here and relayed, byte for byte, to the panel's own
loopback port. The front remembers which of its loopback source ports carries which client, and ``RestorePeer``
hands the panel the real client address (for the sign-in rate limit and the log) and the ``https`` scheme (for
Secure cookies and the links it prints). No other process can be talking from one of those source ports while the
front holds it, so nobody can pose as a shared client by connecting to the loopback port directly.

Each connection is relayed by one thread with ``select``: an SSL object is never used by two threads at once.
"""
from __future__ import annotations

import logging
import select
import socket
import ssl
import threading
from collections.abc import Callable, Iterable
from typing import Any

log = logging.getLogger(__name__)
HANDSHAKE_TIMEOUT_S = 10.0
IDLE_TIMEOUT_S = 300.0  # also bounds a send to a client that stopped reading
MAX_CONNECTIONS = 256  # relayed at once; more wait in the listen backlog
CHUNK = 64 * 1024


class PeerMap:
    """Loopback source port of a relayed connection → the shared client's address."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._peers: dict[int, str] = {}

    def add(self, local_port: int, client_address: str) -> None:
        with self._lock:
            self._peers[local_port] = client_address

    def remove(self, local_port: int) -> None:
        with self._lock:
            self._peers.pop(local_port, None)

    def get(self, local_port: int) -> str | None:
        with self._lock:
            return self._peers.get(local_port)


class RestorePeer:
    """WSGI middleware: a request relayed by the TLS front gets the client's address and the https scheme."""

    def __init__(self, wsgi_app: Callable, peers: PeerMap) -> None:
        self.wsgi_app = wsgi_app
        self.peers = peers

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        if environ.get("REMOTE_ADDR") in ("127.0.0.1", "::1"):
            try:
                client = self.peers.get(int(environ.get("REMOTE_PORT") or 0))
            except ValueError:
                client = None
            if client is not None:
                environ["REMOTE_ADDR"] = client
                environ["wsgi.url_scheme"] = "https"
                environ["HTTPS"] = "on"
                environ["maider.shared"] = True
        return self.wsgi_app(environ, start_response)


def server_context(cert_path: str, key_path: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_path, key_path)
    return context


class TlsFront:
    """Accept TLS on ``host:port`` and relay each connection to the panel on 127.0.0.1:``backend_port``."""

    def __init__(self, host: str, port: int, backend_port: int, context: ssl.SSLContext, peers: PeerMap) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._listener = socket.create_server((host.strip("[]"), port), family=family, backlog=64)
        self.port = self._listener.getsockname()[1]
        self._backend_port = backend_port
        self._context = context
        self._peers = peers
        self._stopped = threading.Event()
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._thread = threading.Thread(target=self._accept_loop, name=f"tls-front-{self.port}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        try:
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()
        self._thread.join(5)

    def _accept_loop(self) -> None:
        while not self._stopped.is_set():
            try:
                conn, address = self._listener.accept()
            except OSError:
                if self._stopped.is_set():
                    return
                continue
            if not self._slots.acquire(timeout=HANDSHAKE_TIMEOUT_S):
                conn.close()  # every relay busy for a while: refuse rather than grow threads without bound
                continue
            threading.Thread(target=self._relay_in_slot, args=(conn, address[0]), daemon=True).start()

    def _relay_in_slot(self, conn: socket.socket, client: str) -> None:
        try:
            self._relay(conn, client)
        finally:
            self._slots.release()

    def _relay(self, conn: socket.socket, client: str) -> None:
        conn.settimeout(HANDSHAKE_TIMEOUT_S)
        try:
            tls = self._context.wrap_socket(conn, server_side=True)
        except (ssl.SSLError, OSError) as exc:  # plain HTTP, a scanner, a client that does not trust the cert
            log.info("TLS handshake with %s failed: %s", client, exc)
            conn.close()
            return
        try:
            backend = socket.create_connection(("127.0.0.1", self._backend_port), timeout=5)
        except OSError:
            tls.close()
            return
        local_port = backend.getsockname()[1]
        self._peers.add(local_port, client)
        try:
            for sock in (tls, backend):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.settimeout(IDLE_TIMEOUT_S)
            _pump(tls, backend)
        except (OSError, ssl.SSLError):
            pass
        finally:
            self._peers.remove(local_port)
            for sock in (tls, backend):
                try:
                    sock.close()
                except OSError:
                    pass


def _pump(tls: ssl.SSLSocket, backend: socket.socket) -> None:
    """Relay both ways until either side closes or the connection sits idle too long."""
    while True:
        if tls.pending():
            readable = [tls]
        else:
            readable, _, _ = select.select([tls, backend], [], [], IDLE_TIMEOUT_S)
            if not readable:
                return
        for sock in readable:
            try:
                data = sock.recv(CHUNK)
            except ssl.SSLWantReadError:
                continue
            if not data:
                return
            (backend if sock is tls else tls).sendall(data)
