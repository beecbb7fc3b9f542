"""How exactly does maider's benchmark client measure? Run it against a scripted server with known timing.

The scripted server (plain asyncio in its own process, so it never shares an event loop with the client) answers
every streamed completion with its first token TTFT after the request arrived and one token every ITL after that,
on an absolute schedule (no drift). Its clock starts when the kernel received a request (``SO_TIMESTAMPNS``; not when
this process got round to reading it), its loop waits with ``select`` (microsecond timeouts; epoll rounds every wait up to the next millisecond,
which made the server itself ~0.5 ms late on average) and it stamps each chunk just before writing it, so it knows
how late it really was. The client's figures are compared with the script, and -- per
request -- with what the server really did (the client's own error, without the server's lateness in it):

    .venv/bin/python bench/benchmark_accuracy.py [--repeat 3] [--ttft-ms 100] [--itl-ms 20] [--output-len 64]
                                                 [--levels 1:8,64:128] [--vllm-client]

Goal: |error| <= 1 ms on the TTFT and ITL means, <= 2 % on output throughput, at concurrency 1 and 64. The error
is the client's own: its figure minus what the server did for the same requests (each run prints the error against
the scripted value too, with the server's own lateness beside it).
``--vllm-client`` also measures vLLM's own client (``vllm bench serve``'s request function, aiohttp, from the real-
vLLM tier's venv) against the same server, for comparison.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import selectors
import socket
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.benchmark.client import Level, Target, run_sweep  # noqa: E402
from app.benchmark.prompts import Prompt, random_prompts  # noqa: E402
from app.domain.benchmark_stats import RequestOutcome, summarize  # noqa: E402

GOAL_MS = 1.0
GOAL_TPUT_PCT = 2.0
KEY_CHARS = 64  # requests are matched with the server's records by the start of their (distinct) prompts
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux; SCM_TIMESTAMPNS has the same value
VLLM_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"


class ScriptedServer:
    """HTTP/1.1 keep-alive, chunked SSE, vLLM's completion framing and usage chunk.

    A request's clock starts when the kernel received its last bytes, not when this process got round to reading
    them: on a busy machine a burst of 64 requests otherwise waited ~2 ms on average for the server to run.
    """

    TOKEN = b"data: " + json.dumps({"choices": [{"index": 0, "text": " the", "finish_reason": None}]}).encode() + b"\n\n"

    def __init__(self, ttft: float, itl: float) -> None:
        self.ttft, self.itl = ttft, itl
        self.requests: dict[str, dict] = {}  # prompt key -> {"arrived": t, "sent": [t of each token chunk]}
        self.first_arrival: float | None = None
        self.last_write = 0.0
        self.tokens = 0

    def answer(self, transport: _Connection, request_line: str, body: dict, arrived: float) -> None:
        if request_line.startswith("GET /stats"):
            _send_json(transport, {"requests": self.requests, "first_arrival": self.first_arrival,
                                   "last_write": self.last_write, "tokens": self.tokens})
        elif request_line.startswith("GET "):  # the client opening its connections (GET /v1/models)
            _send_json(transport, {"object": "list", "data": [{"id": "scripted"}]})
        else:
            asyncio.ensure_future(self._stream(transport, arrived, int(body.get("max_tokens", 16)),
                                               str(body.get("prompt", ""))))

    async def _stream(self, transport: _Connection, arrived: float, n_tokens: int, prompt: str) -> None:
        if self.first_arrival is None:
            self.first_arrival = arrived
        sent: list[float] = []
        self.requests[prompt[:KEY_CHARS]] = {"arrived": arrived, "sent": sent}
        transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        token = _framed(self.TOKEN)
        for i in range(n_tokens):
            due = arrived + self.ttft + i * self.itl
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            if transport.is_closing():
                return
            sent.append(time.perf_counter())  # before the write: a woken reader may run before this process again
            transport.write(token)
        self.last_write = time.perf_counter()
        self.tokens += n_tokens
        prompt_tokens = max(1, len(prompt) // 4)
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": n_tokens, "total_tokens": prompt_tokens + n_tokens}
        transport.write(_framed(b"data: " + json.dumps({"choices": [], "usage": usage}).encode() + b"\n\n")
                        + _framed(b"data: [DONE]\n\n") + b"0\r\n\r\n")


class _Connection:
    """One keep-alive connection: splits the byte stream into requests, each stamped with the kernel's receive time
    of its last bytes (``SO_TIMESTAMPNS``), so when this process gets the CPU does not move the schedule."""

    def __init__(self, server: ScriptedServer, sock: socket.socket) -> None:
        self.server, self.sock = server, sock
        self.buffer = b""
        self.closed = False
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        asyncio.get_running_loop().add_reader(sock, self._readable)

    def write(self, data: bytes) -> None:
        if not self.closed:
            self.sock.sendall(data)  # a blocking socket: replies are small and the client reads them at once

    def is_closing(self) -> bool:
        return self.closed

    def _readable(self) -> None:
        try:
            data, ancillary, _, _ = self.sock.recvmsg(1 << 16, socket.CMSG_SPACE(16))
        except OSError:
            data, ancillary = b"", []
        if not data:
            self.closed = True
            asyncio.get_running_loop().remove_reader(self.sock)
            self.sock.close()
            return
        arrived = _arrival(ancillary)
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            lines = self.buffer[:end].decode().split("\r\n")
            length = next((int(v) for k, _, v in (line.partition(":") for line in lines[1:])
                           if k.lower() == "content-length"), 0)
            if len(self.buffer) < end + 4 + length:
                return
            body = json.loads(self.buffer[end + 4:end + 4 + length]) if length else {}
            self.buffer = self.buffer[end + 4 + length:]
            self.server.answer(self, lines[0], body, arrived)


def _arrival(ancillary: list[tuple[int, int, bytes]]) -> float:
    """The kernel's receive time (wall clock) as a ``perf_counter`` time; now, if the kernel gave none."""
    perf, wall = time.perf_counter_ns(), time.time_ns()
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= 16:
            seconds, nanoseconds = struct.unpack("qq", data[:16])
            return (perf - (wall - (seconds * 1_000_000_000 + nanoseconds))) / 1e9
    return perf / 1e9


def _send_json(transport: _Connection, body: dict) -> None:
    payload = json.dumps(body).encode()
    transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                    + str(len(payload)).encode() + b"\r\n\r\n" + payload)


def _framed(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def _serve(port_queue: multiprocessing.Queue, ttft: float, itl: float) -> None:
    async def main() -> None:
        scripted = ScriptedServer(ttft, itl)
        listener = socket.create_server(("127.0.0.1", 0), backlog=512)
        listener.setblocking(False)
        asyncio.get_running_loop().add_reader(listener, lambda: _Connection(scripted, listener.accept()[0]))
        port_queue.put(listener.getsockname()[1])
        await asyncio.Event().wait()
    with asyncio.Runner(loop_factory=lambda: asyncio.SelectorEventLoop(selectors.SelectSelector())) as runner:
        runner.run(main())


def _maider_client(port: int, prompts: list[Prompt], concurrency: int) -> tuple[list[RequestOutcome], float]:
    run = run_sweep(Target(f"http://127.0.0.1:{port}", "scripted"), prompts, [Level(concurrency)],
                    ignore_eos=True, warmup=0)[0]
    return run.outcomes, run.duration


_VLLM_DRIVER = r'''
import asyncio, json, sys, time
import aiohttp
from vllm.benchmarks.lib.endpoint_request_func import RequestFuncInput, async_request_openai_completions
args = json.loads(sys.stdin.read())
async def main():
    # as vllm/benchmarks/serve.py: one session, a connector limited to max_concurrency, a semaphore, gather
    limit = args["concurrency"]
    connector = aiohttp.TCPConnector(limit=limit, limit_per_host=limit, ttl_dns_cache=300, use_dns_cache=True,
                                     keepalive_timeout=60, enable_cleanup_closed=True, force_close=False, ssl=False)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=600)) as session:
        semaphore = asyncio.Semaphore(limit)
        async def limited(prompt, output_len):
            async with semaphore:
                return await async_request_openai_completions(RequestFuncInput(
                    prompt=prompt, api_url=args["url"], prompt_len=0, output_len=output_len, model="scripted",
                    ignore_eos=True), session)
        start = time.perf_counter()
        outputs = await asyncio.gather(*(limited(p, n) for p, n in args["prompts"]))
        duration = time.perf_counter() - start
    print(json.dumps({"duration": duration, "outcomes": [
        [o.success, o.prompt_len, o.output_tokens, o.ttft, o.latency, o.itl, 0.0, o.error] for o in outputs]}))
asyncio.run(main())
'''


def _vllm_client(port: int, prompts: list[Prompt], concurrency: int) -> tuple[list[RequestOutcome], float]:
    args = {"url": f"http://127.0.0.1:{port}/v1/completions", "concurrency": concurrency,
            "prompts": [[p.text, p.output_len] for p in prompts]}
    done = subprocess.run([str(VLLM_PYTHON), "-c", _VLLM_DRIVER], input=json.dumps(args), capture_output=True,
                          text=True, timeout=600, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"vLLM's client failed: {done.stderr[-2000:]}")
    data = json.loads(done.stdout.strip().splitlines()[-1])
    outcomes = [RequestOutcome(bool(o[0]), int(o[1]), int(o[2] or 0), float(o[3]), float(o[4]), tuple(o[5]),
                               float(o[6]), str(o[7])) for o in data["outcomes"]]
    return outcomes, float(data["duration"])


def measure(client: str, concurrency: int, num_prompts: int, ttft: float, itl: float, output_len: int,
            seed: int) -> dict[str, float]:
    """One level against a fresh scripted server: the client's errors against the script and against the server."""
    queue: multiprocessing.Queue = multiprocessing.Queue()
    server = multiprocessing.Process(target=_serve, args=(queue, ttft, itl), daemon=True)
    server.start()
    try:
        port = queue.get(timeout=30)
        prompts = random_prompts(num_prompts, input_len=32, output_len=output_len, seed=seed)
        cpu_started = time.process_time()
        outcomes, duration = (_vllm_client if client == "vllm" else _maider_client)(port, prompts, concurrency)
        client_cpu = time.process_time() - cpu_started
        import httpx
        stats = httpx.get(f"http://127.0.0.1:{port}/stats", timeout=30).json()
    finally:
        server.terminate()
        server.join(5)
    result = summarize(outcomes, duration)
    served = [stats["requests"][p.text[:KEY_CHARS]] for p in prompts]
    server_ttft = [(r["sent"][0] - r["arrived"]) * 1000 for r in served]
    server_gaps = [(b - a) * 1000 for r in served for a, b in zip(r["sent"], r["sent"][1:])]
    own_ttft = [o.ttft * 1000 - s for o, s in zip(outcomes, server_ttft) if o.success]
    server_tput = stats["tokens"] / (stats["last_write"] - stats["first_arrival"])
    return {
        "completed": result["completed"],
        "ttft_err": result["mean_ttft_ms"] - ttft * 1000,
        "ttft_median_err": result["median_ttft_ms"] - ttft * 1000,
        "itl_err": result["mean_itl_ms"] - itl * 1000,
        "server_late": statistics.fmean(server_ttft) - ttft * 1000,
        "own_ttft": statistics.fmean(own_ttft),
        "own_itl": result["mean_itl_ms"] - statistics.fmean(server_gaps),
        "tput_err": (result["output_throughput"] / server_tput - 1) * 100,
        "client_cpu": (client_cpu / duration * 100) if client == "maider" else float("nan"),
    }


ROW = ("{client:7} {conc:>5} {completed:>5} {ttft_err:>+9.3f} {ttft_median_err:>+9.3f} {itl_err:>+8.3f} "
       "{tput_err:>+8.2f}% {server_late:>+9.3f} {own_ttft:>+9.3f} {own_itl:>+8.3f} {client_cpu:>6.0f}%  {load}")
HEAD = (f"{'client':7} {'conc':>5} {'done':>5} {'TTFT err':>9} {'(median)':>9} {'ITL err':>8} {'tput err':>9} "
        f"{'srv late':>9} {'own TTFT':>9} {'own ITL':>8} {'CPU':>7}  load")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ttft-ms", type=float, default=100.0)
    parser.add_argument("--itl-ms", type=float, default=20.0)
    parser.add_argument("--output-len", type=int, default=64)
    parser.add_argument("--levels", default="1:8,64:128", help="concurrency:requests,...")
    parser.add_argument("--repeat", type=int, default=3, help="measurements per level; the verdict takes medians")
    parser.add_argument("--vllm-client", action="store_true", help="also measure vLLM's own client (.venv-vllm)")
    args = parser.parse_args()
    began = time.perf_counter()
    ttft, itl = args.ttft_ms / 1000, args.itl_ms / 1000
    clients = ["maider"] + (["vllm"] if args.vllm_client else [])
    if args.vllm_client and not VLLM_PYTHON.exists():
        sys.exit(f"--vllm-client needs {VLLM_PYTHON} (scripts/real-vllm-env)")
    levels = [tuple(int(x) for x in level.split(":")) for level in args.levels.split(",")]
    print(f"scripted server: TTFT {args.ttft_ms:.1f} ms, ITL {args.itl_ms:.1f} ms, {args.output_len} tokens/reply; "
          f"{args.repeat} runs per level; errors in ms unless marked")
    print(HEAD)
    results: dict[tuple[str, int], list[dict[str, float]]] = {}
    for index in range(args.repeat):
        for concurrency, requests in levels:
            for client in clients:
                r = measure(client, concurrency, requests, ttft, itl, args.output_len, seed=index)
                results.setdefault((client, concurrency), []).append(r)
                print(ROW.format(client=client, conc=concurrency, load=f"{os.getloadavg()[0]:.1f}", **r))
    print(f"\nmedian [range] over {args.repeat} runs{'':22}goal")
    for (client, concurrency), runs in results.items():
        for name, label, goal, unit in (("own_ttft", "TTFT mean, client's error", GOAL_MS, "ms"),
                                        ("own_itl", "ITL mean, client's error", GOAL_MS, "ms"),
                                        ("tput_err", "output throughput error", GOAL_TPUT_PCT, "%"),
                                        ("ttft_err", "TTFT mean vs the script", None, "ms"),
                                        ("itl_err", "ITL mean vs the script", None, "ms")):
            values = [r[name] for r in runs]
            middle = statistics.median(values)
            verdict = ("" if goal is None else
                       f"<= {goal:g} {unit:2} {'within goal' if abs(middle) <= goal else 'OVER GOAL'}")
            print(f"{client:7} c={concurrency:<3} {label:26} {middle:+8.3f} [{min(values):+8.3f} .. {max(values):+8.3f}]"
                  f" {unit:2}  {verdict}")
    print("client's error = the client's figure minus what the server did, request by request (the server stamps each "
          "request\nat the kernel's receive time and each chunk just before writing it); vs the script = minus the "
          "scripted value,\nso the server's own lateness (srv late) is in it; throughput: client output tok/s vs the "
          f"server's count over its window.\nLoad average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; "
          f"{time.perf_counter() - began:.0f} s.")


if __name__ == "__main__":
    main()
