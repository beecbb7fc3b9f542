"""Send benchmark requests and time them as ``vllm bench serve`` does (asyncio + httpx, streamed completions).

Per request: the clock starts just before the POST; each SSE message with non-empty ``choices`` is a token chunk:
the first gives TTFT, each later one adds a gap to ITL; latency ends at the last token chunk; the output length is
``usage.completion_tokens`` (``stream_options.include_usage``), never a count of chunks. The times are read at the
socket (``wire.TimedStream``: the request written, each chunk's bytes received by the kernel), so other requests'
work, the event loop's turn order and a client process waiting for a CPU stay out of them.
Load per level: all requests at once (``request_rate`` = inf) or gamma-distributed gaps (Poisson at burstiness 1),
limited by a semaphore of ``max_concurrency``. Warm-up requests run before the first level and are not counted.
"""
from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import math
import random
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpcore
import httpx

from app.benchmark.prompts import Prompt
from app.benchmark.wire import TimedBackend, TimedStream
from app.domain.benchmark_stats import RequestOutcome

REQUEST_TIMEOUT = httpx.Timeout(connect=30.0, read=600.0, write=60.0, pool=None)
CANCEL_POLL_S = 0.1
ERROR_TEXT_MAX = 300


@dataclass(frozen=True)
class Target:
    """An OpenAI-compatible server: ``base_url`` without ``/v1``."""

    base_url: str
    model: str
    api_key: str = ""
    endpoint: str = "completions"  # or "chat" (/v1/chat/completions)

    @property
    def url(self) -> str:
        path = "/v1/chat/completions" if self.endpoint == "chat" else "/v1/completions"
        return self.base_url.rstrip("/") + path

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}


@dataclass(frozen=True)
class Level:
    """One point of the sweep."""

    max_concurrency: int | None  # None = no limit
    request_rate: float = math.inf  # requests/s; inf = all at t=0
    burstiness: float = 1.0


@dataclass
class LevelRun:
    level: Level
    outcomes: list[RequestOutcome]
    duration: float
    cancelled: bool = False


@dataclass
class RunControl:
    """Shared with the thread that watches a run: a cancel flag and a progress callback."""

    cancel: threading.Event = field(default_factory=threading.Event)
    # (level index, requests done, requests in the level, output tokens so far, seconds since the level started)
    on_progress: Callable[[int, int, int, int, float], None] | None = None
    on_level: Callable[[LevelRun], None] | None = None  # after each finished level, outside any timed window


class _ConnectionSlots:
    """One single-connection httpx client per in-flight request, reused across requests.

    httpcore's pool re-scans every connection for every queued request and every response that closes (quadratic):
    at 64 streams on one shared pool that bookkeeping delayed sending by up to 400 ms and inflated TTFT. A pool of
    one connection per slot keeps each step constant, and the slots double as the ``max_concurrency`` semaphore.
    """

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self._idle: list[httpx.AsyncClient] = []
        self._all: list[httpx.AsyncClient] = []
        self._busy = 0
        self._freed = asyncio.Condition()
        self.tls = ssl.create_default_context()  # built once: a context per client costs ~10 ms of CPU each

    def _new_client(self) -> httpx.AsyncClient:
        client = httpx.AsyncClient(timeout=REQUEST_TIMEOUT, trust_env=False, transport=_timed_transport(self.tls))
        self._all.append(client)
        return client

    async def acquire(self) -> httpx.AsyncClient:
        async with self._freed:
            while self.limit is not None and self._busy >= self.limit:
                await self._freed.wait()
            self._busy += 1
            return self._idle.pop() if self._idle else self._new_client()

    async def release(self, client: httpx.AsyncClient) -> None:
        async with self._freed:
            self._busy -= 1
            self._idle.append(client)
            self._freed.notify()

    async def open(self, count: int, target: Target) -> None:
        """Open ``count`` connections before a level starts, so no request's TTFT includes TCP setup."""
        while len(self._all) < count:
            self._idle.append(self._new_client())

        async def touch(client: httpx.AsyncClient) -> None:
            try:
                await client.get(target.base_url.rstrip("/") + "/v1/models", headers=target.headers())
            except httpx.HTTPError:
                pass  # the level's own requests will report what is wrong

        await asyncio.gather(*(touch(c) for c in self._idle[:count]))

    async def aclose(self) -> None:
        for client in self._all:
            await client.aclose()


def _timed_transport(tls: ssl.SSLContext) -> httpx.AsyncHTTPTransport:
    """httpx's own transport on a one-connection httpcore pool whose connections are ``TimedStream``s.

    httpx takes no network backend, so its pool is swapped for one built with the same settings; where that is not
    possible (another httpx), the default pool stays and the client falls back to reading the clock in its task.
    """
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    transport = httpx.AsyncHTTPTransport(verify=tls, trust_env=False, limits=limits)
    if hasattr(transport, "_pool"):
        transport._pool = httpcore.AsyncConnectionPool(ssl_context=tls, max_connections=1,
                                                       max_keepalive_connections=1, network_backend=TimedBackend())
    return transport


class Cancelled(Exception):
    """The run was cancelled; ``runs`` holds the levels that finished."""

    def __init__(self, runs: list[LevelRun]) -> None:
        super().__init__("benchmark cancelled")
        self.runs = runs


def request_body(target: Target, prompt: Prompt, ignore_eos: bool) -> dict:
    """The JSON vLLM's benchmark sends: streamed, usage at the end, greedy, exactly ``output_len`` with ignore_eos."""
    body: dict = {"model": target.model, "max_tokens": prompt.output_len, "temperature": 0.0, "stream": True,
                  "stream_options": {"include_usage": True}}
    if ignore_eos:
        body["ignore_eos"] = True
    if target.endpoint == "chat":
        body["messages"] = [{"role": "user", "content": prompt.text}]
    else:
        body["prompt"] = prompt.text
    return body


async def send_request(client: httpx.AsyncClient, target: Target, prompt: Prompt, ignore_eos: bool,
                       level_start: float = 0.0) -> RequestOutcome:
    """One streamed request, timed; never raises for a server or network failure (the outcome says why)."""
    start = time.perf_counter()  # replaced by the socket's send time once the reply starts
    reading = _StreamTimes(start)
    try:
        async with client.stream("POST", target.url, json=request_body(target, prompt, ignore_eos),
                                 headers=target.headers()) as response:
            wire = response.extensions.get("network_stream")
            timed = wire if isinstance(wire, TimedStream) else None
            if timed is not None:
                start = reading.start = reading.most_recent = timed.sent_at
            if response.status_code != 200:
                text = (await response.aread()).decode(errors="replace")
                return RequestOutcome(False, error=f"HTTP {response.status_code}: {text[:ERROR_TEXT_MAX]}",
                                      started_at=start - level_start)
            async for line in response.aiter_lines():
                if line.startswith("data:"):
                    reading.add(timed.received_at if timed is not None else time.perf_counter(), line)
    except (httpx.HTTPError, ValueError, TypeError) as exc:
        return RequestOutcome(False, error=f"{type(exc).__name__}: {str(exc)[:ERROR_TEXT_MAX]}",
                              started_at=start - level_start)
    return reading.outcome(level_start)


class _StreamTimes:
    """One reply's SSE data lines with the time each arrived, read exactly as ``vllm bench serve`` reads them."""

    def __init__(self, start: float) -> None:
        self.start = self.most_recent = start
        self.ttft = 0.0
        self.itl: list[float] = []
        self.usage: dict | None = None
        self.first = True

    def add(self, arrived: float, line: str) -> None:
        payload = line[5:].strip()
        if payload == "[DONE]":
            return
        message = json.loads(payload)
        if not isinstance(message, dict):
            raise TypeError(f"a stream message that is not a JSON object: {payload[:80]!r}")
        if message.get("choices"):
            if self.first:
                self.ttft, self.first = arrived - self.start, False
            else:
                self.itl.append(arrived - self.most_recent)
            self.most_recent = arrived
        elif isinstance(message.get("usage"), dict):
            self.usage = message["usage"]

    def outcome(self, level_start: float) -> RequestOutcome:
        started_at = self.start - level_start
        if self.first:
            return RequestOutcome(False, error="Never received a valid chunk to calculate TTFT.", started_at=started_at)
        if self.usage is None:
            return RequestOutcome(False, error="the server sent no usage (stream_options.include_usage)",
                                  started_at=started_at)
        return RequestOutcome(True, prompt_len=int(self.usage.get("prompt_tokens") or 0),
                              output_len=int(self.usage.get("completion_tokens") or 0), ttft=self.ttft,
                              latency=self.most_recent - self.start, itl=tuple(self.itl), started_at=started_at)


def _arrival_gaps(count: int, level: Level, rng: random.Random) -> list[float]:
    """Seconds to wait before each request: 0 for an infinite rate, else gamma(shape=b, scale=1/(rate*b))."""
    if math.isinf(level.request_rate):
        return [0.0] * count
    theta = 1.0 / (level.request_rate * level.burstiness)
    return [rng.gammavariate(level.burstiness, theta) for _ in range(count)]


async def _watch_cancel(control: RunControl, tasks: Sequence[asyncio.Task]) -> None:
    while not control.cancel.is_set():
        await asyncio.sleep(CANCEL_POLL_S)
    for task in tasks:
        task.cancel()


async def run_level(slots: _ConnectionSlots, target: Target, prompts: Sequence[Prompt], level: Level,
                    ignore_eos: bool, control: RunControl, index: int = 0, seed: int = 0) -> LevelRun:
    """Every prompt once at this level's load; the duration is the wall time from the first send to the last token."""
    slots.limit = level.max_concurrency
    await slots.open(min(level.max_concurrency or len(prompts), len(prompts)), target)
    with _frozen_heap():
        return await _timed_level(slots, target, prompts, level, ignore_eos, control, index, seed)


@contextlib.contextmanager
def _frozen_heap() -> Iterator[None]:
    """Collect now and freeze what exists, so no full collection stops the loop inside a timed window.

    A full collection walks every object of the process (~100k here, many more in the panel's): measured at up to
    160 ms on a busy machine, long enough to move a TTFT, a whole ITL percentile or the level's duration. Frozen
    objects are only skipped by collections until ``unfreeze``; new garbage is still collected.
    """
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


async def _timed_level(slots: _ConnectionSlots, target: Target, prompts: Sequence[Prompt], level: Level,
                       ignore_eos: bool, control: RunControl, index: int, seed: int) -> LevelRun:
    done, output_tokens = 0, 0
    start = time.perf_counter()

    async def one(prompt: Prompt) -> RequestOutcome:
        nonlocal done, output_tokens
        client = await slots.acquire()
        try:
            outcome = await send_request(client, target, prompt, ignore_eos, start)
        finally:
            await slots.release(client)
        done += 1
        output_tokens += outcome.output_len
        if control.on_progress:
            control.on_progress(index, done, len(prompts), output_tokens, time.perf_counter() - start)
        return outcome

    tasks: list[asyncio.Task] = []
    watcher = asyncio.ensure_future(_watch_cancel(control, tasks))
    try:
        for prompt, gap in zip(prompts, _arrival_gaps(len(prompts), level, random.Random(seed)), strict=True):
            if gap:
                await asyncio.sleep(gap)
            if control.cancel.is_set():
                break
            tasks.append(asyncio.ensure_future(one(prompt)))
        results = await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        watcher.cancel()
    wall = time.perf_counter() - start
    outcomes = [r for r in results if isinstance(r, RequestOutcome)]
    return LevelRun(level, outcomes, _measured_window(outcomes, wall), cancelled=control.cancel.is_set())


def _measured_window(outcomes: Sequence[RequestOutcome], wall: float) -> float:
    """The level's duration: from the first request's bytes leaving to the last token's arrival (socket times).

    ``vllm bench serve`` starts its clock before it builds the first request and stops it after the last task
    ended; here the 64 requests of a burst took 25-60 ms of the client's own CPU before the first left, and a
    stalled client process added up to 230 ms at the end: 1-7 % of a 3 s level's throughput that the server never
    spent. With a failed request the wall time stays (its end is not on the wire).
    """
    if not outcomes or not all(o.success for o in outcomes):
        return wall
    return max(o.started_at + o.latency for o in outcomes) - min(o.started_at for o in outcomes)


async def run_sweep_async(target: Target, prompts: Sequence[Prompt], levels: Sequence[Level], ignore_eos: bool,
                          control: RunControl, warmup: int = 1, seed: int = 0) -> list[LevelRun]:
    """Warm up, then each level in turn with the same prompts; raises Cancelled with the finished levels."""
    runs: list[LevelRun] = []
    slots = _ConnectionSlots(None)
    try:
        if warmup and prompts:
            async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT, trust_env=False, verify=slots.tls) as client:
                outcomes = await asyncio.gather(*(send_request(client, target, prompts[i % len(prompts)],
                                                               ignore_eos) for i in range(warmup)))
            failed = [o for o in outcomes if not o.success]
            if len(failed) == len(outcomes):
                raise WarmupFailed(failed[0].error)
        for index, level in enumerate(levels):
            if control.cancel.is_set():
                raise Cancelled(runs)
            run = await run_level(slots, target, prompts, level, ignore_eos, control, index, seed + index)
            if run.cancelled:
                raise Cancelled(runs)
            runs.append(run)
            if control.on_level:
                control.on_level(run)
    finally:
        await slots.aclose()
    return runs


class WarmupFailed(Exception):
    """Not one warm-up request succeeded: the server is wrong (URL, key, model), so nothing is measured."""


def run_sweep(target: Target, prompts: Sequence[Prompt], levels: Sequence[Level], ignore_eos: bool,
              control: RunControl | None = None, warmup: int = 1, seed: int = 0) -> list[LevelRun]:
    """Blocking wrapper: runs the sweep on a fresh event loop (in a thread of its own when this one has a loop)."""
    sweep = lambda: asyncio.run(run_sweep_async(target, prompts, levels, ignore_eos,  # noqa: E731
                                                control or RunControl(), warmup, seed))
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return sweep()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="maider-benchmark") as pool:
        return pool.submit(sweep).result()
