"""A stand-in for vLLM's OpenAI-compatible server: same endpoints, SSE framing, auth rule and /metrics names.

Served by waitress, which flushes each write (``send_bytes`` is 1 by default since 3.0), so each SSE chunk leaves
at once and token gaps survive the trip. Timing is scriptable (time to first token, gap between tokens, reply
length) and the counters really count what was served, so maider's health poller, idle watchdog and benchmark read
honest numbers.
"""
from __future__ import annotations

import hmac
import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import waitress
from flask import Flask, Response, jsonify, request
from waitress import wasyncore

VLLM_VERSION = "0.11.0"  # what the demo reports on GET /version, like the image maider pins
REPLY_WORDS = ("Sure", ",", " here", " is", " a", " small", " change", ":", " the", " function", " now",
               " returns", " early", " when", " the", " list", " is", " empty", ".", "\n")
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
E2E_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0)
ITL_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)


@dataclass(frozen=True)
class FakeVllmConfig:
    model_id: str  # what vLLM was started with (``root`` in /v1/models)
    served_name: str  # --served-model-name: the only model name requests may use
    max_model_len: int = 32768
    api_key: str = ""  # --api-key; empty = no auth, as vLLM without the flag
    ttft_s: float = 0.05  # time to first token
    itl_s: float = 0.02  # gap between tokens
    tokens_per_reply: int = 20  # reply length when max_tokens does not cut it shorter
    prefill_tokens_per_s: float = 0.0  # > 0: TTFT grows by prompt tokens / this (prefill); 0 = fixed TTFT
    batch_slowdown: float = 0.0  # each other running request stretches TTFT and ITL by this fraction

    def ttft_for(self, prompt_tokens: int, running: int) -> float:
        """Time to first token: queueing-free prefill, slower while other requests share the GPU."""
        prefill = prompt_tokens / self.prefill_tokens_per_s if self.prefill_tokens_per_s > 0 else 0.0
        return (self.ttft_s + prefill) * self._load_factor(running)

    def itl_for(self, running: int) -> float:
        """Gap between tokens: a bigger decode batch makes every step a little slower, as on a real GPU."""
        return self.itl_s * self._load_factor(running)

    def _load_factor(self, running: int) -> float:
        return 1.0 + self.batch_slowdown * max(0, running - 1)


# Decode speed relative to an RTX 4000 Ada: token steps are bound by memory bandwidth (Quadro RTX 6000: 672 GB/s
# against 360 GB/s); tensor parallelism splits each step across GPUs, less than linearly.
_DECODE_SPEED = {"Quadro RTX 6000": 1.6, "NVIDIA RTX 4000 Ada Generation": 1.0}
TP_EFFICIENCY = 0.7  # speed-up exponent for N GPUs: N ** 0.7


def gpu_timing(gpu_name: str, gpus: int, itl_s: float, prefill_tokens_per_s: float,
               batch_slowdown: float) -> dict[str, float]:
    """FakeVllmConfig timing for a plan's GPUs, so demo benchmarks differ between plans as real ones do."""
    speed = _DECODE_SPEED.get(gpu_name, 1.0) * max(1, gpus) ** TP_EFFICIENCY
    return {"itl_s": itl_s / speed, "prefill_tokens_per_s": prefill_tokens_per_s * max(1, gpus) ** TP_EFFICIENCY,
            "batch_slowdown": batch_slowdown}


@dataclass
class _Histogram:
    buckets: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def observe(self, value: float) -> None:
        if not self.counts:
            self.counts = [0] * len(self.buckets)
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1
        self.total += value
        self.count += 1


class VllmCounters:
    """The numbers /metrics reports; updated by every request."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = 0
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.success: dict[str, int] = {"stop": 0, "length": 0, "abort": 0}
        self.ttft = _Histogram(TTFT_BUCKETS)
        self.e2e = _Histogram(E2E_BUCKETS)
        self.itl = _Histogram(ITL_BUCKETS)

    def render(self, served_name: str, max_model_len: int) -> str:
        labels = f'model_name="{served_name}",engine="0"'
        with self.lock:
            kv_usage = min(1.0, self.running * 0.05)
            lines = [
                "# HELP vllm:num_requests_running Number of requests in model execution batches.",
                "# TYPE vllm:num_requests_running gauge", f"vllm:num_requests_running{{{labels}}} {self.running}.0",
                "# TYPE vllm:num_requests_waiting gauge", f"vllm:num_requests_waiting{{{labels}}} 0.0",
                "# TYPE vllm:kv_cache_usage_perc gauge", f"vllm:kv_cache_usage_perc{{{labels}}} {kv_usage}",
                "# TYPE vllm:num_preemptions_total counter", f"vllm:num_preemptions_total{{{labels}}} 0.0",
                "# TYPE vllm:prompt_tokens_total counter",
                f"vllm:prompt_tokens_total{{{labels}}} {float(self.prompt_tokens)}",
                "# TYPE vllm:generation_tokens_total counter",
                f"vllm:generation_tokens_total{{{labels}}} {float(self.generation_tokens)}",
                "# TYPE vllm:request_success_total counter",
            ]
            lines += [f'vllm:request_success_total{{finished_reason="{reason}",{labels}}} {float(n)}'
                      for reason, n in self.success.items()]
            for name, hist in (("time_to_first_token_seconds", self.ttft),
                               ("e2e_request_latency_seconds", self.e2e),
                               ("inter_token_latency_seconds", self.itl)):
                lines.append(f"# TYPE vllm:{name} histogram")
                counts = hist.counts or [0] * len(hist.buckets)
                for bound, n in zip(hist.buckets, counts, strict=True):
                    lines.append(f'vllm:{name}_bucket{{le="{bound}",{labels}}} {float(n)}')
                lines.append(f'vllm:{name}_bucket{{le="+Inf",{labels}}} {float(hist.count)}')
                lines.append(f"vllm:{name}_count{{{labels}}} {float(hist.count)}")
                lines.append(f"vllm:{name}_sum{{{labels}}} {hist.total}")
            lines.append(f'vllm:cache_config_info{{max_model_len="{max_model_len}",{labels}}} 1.0')
        return "\n".join(lines) + "\n"


def _error(message: str, kind: str, status: int) -> Response:
    response = jsonify({"error": {"message": message, "type": kind, "param": None, "code": status}})
    response.status_code = status
    return response


def _count_prompt_tokens(body: dict) -> int:
    """About four characters per token, like a real tokenizer on English/code."""
    if "messages" in body:
        text = "".join(str(m.get("content", "")) for m in body.get("messages") or [] if isinstance(m, dict))
    else:
        prompt = body.get("prompt", "")
        text = "".join(map(str, prompt)) if isinstance(prompt, list) else str(prompt)
    return max(1, len(text) // 4)


def create_fake_vllm_app(config: FakeVllmConfig, counters: VllmCounters) -> Flask:
    """The Flask app with vLLM's endpoints."""
    app = Flask("fake_vllm")
    created = int(time.time())

    @app.before_request
    def require_api_key() -> Response | None:
        if not request.path.startswith("/v1/") or not config.api_key:
            return None
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer ") and hmac.compare_digest(header[7:].encode(), config.api_key.encode()):
            return None
        return jsonify({"error": "Unauthorized"}), 401  # vLLM's exact body for a wrong or missing key

    @app.get("/health")
    def health() -> Response:
        return Response(b"", 200)

    @app.get("/version")
    def version() -> Response:
        return jsonify({"version": VLLM_VERSION})

    @app.get("/v1/models")
    def models() -> Response:
        return jsonify({"object": "list", "data": [{
            "id": config.served_name, "object": "model", "created": created, "owned_by": "vllm",
            "root": config.model_id, "parent": None, "max_model_len": config.max_model_len,
            "permission": [],
        }]})

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(counters.render(config.served_name, config.max_model_len),
                        mimetype="text/plain; version=0.0.4")

    @app.post("/v1/chat/completions")
    def chat_completions() -> Response:
        return _complete(chat=True)

    @app.post("/v1/completions")
    def completions() -> Response:
        return _complete(chat=False)

    def _complete(chat: bool) -> Response:
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            return _error("request body must be a JSON object", "BadRequestError", 400)
        if body.get("model") != config.served_name:
            return _error(f"The model `{body.get('model')}` does not exist.", "NotFoundError", 404)
        if chat and not isinstance(body.get("messages"), list):
            return _error("'messages' is required", "BadRequestError", 400)
        stream = bool(body.get("stream"))
        if body.get("stream_options") is not None and not stream:
            return _error("Stream options can only be defined when `stream=True`.", "BadRequestError", 400)
        prompt_tokens = _count_prompt_tokens(body)
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
        if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
            return _error("max_tokens must be at least 1", "BadRequestError", 400)
        if prompt_tokens + (max_tokens or 0) > config.max_model_len:
            return _error(f"This model's maximum context length is {config.max_model_len} tokens. However, you "
                          f"requested {prompt_tokens + (max_tokens or 0)} tokens ({prompt_tokens} in the messages, "
                          f"{max_tokens or 0} in the completion). Please reduce the length of the messages or "
                          "completion.", "BadRequestError", 400)
        natural = config.tokens_per_reply
        if max_tokens is not None and (body.get("ignore_eos") or max_tokens < natural):
            n_tokens, finish = max_tokens, "length"
        else:
            n_tokens, finish = natural, "stop"
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        reply = _Reply(config, counters, chat, prompt_tokens, n_tokens, finish)
        if stream:
            return Response(reply.stream(include_usage), mimetype="text/event-stream",
                            headers={"Cache-Control": "no-cache"})
        return jsonify(reply.whole())

    return app


class _Reply:
    """One completion: produces tokens on the configured clock and records itself in the counters."""

    def __init__(self, config: FakeVllmConfig, counters: VllmCounters, chat: bool, prompt_tokens: int,
                 n_tokens: int, finish: str) -> None:
        self.config, self.counters, self.chat = config, counters, chat
        self.prompt_tokens, self.n_tokens, self.finish = prompt_tokens, n_tokens, finish
        self.id = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
        self.created = int(time.time())

    def _usage(self) -> dict:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.n_tokens,
                "total_tokens": self.prompt_tokens + self.n_tokens}

    def _tokens(self) -> Iterator[str]:
        for i in range(self.n_tokens):
            yield REPLY_WORDS[i % len(REPLY_WORDS)]

    def _begin(self) -> float:
        with self.counters.lock:
            self.counters.running += 1
        return time.perf_counter()

    def _end(self, started: float, first_token_at: float | None, finished: bool) -> None:
        now = time.perf_counter()
        with self.counters.lock:
            self.counters.running -= 1
            self.counters.prompt_tokens += self.prompt_tokens
            if finished:
                self.counters.generation_tokens += self.n_tokens
                self.counters.success[self.finish] += 1
                if first_token_at is not None:
                    self.counters.ttft.observe(first_token_at - started)
                    if self.n_tokens > 1:
                        self.counters.itl.observe((now - first_token_at) / (self.n_tokens - 1))
                self.counters.e2e.observe(now - started)
            else:
                self.counters.success["abort"] += 1

    def whole(self) -> dict:
        started = self._begin()
        ttft = self.config.ttft_for(self.prompt_tokens, self.counters.running)
        time.sleep(ttft + self.config.itl_for(self.counters.running) * max(0, self.n_tokens - 1))
        text = "".join(self._tokens())
        self._end(started, started + ttft, finished=True)
        if self.chat:
            choice = {"index": 0, "message": {"role": "assistant", "content": text, "tool_calls": []},
                      "logprobs": None, "finish_reason": self.finish, "stop_reason": None}
            kind = "chat.completion"
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": self.finish, "stop_reason": None}
            kind = "text_completion"
        return {"id": self.id, "object": kind, "created": self.created, "model": self.config.served_name,
                "choices": [choice], "usage": self._usage()}

    def _chunk(self, choices: list[dict], usage: dict | None = None) -> bytes:
        chunk: dict = {"id": self.id, "object": "chat.completion.chunk" if self.chat else "text_completion",
                       "created": self.created, "model": self.config.served_name, "choices": choices}
        if usage is not None:
            chunk["usage"] = usage
        return b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"

    def _token_choice(self, text: str, finish: str | None) -> dict:
        if self.chat:
            return {"index": 0, "delta": {"content": text}, "logprobs": None, "finish_reason": finish}
        return {"index": 0, "text": text, "logprobs": None, "finish_reason": finish, "stop_reason": None}

    def stream(self, include_usage: bool) -> Iterator[bytes]:
        """role chunk, token chunks (the last carries finish_reason), usage chunk if asked, then [DONE]."""
        started = self._begin()
        first_token_at: float | None = None
        finished = False
        try:
            time.sleep(self.config.ttft_for(self.prompt_tokens, self.counters.running))
            first_token_at = time.perf_counter()
            if self.chat:
                yield self._chunk([{"index": 0, "delta": {"role": "assistant", "content": ""},
                                    "logprobs": None, "finish_reason": None}])
            for i, token in enumerate(self._tokens()):
                if i:
                    time.sleep(self.config.itl_for(self.counters.running))
                last = i == self.n_tokens - 1
                yield self._chunk([self._token_choice(token, self.finish if last else None)])
            if include_usage:
                yield self._chunk([], self._usage())
            yield b"data: [DONE]\n\n"
            finished = True
        finally:
            self._end(started, first_token_at, finished)


class LoopbackHttpServer:
    """A WSGI app on 127.0.0.1 (port 0 = any free port) in a background thread, stoppable without leaks."""

    def __init__(self, wsgi_app: object, port: int = 0, threads: int = 8) -> None:
        # waitress 3 flushes every write at once (send_bytes defaults to 1 and passing it is deprecated).
        self._server = waitress.create_server(wsgi_app, host="127.0.0.1", port=port, threads=threads,
                                              channel_timeout=30, clear_untrusted_proxy_headers=True, ident="")
        self.port: int = int(self._server.effective_port)  # waitress reports it as text
        self._closing = False
        self._quiet_trigger_after_close()
        self._thread = threading.Thread(target=self._server.run, name=f"sim-http-{self.port}", daemon=True)
        self._thread.start()

    def _quiet_trigger_after_close(self) -> None:
        """A worker still streaming when ``stop`` closed the loop wakes a trigger whose pipe is gone (EBADF in that
        thread); there is nothing left to wake then, so that one error is dropped."""
        trigger = self._server.trigger
        pull = trigger._physical_pull

        def pull_unless_closed() -> None:
            try:
                pull()
            except OSError:
                if not self._closing:
                    raise

        trigger._physical_pull = pull_unless_closed

    def stop(self) -> None:
        """Close the listener and every open connection, then stop the worker threads."""
        server = self._server
        if not self._thread.is_alive():
            return
        self._closing = True
        server.trigger.pull_trigger(lambda: wasyncore.close_all(server._map))
        self._thread.join(5)
        server.task_dispatcher.shutdown(cancel_pending=True, timeout=5)


class FakeVllmServer:
    """The fake vLLM, listening on a free loopback port."""

    STREAM_THREADS = 72  # one waitress thread per open stream: a benchmark at concurrency 64 must not queue here

    def __init__(self, config: FakeVllmConfig, counters: VllmCounters | None = None, port: int = 0) -> None:
        self.config = config
        self.counters = counters or VllmCounters()
        self._http = LoopbackHttpServer(create_fake_vllm_app(config, self.counters), port=port,
                                        threads=self.STREAM_THREADS)
        self.port = self._http.port

    def stop(self) -> None:
        self._http.stop()
