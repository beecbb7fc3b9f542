"""The benchmark's clock at the socket: when a request's bytes left, when each reply's bytes arrived.

Why not ``time.perf_counter()`` in the request's own task: that reads the clock when the event loop gets round to
the task, not when the bytes moved. At concurrency 64 the first chunks of 64 streams arrive within a millisecond or
two and each task wakes only after the ones before it have parsed theirs, so the last read its clock ~10 ms late;
on the way out, httpx/anyio yield between the clock start and the socket write, so each request of a burst also
waited for the others to be built. Here the protocol stamps every buffer in ``data_received`` (the moment the loop
takes it off the socket, before any task runs) and a request at the write that hands its first bytes to the kernel.
TTFT is still measured as ``vllm bench serve`` defines it -- from just before the request is sent to the first
chunk that carries a token -- but without the client's own scheduling in it.

httpcore drives this stream as it drives its own (HTTP/1.1 over TCP, TLS through ``loop.start_tls``).
"""
from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from typing import Any

import httpcore

READ_BUFFER_LIMIT = 1 << 20  # stop reading the socket while this much is unread (a stalled reader, not a stream)


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
        self.chunks.append((time.perf_counter(), data))
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

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
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
        if not buffer:
            return
        transport = self._protocol.transport
        if transport is None or transport.is_closing():
            raise httpcore.WriteError("the connection is closed")
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
        try:
            async with asyncio.timeout(timeout):
                transport = await loop.start_tls(self._protocol.transport, self._protocol,  # type: ignore[arg-type]
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


class TimedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend for the benchmark: plain asyncio TCP connections that are ``TimedStream``s."""

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None,
                          socket_options: Any = None) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                transport, protocol = await loop.create_connection(
                    _Protocol, host, port, local_addr=(local_address, 0) if local_address else None)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"connecting to {host}:{port} took longer than {timeout} s") from None
        except OSError as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        sock = transport.get_extra_info("socket")
        for option in socket_options or ():
            sock.setsockopt(*option)
        return TimedStream(protocol)

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Any = None) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("the benchmark connects over TCP only")

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
