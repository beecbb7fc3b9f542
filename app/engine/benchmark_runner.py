"""Runs one benchmark in a background thread of the server and writes its results, level by level.

The client's clock must not wait on SQLite, so live progress lives in memory (``ActiveRuns``) and the database is
written only when a level ends and when the run ends. The API key travels in memory only, never into a row.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import httpx
from flask import Flask

from app.benchmark import on_vm
from app.benchmark.client import Cancelled, Level, LevelRun, RunControl, Target, WarmupFailed, run_sweep
from app.benchmark.prompts import Prompt
from app.benchmark_models import BenchmarkLevel, BenchmarkRun, RunState
from app.domain.benchmark_stats import per_request_arrays, summarize
from app.extensions import db
from app.models import utcnow
from app.redaction import redact

log = logging.getLogger(__name__)
EXTENSION_KEY = "maider.benchmarks"
VERSION_TIMEOUT_S = 5.0


@dataclass
class ActiveRun:
    """What the panel and the CLI read while a run goes on."""

    control: RunControl
    total_levels: int
    level: int = 0
    done: int = 0
    total: int = 0
    output_tokens: int = 0
    elapsed_s: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def update(self, level: int, done: int, total: int, output_tokens: int, elapsed_s: float) -> None:
        with self.lock:
            self.level, self.done, self.total = level, done, total
            self.output_tokens, self.elapsed_s = output_tokens, elapsed_s

    def snapshot(self) -> dict[str, float | int]:
        with self.lock:
            rate = self.output_tokens / self.elapsed_s if self.elapsed_s > 0 else 0.0
            return {"level": self.level, "levels": self.total_levels, "done": self.done, "total": self.total,
                    "output_tokens_per_s": rate}


def active_runs(app: Flask) -> dict[int, ActiveRun]:
    return app.extensions.setdefault(EXTENSION_KEY, {})


@dataclass(frozen=True)
class RunPlan:
    target: Target
    prompts: Sequence[Prompt]
    levels: Sequence[Level]
    ignore_eos: bool
    slos_ms: dict[str, float] | None
    warmup: int
    seed: int
    # On the VM: stream(command, stdin, on_line, cancel) -> (exit code, stderr) over the session's SSH connection.
    run_on_vm: on_vm.StreamCommand | None = None


def start(app: Flask, run_id: int, plan: RunPlan) -> None:
    """Start the run's thread; it owns the run row from here on."""
    active = ActiveRun(RunControl(), total_levels=len(plan.levels))
    active.control.on_progress = active.update
    active_runs(app)[run_id] = active
    thread = threading.Thread(target=_run, args=(app, run_id, plan, active), name=f"maider-benchmark-{run_id}",
                              daemon=True)
    thread.start()


def _vllm_version(target: Target) -> str | None:
    """vLLM answers GET /version; other servers may not, which is fine."""
    try:
        response = httpx.get(target.base_url + "/version", headers=target.headers(), timeout=VERSION_TIMEOUT_S,
                             trust_env=False)
        return str(response.json().get("version"))[:64] if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError, AttributeError):
        return None


def _store_level(run_id: int, position: int, level_run: LevelRun, slos_ms: dict[str, float] | None) -> None:
    level = level_run.level
    db.session.add(BenchmarkLevel(
        run_id=run_id, position=position, max_concurrency=level.max_concurrency,
        request_rate=None if level.request_rate == float("inf") else level.request_rate,
        results=summarize(level_run.outcomes, level_run.duration, slos_ms),
        requests=per_request_arrays(level_run.outcomes)))


def _finish(run_id: int, state: RunState, error: str | None = None) -> None:
    run = db.session.get(BenchmarkRun, run_id)
    if run is None:
        return
    run.status, run.error, run.finished_at = state.value, error, utcnow()
    db.session.commit()


def _run(app: Flask, run_id: int, plan: RunPlan, active: ActiveRun) -> None:
    with app.app_context():
        try:
            run = db.session.get(BenchmarkRun, run_id)
            run.status, run.started_at = RunState.RUNNING.value, utcnow()
            db.session.commit()
            run.vllm_version = _vllm_version(plan.target)
            db.session.commit()
            stored = 0

            def store(level_run: LevelRun) -> None:
                nonlocal stored
                _store_level(run_id, stored, level_run, plan.slos_ms)
                stored += 1
                db.session.commit()

            active.control.on_level = store
            if plan.run_on_vm is not None:
                _run_on_vm(run_id, plan, active, store)
                return
            try:
                run_sweep(plan.target, plan.prompts, plan.levels, plan.ignore_eos, active.control, plan.warmup,
                          plan.seed)
            except Cancelled:
                _finish(run_id, RunState.CANCELLED, "cancelled")
                return
            except WarmupFailed as exc:
                _finish(run_id, RunState.FAILED, redact(f"no warm-up request succeeded: {exc}"))
                return
            _finish(run_id, RunState.DONE)
        except Exception as exc:  # the thread must record why it stopped, whatever happened
            log.exception("benchmark %s failed", run_id)
            db.session.rollback()
            _finish(run_id, RunState.FAILED, redact(f"{type(exc).__name__}: {exc}"))
        finally:
            active_runs(app).pop(run_id, None)
            db.session.remove()


def _run_on_vm(run_id: int, plan: RunPlan, active: ActiveRun, store: Callable[[LevelRun], None]) -> None:
    """The sweep runs on the VM; its progress streams back into ``active`` and each level is stored as it ends, so a
    cancel (which closes the channel and stops the program on the VM) keeps the levels finished before it."""
    assert plan.run_on_vm is not None
    try:
        on_vm.run_on_vm(plan.run_on_vm, plan.target, plan.prompts, plan.levels, plan.ignore_eos, plan.warmup,
                        plan.seed, on_progress=active.update, on_level=store, cancel=active.control.cancel)
    except Cancelled:
        _finish(run_id, RunState.CANCELLED, "cancelled")
        return
    except on_vm.VmRunFailed as exc:
        _finish(run_id, RunState.FAILED, redact(str(exc)))
        return
    _finish(run_id, RunState.DONE)


def wait_for(app: Flask, run_id: int, timeout_s: float = 60.0) -> None:
    """Block until a run's thread has finished (tests and shutdown)."""
    deadline = time.monotonic() + timeout_s
    while run_id in active_runs(app) and time.monotonic() < deadline:
        time.sleep(0.02)
