"""How exactly does maider's benchmark client measure? Run it against a scripted server with known timing.

The scripted server (plain asyncio in its own process, so it never shares an event loop with the client) answers
every streamed completion with its first token TTFT after the request arrived and one token every ITL after that,
on an absolute schedule (no drift), and records when it really wrote each chunk. The client's figures are compared
with the script and with what the server saw:

    .venv/bin/python bench/benchmark_accuracy.py [--ttft-ms 100] [--itl-ms 20] [--output-len 64]

Goal: |error| <= 1 ms on the TTFT and ITL means, <= 2 % on output throughput, at concurrency 1 and 64.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.benchmark.client import Level, Target, run_sweep  # noqa: E402
from app.benchmark.prompts import random_prompts  # noqa: E402
from app.domain.benchmark_stats import summarize  # noqa: E402


class ScriptedServer:
    """HTTP/1.1 keep-alive, chunked SSE, vLLM's completion framing and usage chunk."""

    def __init__(self, ttft: float, itl: float) -> None:
        self.ttft, self.itl = ttft, itl
        self.lateness: list[float] = []  # actual write time - scheduled time, per chunk
        self.first_arrival: float | None = None
        self.last_write = 0.0
        self.tokens = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                arrived = time.perf_counter()
                lines = head.decode().split("\r\n")
                length = next((int(v) for k, _, v in (l.partition(":") for l in lines[1:])
                               if k.lower() == "content-length"), 0)
                body = json.loads(await reader.readexactly(length)) if length else {}
                if lines[0].startswith("GET /stats"):
                    await self._send_stats(writer)
                    continue
                if lines[0].startswith("GET "):  # the client opening its connections (GET /v1/models)
                    await self._send_json(writer, {"object": "list", "data": [{"id": "scripted"}]})
                    continue
                await self._stream(writer, arrived, int(body.get("max_tokens", 16)), len(body.get("prompt", "")))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _send_stats(self, writer: asyncio.StreamWriter) -> None:
        await self._send_json(writer, {"lateness": self.lateness, "first_arrival": self.first_arrival,
                                       "last_write": self.last_write, "tokens": self.tokens})

    @staticmethod
    async def _send_json(writer: asyncio.StreamWriter, body: dict) -> None:
        payload = json.dumps(body).encode()
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                     + str(len(payload)).encode() + b"\r\n\r\n" + payload)
        await writer.drain()

    async def _stream(self, writer: asyncio.StreamWriter, arrived: float, n_tokens: int, prompt_chars: int) -> None:
        if self.first_arrival is None:
            self.first_arrival = arrived
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        for i in range(n_tokens):
            due = arrived + self.ttft + i * self.itl
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            finish = "length" if i == n_tokens - 1 else None
            self._chunk(writer, {"choices": [{"index": 0, "text": " the", "finish_reason": finish}]})
            await writer.drain()
            now = time.perf_counter()
            self.lateness.append(now - due)
            self.last_write = now
        self.tokens += n_tokens
        usage = {"prompt_tokens": max(1, prompt_chars // 4), "completion_tokens": n_tokens,
                 "total_tokens": max(1, prompt_chars // 4) + n_tokens}
        self._chunk(writer, {"choices": [], "usage": usage})
        done = b"data: [DONE]\n\n"
        writer.write(f"{len(done):x}\r\n".encode() + done + b"\r\n0\r\n\r\n")
        await writer.drain()

    @staticmethod
    def _chunk(writer: asyncio.StreamWriter, message: dict) -> None:
        data = b"data: " + json.dumps(message).encode() + b"\n\n"
        writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")


def _serve(port_queue: multiprocessing.Queue, ttft: float, itl: float) -> None:
    async def main() -> None:
        scripted = ScriptedServer(ttft, itl)
        server = await asyncio.start_server(scripted.handle, "127.0.0.1", 0, backlog=512)
        port_queue.put(server.sockets[0].getsockname()[1])
        await server.serve_forever()
    asyncio.run(main())


def _server_stats(port: int) -> dict:
    import httpx
    return httpx.get(f"http://127.0.0.1:{port}/stats", timeout=30).json()


def measure(concurrency: int, num_prompts: int, ttft: float, itl: float, output_len: int) -> dict[str, float]:
    queue: multiprocessing.Queue = multiprocessing.Queue()
    server = multiprocessing.Process(target=_serve, args=(queue, ttft, itl), daemon=True)
    server.start()
    try:
        port = queue.get(timeout=30)
        prompts = random_prompts(num_prompts, input_len=32, output_len=output_len)
        cpu_started = time.process_time()
        run = run_sweep(Target(f"http://127.0.0.1:{port}", "scripted"), prompts, [Level(concurrency)],
                        ignore_eos=True, warmup=0)[0]
        client_cpu = time.process_time() - cpu_started
        stats = _server_stats(port)
    finally:
        server.terminate()
        server.join(5)
    result = summarize(run.outcomes, run.duration)
    server_window = stats["last_write"] - stats["first_arrival"]
    return {
        "concurrency": concurrency, "completed": result["completed"],
        "ttft_err_ms": result["mean_ttft_ms"] - ttft * 1000,
        "ttft_median_err_ms": result["median_ttft_ms"] - ttft * 1000,
        "itl_err_ms": result["mean_itl_ms"] - itl * 1000,
        "tpot_err_ms": result["mean_tpot_ms"] - itl * 1000,
        "server_late_ms": statistics.fmean(stats["lateness"]) * 1000,
        "tput_client": result["output_throughput"],
        "tput_server": stats["tokens"] / server_window,
        "tput_err_pct": (result["output_throughput"] / (stats["tokens"] / server_window) - 1) * 100,
        "client_cpu_pct": client_cpu / run.duration * 100,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ttft-ms", type=float, default=100.0)
    parser.add_argument("--itl-ms", type=float, default=20.0)
    parser.add_argument("--output-len", type=int, default=64)
    parser.add_argument("--levels", default="1:16,64:256", help="concurrency:requests,...")
    args = parser.parse_args()
    ttft, itl = args.ttft_ms / 1000, args.itl_ms / 1000
    print(f"scripted server: TTFT {args.ttft_ms:.1f} ms, ITL {args.itl_ms:.1f} ms, {args.output_len} tokens/reply")
    print(f"{'conc':>5} {'done':>5} {'TTFT err':>9} {'(median)':>9} {'ITL err':>8} {'TPOT err':>9} {'server late':>12} "
          f"{'client tok/s':>13} {'server tok/s':>13} {'tput err':>9} {'client CPU':>10}  verdict")
    for level in args.levels.split(","):
        concurrency, requests = (int(x) for x in level.split(":"))
        r = measure(concurrency, requests, ttft, itl, args.output_len)
        ok = abs(r["ttft_err_ms"]) <= 1 and abs(r["itl_err_ms"]) <= 1 and abs(r["tput_err_pct"]) <= 2
        print(f"{r['concurrency']:>5} {r['completed']:>5} {r['ttft_err_ms']:>+8.3f}m {r['ttft_median_err_ms']:>+8.3f}m "
              f"{r['itl_err_ms']:>+7.3f}m "
              f"{r['tpot_err_ms']:>+8.3f}m {r['server_late_ms']:>+11.3f}m {r['tput_client']:>13.1f} "
              f"{r['tput_server']:>13.1f} {r['tput_err_pct']:>+8.2f}% {r['client_cpu_pct']:>9.0f}%  "
              f"{'within goal' if ok else 'OVER GOAL'}")
    print("err = client mean - scripted value (ms); tput err = client output tok/s vs the server's own count over "
          "its window; server late = how late the server itself wrote chunks (part of the client's error); "
          f"machine load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
