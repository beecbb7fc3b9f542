"""Run the GPU checks on a ready session: nvidia-smi over the shared SSH connection, requests through the tunnel.

``check`` takes seconds (GPUs visible, memory balanced across tensor-parallel ranks, a 1-token completion);
``validate_perf`` puts load on the GPU for about a minute (utilization while busy, memory headroom, the vLLM log,
TTFT at three prompt lengths). Verdicts come from ``app.domain.gpu_checks``. Both run in a thread of the server
(``app.engine.check_runner``) and report each step and each verdict through a ``CheckControl`` as they go.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from app.benchmark.client import Cancelled, Level, RunControl, Target, run_sweep
from app.benchmark.prompts import random_prompts
from app.domain import gpu_checks as verdicts
from app.domain import vm_contract as vm
from app.domain.benchmark_stats import summarize
from app.engine.identity import SessionIdentity
from app.engine.monitor import parse_gpu_rows
from app.engine.runtime import EngineRuntime
from app.engine.steps import remote_target
from app.models import Session
from app.redaction import redact
from app.remote import RemoteError

SSH_TIMEOUT_S = 20
COMPLETION_TIMEOUT_S = 60.0
PERF_PROMPT_LENGTHS = (128, 1024, 4096)
PERF_REQUESTS = 8
PERF_CONCURRENCY = 4
PERF_OUTPUT_LEN = 32
SAMPLE_EVERY_S = 1.0


class CheckCancelled(Exception):
    """The user cancelled the checks; the verdicts given so far stay."""


@dataclass
class CheckControl:
    """Shared with the thread that records a check run: a cancel flag, and callbacks for the step and each verdict."""

    cancel: threading.Event = field(default_factory=threading.Event)
    on_step: Callable[[str], None] = lambda step: None
    on_result: Callable[[verdicts.CheckResult], None] = lambda result: None

    def step(self, text: str) -> None:
        """Say what comes next; stop here when a cancel was asked."""
        if self.cancel.is_set():
            raise CheckCancelled
        self.on_step(text)

    def result(self, result: verdicts.CheckResult) -> verdicts.CheckResult:
        self.on_result(result)
        return result


CHECK_STEPS = 3  # verdicts check() gives when every GPU answers
PERF_STEPS = 4


def _gpu_rows(engine: EngineRuntime, session: Session, identity: SessionIdentity) -> tuple[list[dict], str]:
    try:
        result = engine.remote(*remote_target(session, identity)).run(vm.CMD_GPU_QUERY, timeout=SSH_TIMEOUT_S)
    except RemoteError as exc:
        return [], f"SSH failed ({type(exc).__name__})"
    if result.exit_code != 0:
        return [], (result.stdout + result.stderr).strip() or f"exit status {result.exit_code}"
    return parse_gpu_rows(result.stdout), ""


def _target(session: Session, identity: SessionIdentity) -> Target:
    return Target(f"http://127.0.0.1:{session.api_port}", session.served_name, identity.api_key)


def _completion(target: Target) -> verdicts.CheckResult:
    body = {"model": target.model, "prompt": "Say OK.", "max_tokens": 1, "temperature": 0.0}
    try:
        response = httpx.post(target.url, json=body, headers=target.headers(), timeout=COMPLETION_TIMEOUT_S,
                              trust_env=False)
    except httpx.HTTPError as exc:
        return verdicts.completion_returns(None, None, f"{type(exc).__name__}: {exc}")
    try:
        tokens = int((response.json().get("usage") or {}).get("completion_tokens") or 0)
    except (ValueError, AttributeError):
        tokens = 0
    return verdicts.completion_returns(response.status_code, tokens, redact(response.text[:200])
                                       if response.status_code != 200 else "")


def _tensor_parallel(session: Session) -> int:
    return int((session.vllm_config or {}).get("tensor_parallel_size") or session.gpus or 1)


def check(engine: EngineRuntime, session: Session, identity: SessionIdentity,
          control: CheckControl | None = None) -> list[verdicts.CheckResult]:
    """The quick check: every GPU visible, ranks balanced, one completion returns."""
    control = control or CheckControl()
    control.step("reading nvidia-smi")
    rows, error = _gpu_rows(engine, session, identity)
    results = [control.result(verdicts.gpus_visible(session.gpus, rows, error))]
    if rows:
        results.append(control.result(verdicts.memory_balanced(rows, _tensor_parallel(session))))
    control.step("sending one completion")
    results.append(control.result(_completion(_target(session, identity))))
    return results


def _sampling(read: Callable[[], tuple[list[dict], str]], stop: threading.Event, into: list[int]) -> None:
    while not stop.wait(SAMPLE_EVERY_S):
        rows, _ = read()
        into.extend(int(r["utilization"]) for r in rows)


def validate_perf(engine: EngineRuntime, session: Session, identity: SessionIdentity,
                  control: CheckControl | None = None) -> list[verdicts.CheckResult]:
    """Load the GPU at three prompt lengths while sampling nvidia-smi, then judge what was seen."""
    control = control or CheckControl()
    target = _target(session, identity)
    context = session.max_model_len or max(PERF_PROMPT_LENGTHS) * 2
    lengths = sorted({min(n, context - PERF_OUTPUT_LEN - 16) for n in PERF_PROMPT_LENGTHS if n > 0})
    read = lambda: _gpu_rows(engine, session, identity)  # noqa: E731
    busy: list[int] = []
    stop = threading.Event()
    sampler = threading.Thread(target=_sampling, args=(read, stop, busy), name=f"maider-perf-{session.uid[:8]}",
                               daemon=True)
    sampler.start()
    ttft: dict[int, float] = {}
    failures = 0
    load = RunControl(cancel=control.cancel)  # a cancel cuts the requests in flight
    try:
        for number, length in enumerate(lengths, 1):
            control.step(f"load at a {length}-token prompt ({number} of {len(lengths)})")
            prompts = random_prompts(PERF_REQUESTS, length, PERF_OUTPUT_LEN, seed=length)
            run = run_sweep(target, prompts, [Level(PERF_CONCURRENCY)], ignore_eos=True, control=load,
                            warmup=1)[0]
            summary = summarize(run.outcomes, run.duration)
            ttft[length] = float(summary["median_ttft_ms"])
            failures += int(summary["failed"])
    except (Cancelled, CheckCancelled):
        raise CheckCancelled from None  # the sampler stops below
    except Exception as exc:  # a failed warm-up or a dropped tunnel is the verdict, not a crash
        failures += 1
        ttft.setdefault(lengths[0], 0.0)
        error = f"{type(exc).__name__}: {exc}"
    else:
        error = ""
    finally:
        stop.set()
        sampler.join(SSH_TIMEOUT_S)
    control.step("reading nvidia-smi and the vLLM log")
    rows, _ = read()
    try:
        log_text = engine.remote(*remote_target(session, identity)).run(vm.CMD_VLLM_LOGS,
                                                                        timeout=SSH_TIMEOUT_S).stdout
    except RemoteError:
        log_text = ""
    latency = verdicts.latency_by_prompt_length(ttft, failures)
    if error:
        latency = verdicts.CheckResult("latency", False, redact(error)[:300], latency.fix)
    return [control.result(r) for r in (verdicts.utilization_under_load(busy), verdicts.memory_headroom(rows),
                                          verdicts.log_warnings(log_text), latency)]
