"""The benchmark's clock at the socket: when a request's bytes left, when each reply's bytes arrived.

Why not ``time.perf_counter()`` in the request's own task: that reads the clock when the event loop gets round to
the task, not when the bytes moved. At concurrency 64 the first chunks of 64 streams arrive within a millisecond or
two and each task wakes only after the ones before it have parsed theirs, so the last read its clock ~10 ms late;
on the way out, httpx/anyio yield between the clock start and the socket write, so each request of a burst also
waited for the others to be built. Here a request is stamped at the write that hands its bytes to the kernel (head
and body in one write), and every received buffer with the kernel's own receive time (``SO_TIMESTAMPNS``; over TLS,
when the loop takes it off the socket, before any task runs). TTFT is still measured as ``vllm bench serve`` defines
it -- from just before the request is sent to the first chunk that carries a token -- but without the client's own
scheduling in it: measured against a server that stamps the same way, the client's error was 0.01-0.04 ms at
concurrency 1 and 64 on a busy two-core machine (``bench/benchmark_accuracy.py``).

httpcore drives this stream as it drives its own (HTTP/1.1 over TCP; TLS on the same socket through asyncio's).
"""
from __future__ import annotations

import asyncio
import re
import socket
import ssl
import struct
import time
from collections import deque
from typing import Any

import httpcore

READ_BUFFER_LIMIT = 1 << 20  # stop reading the socket while this much is unread (a stalled reader, not a stream)
WRITE_BUFFER_LIMIT = 1 << 16  # the request waits while this much is still to send
READ_SIZE = 1 << 16
MAX_STAMP_AGE_NS = 60 * 1_000_000_000
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux's value; SCM_TIMESTAMPNS is the same


class _Protocol(asyncio.Protocol):
    """Buffers received data with the time it arrived; wakes the one reader and writer waiting."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.chunks: deque[tuple[float, bytes]] = deque()
        self.unread = 0
        self.eof = False
        self.error: BaseException | None = None
        self.write_paused = False
        self._read_paused = False
        self._readable: asyncio.Future[None] | None = None
        self._writable: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.received(time.perf_counter(), data)

    def received(self, stamp: float, data: bytes) -> None:
        self.chunks.append((stamp, data))
        self.unread += len(data)
        if self.unread > READ_BUFFER_LIMIT and not self._read_paused and self.transport is not None:
            self._read_paused = True
            self.transport.pause_reading()
        self._wake_reader()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake_reader()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self.error = exc
        self._wake_reader()
        self.write_paused = False
        self._wake_writer()

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self._wake_writer()

    def consumed(self, size: int) -> None:
        self.unread -= size
        if self._read_paused and self.unread <= READ_BUFFER_LIMIT // 2 and self.transport is not None:
            self._read_paused = False
            self.transport.resume_reading()

    async def readable(self) -> None:
        self._readable = asyncio.get_running_loop().create_future()
        try:
            await self._readable
        finally:
            self._readable = None

    async def writable(self) -> None:
        self._writable = asyncio.get_running_loop().create_future()
        try:
            await self._writable
        finally:
            self._writable = None

    def _wake_reader(self) -> None:
        if self._readable is not None and not self._readable.done():
            self._readable.set_result(None)

    def _wake_writer(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)


class TimedStream(httpcore.AsyncNetworkStream):
    """One connection. ``sent_at``: when the current request's first bytes were written; ``received_at``: when
    the bytes the latest ``read`` returned arrived (both ``time.perf_counter()``)."""

    def __init__(self, protocol: _Protocol) -> None:
        self._protocol = protocol
        self.sent_at = 0.0
        self.received_at = 0.0
        self._between_requests = True  # a write after a read (or on a new connection) starts a request
        self._head = b""  # a request head held back until its body, so both leave in one write

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        if self._head:  # nothing followed the head: send it as it is
            await self._send(b"", timeout)
        protocol = self._protocol
        if not protocol.chunks and not protocol.eof:
            try:
                async with asyncio.timeout(timeout):
                    while not protocol.chunks and not protocol.eof:
                        await protocol.readable()
            except TimeoutError:
                raise httpcore.ReadTimeout(f"no data from the server for {timeout} s") from None
        if not protocol.chunks:
            if protocol.error is not None:
                raise httpcore.ReadError(str(protocol.error) or type(protocol.error).__name__)
            return b""
        stamp, data = protocol.chunks.popleft()
        if len(data) > max_bytes:
            protocol.chunks.appendleft((stamp, data[max_bytes:]))
            data = data[:max_bytes]
        protocol.consumed(len(data))
        self.received_at = stamp
        self._between_requests = True
        return data

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        """httpcore writes a request's head and body separately; the head waits for the body (one segment, as
        ``vllm bench serve``'s aiohttp sends it), so a client descheduled between the two writes cannot make the
        server wait for half a request while the clock runs."""
        if not buffer:
            return
        if self._between_requests and not self._head and _announces_body(buffer):
            self._head = buffer
            return
        await self._send(buffer, timeout)

    async def _send(self, buffer: bytes, timeout: float | None) -> None:
        transport = self._protocol.transport
        if transport is None or transport.is_closing():
            raise httpcore.WriteError("the connection is closed")
        if self._head:
            buffer, self._head = self._head + buffer, b""
        if self._between_requests:
            self._between_requests = False
            self.sent_at = time.perf_counter()
        transport.write(buffer)
        if self._protocol.write_paused:
            try:
                async with asyncio.timeout(timeout):
                    while self._protocol.write_paused:
                        await self._protocol.writable()
            except TimeoutError:
                raise httpcore.WriteTimeout(f"the server took no data for {timeout} s") from None
            if self._protocol.error is not None:
                raise httpcore.WriteError(str(self._protocol.error))

    async def aclose(self) -> None:
        if self._protocol.transport is not None:
            self._protocol.transport.close()

    async def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                        timeout: float | None = None) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        raw = self._protocol.transport
        try:
            async with asyncio.timeout(timeout):
                if isinstance(raw, _StampedSocket):  # TLS on the same socket, through asyncio's own transport
                    transport, _ = await loop.create_connection(lambda: self._protocol, sock=raw.detach(),
                                                                ssl=ssl_context, server_hostname=server_hostname)
                else:
                    transport = await loop.start_tls(raw, self._protocol,  # type: ignore[arg-type]
                                                     ssl_context, server_hostname=server_hostname)
        except TimeoutError:
            await self.aclose()
            raise httpcore.ConnectTimeout(f"TLS handshake took longer than {timeout} s") from None
        except (OSError, ssl.SSLError) as exc:
            await self.aclose()
            raise httpcore.ConnectError(str(exc)) from exc
        self._protocol.transport = transport  # type: ignore[assignment]
        return self

    def get_extra_info(self, info: str) -> Any:
        transport = self._protocol.transport
        if info == "is_readable":  # asked of an idle connection: data or EOF now means the server dropped it
            return bool(self._protocol.chunks) or self._protocol.eof
        names = {"ssl_object": "ssl_object", "client_addr": "sockname", "server_addr": "peername", "socket": "socket"}
        return transport.get_extra_info(names[info]) if transport is not None and info in names else None


def _announces_body(head: bytes) -> bool:
    """Is this a complete request head whose body comes in the next write?"""
    lowered = head.lower()
    if not lowered.endswith(b"\r\n\r\n"):
        return False
    if b"\r\ntransfer-encoding:" in lowered:
        return True
    length = re.search(rb"\r\ncontent-length:[ \t]*(\d+)", lowered)
    return length is not None and int(length.group(1)) > 0


class _StampedSocket:
    """A plain TCP connection read with ``recvmsg``, each buffer stamped with the kernel's receive time.

    The kernel's time (``SO_TIMESTAMPNS``) is when the bytes reached this machine's socket, so even a client process
    that waited for a CPU (two cores, a busy machine) times its chunks right; where the kernel gives no time the
    read's own time stands. Only what the protocol needs of an asyncio transport; TLS hands the socket over to
    asyncio's (``detach``), and its chunks are then stamped when the loop reads them.
    """

    def __init__(self, sock: socket.socket, protocol: _Protocol) -> None:
        self._sock = sock
        self._protocol = protocol
        self._loop = asyncio.get_running_loop()
        self._pending = bytearray()
        self._closing = False
        self._reading = True
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        except OSError:
            pass  # not Linux: the read's own time
        self._loop.add_reader(sock, self._readable)

    def _readable(self) -> None:
        try:
            data, ancillary, _, _ = self._sock.recvmsg(READ_SIZE, socket.CMSG_SPACE(16))
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._lose(exc)
            return
        if not data:
            self._loop.remove_reader(self._sock)
            self._protocol.eof_received()
            return
        self._protocol.received(_kernel_time(ancillary), data)

    def write(self, data: bytes) -> None:
        if self._closing:
            return
        if not self._pending:
            try:
                sent = self._sock.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError as exc:
                self._lose(exc)
                return
            data = data[sent:]
            if not data:
                return
            self._loop.add_writer(self._sock, self._writable)
        self._pending += data
        if len(self._pending) > WRITE_BUFFER_LIMIT:
            self._protocol.pause_writing()

    def _writable(self) -> None:
        try:
            sent = self._sock.send(self._pending)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._lose(exc)
            return
        del self._pending[:sent]
        if not self._pending:
            self._loop.remove_writer(self._sock)
            self._protocol.resume_writing()

    def pause_reading(self) -> None:
        if self._reading and not self._closing:
            self._reading = False
            self._loop.remove_reader(self._sock)

    def resume_reading(self) -> None:
        if not self._reading and not self._closing:
            self._reading = True
            self._loop.add_reader(self._sock, self._readable)

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        self._lose(None)

    def detach(self) -> socket.socket:
        """Stop watching the socket and hand it over (to a TLS transport, which closes it from then on)."""
        self._closing = True
        self._loop.remove_reader(self._sock)
        self._loop.remove_writer(self._sock)
        return self._sock

    def get_extra_info(self, name: str) -> Any:
        if name == "socket":
            return self._sock
        if name in ("sockname", "peername"):
            try:
                return self._sock.getsockname() if name == "sockname" else self._sock.getpeername()
            except OSError:
                return None
        return None

    def _lose(self, exc: Exception | None) -> None:
        if self._closing:
            return
        self._closing = True
        self._loop.remove_reader(self._sock)
        self._loop.remove_writer(self._sock)
        self._sock.close()
        self._protocol.connection_lost(exc)


def _kernel_time(ancillary: list[tuple[int, int, bytes]]) -> float:
    """The kernel's receive time (wall clock, from ``SO_TIMESTAMPNS``) on the ``perf_counter`` clock; now if none."""
    perf, wall = time.perf_counter_ns(), time.time_ns()
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= 16:
            seconds, nanoseconds = struct.unpack("qq", data[:16])
            age = wall - (seconds * 1_000_000_000 + nanoseconds)
            if 0 <= age <= MAX_STAMP_AGE_NS:  # else the wall clock was stepped meanwhile: the read's time is safer
                return (perf - age) / 1e9
    return perf / 1e9


class TimedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend for the benchmark: plain asyncio TCP connections that are ``TimedStream``s."""

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None,
                          socket_options: Any = None) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        sock: socket.socket | None = None
        try:
            async with asyncio.timeout(timeout):
                family, kind, proto, _, address = (await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM))[0]
                sock = socket.socket(family, kind, proto)
                sock.setblocking(False)
                if local_address:
                    sock.bind((local_address, 0))
                await loop.sock_connect(sock, address)
        except TimeoutError:
            if sock is not None:
                sock.close()
            raise httpcore.ConnectTimeout(f"connecting to {host}:{port} took longer than {timeout} s") from None
        except OSError as exc:
            if sock is not None:
                sock.close()
            raise httpcore.ConnectError(str(exc) or type(exc).__name__) from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for option in socket_options or ():
            sock.setsockopt(*option)
        protocol = _Protocol()
        protocol.connection_made(_StampedSocket(sock, protocol))
        return TimedStream(protocol)

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Any = None) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("the benchmark connects over TCP only")

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
