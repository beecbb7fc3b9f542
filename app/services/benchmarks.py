"""Benchmarks: check a request, start a run against a session (or another OpenAI-compatible server), cancel, read.

The same rules for the panel form, the JSON API and the CLI. A run is a row plus a thread of the server
(``app.engine.benchmark_runner``); the API key of the measured server never leaves memory.
"""
from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from flask import Flask

from app.benchmark.client import Level, Target
from app.benchmark.prompts import DEFAULT_OUTPUT_LEN, DatasetError, random_prompts, sharegpt_prompts
from app.benchmark_models import BenchmarkRun, RunState
from app.domain.benchmark_stats import parse_goodput
from app.domain.gpu_catalog import gpu_of
from app.engine import benchmark_runner
from app.engine.identity import load_identity
from app.engine.runtime import runtime
from app.engine.steps import remote_target
from app.remote import RemoteError
from app.errors import FieldError, NotFoundError, UserError
from app.extensions import db
from app.models import Session, SessionState, utcnow
from app.services import sessions as sessions_service

DEFAULT_LEVELS = (1, 2, 4, 8)
MAX_CONCURRENCY = 1024
MAX_LEVELS = 12
MAX_PROMPTS = 10_000
MAX_LEN = 131_072
MAX_WARMUP = 64
VM_RUN_TIMEOUT_S = 3600.0  # the whole sweep runs on the VM in one SSH command (its progress streams back)
STOPPED_MESSAGE = "maider stopped while this run was going"


@dataclass(frozen=True)
class BenchmarkRequest:
    """A checked request. Exactly one of ``session`` and ``base_url`` is set."""

    session: str | None = None
    base_url: str | None = None
    api_key: str = ""
    model: str | None = None
    concurrency: tuple[int, ...] = DEFAULT_LEVELS
    request_rates: tuple[float, ...] = (math.inf,)
    num_prompts: int = 32
    input_len: int = 1024
    output_len: int | None = None  # None: 128 for random prompts, each reply's length for ShareGPT
    dataset: str = "random"  # or the path of a ShareGPT JSON file
    goodput: str = ""
    endpoint: str = "completions"
    warmup: int = 1
    seed: int = 0
    where: str = "tunnel"  # or "vm": the client runs inside the vLLM container, without the tunnel

    @property
    def levels(self) -> list[Level]:
        concurrencies: tuple[int | None, ...] = self.concurrency or (None,)
        return [Level(c, r) for r in self.request_rates for c in concurrencies]

    def settings(self) -> dict[str, Any]:
        """What the run row keeps (no key)."""
        return {"concurrency": list(self.concurrency), "request_rates": [_rate_text(r) for r in self.request_rates],
                "num_prompts": self.num_prompts, "input_len": self.input_len,
                "output_len": self.output_len or (DEFAULT_OUTPUT_LEN if self.dataset == "random" else None),
                "dataset": self.dataset, "goodput": self.goodput, "endpoint": self.endpoint,
                "warmup": self.warmup, "seed": self.seed, "where": self.where}


def _rate_text(rate: float) -> str | float:
    return "inf" if math.isinf(rate) else rate


def _int(body: dict[str, Any], key: str, default: int, low: int, high: int, errors: dict[str, str]) -> int:
    value = body.get(key)
    if value in (None, ""):
        return default
    try:
        number = int(str(value).strip())
    except (TypeError, ValueError):
        errors[key] = f"must be a whole number, not {value!r}"
        return default
    if not low <= number <= high:
        errors[key] = f"must be between {low} and {high}"
    return number


def _list(value: Any) -> list[str]:
    if value in (None, ""):
        return []
    items = value if isinstance(value, list) else str(value).split(",")
    return [str(v).strip() for v in items if str(v).strip()]


def _concurrency(body: dict[str, Any], errors: dict[str, str]) -> tuple[int, ...]:
    values: list[int] = []
    for item in _list(body.get("concurrency")):
        try:
            values.append(int(item))
        except ValueError:
            errors["concurrency"] = f"takes whole numbers separated by commas, e.g. 1,2,4,8 -- not {item!r}"
            return ()
    if any(not 1 <= v <= MAX_CONCURRENCY for v in values):
        errors["concurrency"] = f"each level must be between 1 and {MAX_CONCURRENCY}"
    return tuple(dict.fromkeys(values))


def _rates(body: dict[str, Any], errors: dict[str, str]) -> tuple[float, ...]:
    rates: list[float] = []
    for item in _list(body.get("request_rate")):
        try:
            rate = float(item)
        except ValueError:
            errors["request_rate"] = f"takes requests per second (or inf), not {item!r}"
            return (math.inf,)
        if math.isnan(rate) or rate <= 0:
            errors["request_rate"] = "must be a positive number of requests per second (or inf)"
            return (math.inf,)
        rates.append(rate)
    return tuple(dict.fromkeys(rates)) or (math.inf,)


def parse_request(body: dict[str, Any]) -> BenchmarkRequest:
    """Check a request from the API, the panel or the CLI; FieldError names every bad field."""
    errors: dict[str, str] = {}
    session = str(body.get("session") or "").strip() or None
    base_url = str(body.get("base_url") or "").strip().rstrip("/") or None
    model = str(body.get("model") or "").strip() or None
    if base_url:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            errors["base_url"] = "must be an http(s) URL such as http://127.0.0.1:8000"
        base_url = base_url.removesuffix("/v1")
        if not model:
            errors["model"] = "is required with base_url (the served model name)"
        if session:
            errors["session"] = "give a session or base_url, not both"
    elif not session:
        errors["session"] = "is required (or base_url and model for another server)"
    concurrency = _concurrency(body, errors)
    rates = _rates(body, errors)
    request = BenchmarkRequest(
        session=session, base_url=base_url, api_key=str(body.get("api_key") or ""), model=model,
        # No levels given: the usual sweep, or no concurrency limit when a request rate sets the load.
        concurrency=concurrency if "concurrency" in body else (() if body.get("request_rate") else DEFAULT_LEVELS),
        request_rates=rates,
        num_prompts=_int(body, "num_prompts", 32, 1, MAX_PROMPTS, errors),
        input_len=_int(body, "input_len", 1024, 1, MAX_LEN, errors),
        output_len=_int(body, "output_len", 0, 1, MAX_LEN, errors) if "output_len" in body else None,
        dataset=str(body.get("dataset") or "random").strip(),
        goodput=str(body.get("goodput") or "").strip(),
        endpoint=str(body.get("endpoint") or "completions").strip(),
        warmup=_int(body, "warmup", 1, 0, MAX_WARMUP, errors), seed=_int(body, "seed", 0, 0, 2**31, errors),
        where=str(body.get("where") or "tunnel").strip(),
    )
    if request.goodput:
        try:
            parse_goodput(request.goodput)
        except ValueError as exc:
            errors["goodput"] = str(exc)
    if request.where not in ("tunnel", "vm"):
        errors["where"] = "must be tunnel or vm"
    elif request.where == "vm" and request.base_url:
        errors["where"] = "runs on a session's VM only, not against base_url"
    if request.endpoint not in ("completions", "chat"):
        errors["endpoint"] = "must be completions or chat"
    if len(request.levels) > MAX_LEVELS:
        errors["concurrency"] = f"at most {MAX_LEVELS} levels (concurrency x rates) in one run"
    if request.dataset != "random" and not Path(request.dataset).is_absolute():
        errors["dataset"] = "is 'random' or the absolute path of a ShareGPT JSON file"
    if errors:
        raise FieldError(errors)
    return request


def _prompts(request: BenchmarkRequest):
    if request.dataset == "random":
        return random_prompts(request.num_prompts, request.input_len, request.output_len or DEFAULT_OUTPUT_LEN,
                              request.seed)
    try:
        return sharegpt_prompts(Path(request.dataset), request.num_prompts, request.output_len, request.seed)
    except DatasetError as exc:
        raise FieldError({"dataset": str(exc)}) from None


def _session_target(run: BenchmarkRun, session: Session, home: Path, endpoint: str) -> Target:
    if session.state != SessionState.READY or not session.api_port:
        raise UserError(f"session '{session.name}' is {session.state.label.lower()}; benchmarks need a ready "
                        "session")
    gpu = gpu_of(session.plan, session.gpu_name)
    run.session_id, run.session_name = session.id, session.name
    run.model_id, run.served_name = session.model_id, session.served_name
    run.provider, run.plan, run.region = session.provider, session.plan, session.region
    run.gpu = session.gpu_name or (gpu.name if gpu else None)
    run.gpus, run.hourly_price, run.max_model_len = session.gpus, session.hourly_price, session.max_model_len
    api_key = load_identity(home, session.uid).api_key
    return Target(f"http://127.0.0.1:{session.api_port}", session.served_name, api_key, endpoint)


def _vm_runner(app: Flask, session: Session, home: Path):
    """stream(command, stdin, on_line, cancel) over the session's shared SSH connection, for a thread that must not
    touch the row: each line of the VM's output reaches on_line as it arrives; a cancel closes the channel."""
    address = remote_target(session, load_identity(home, session.uid))
    engine = runtime(app)

    def stream(command: str, stdin: bytes, on_line: Callable[[str], None], cancel: threading.Event) -> tuple[int, str]:
        try:
            result = engine.remote(*address).stream(command, stdin, on_line, cancel, timeout=VM_RUN_TIMEOUT_S)
        except RemoteError as exc:
            return 255, f"SSH failed: {type(exc).__name__}"
        return result.exit_code, result.stderr

    return stream


def start_run(app: Flask, request: BenchmarkRequest, home: Path, actor: str) -> BenchmarkRun:
    """Create the run row and start measuring in the background; the row says how it goes."""
    prompts = _prompts(request)
    run = BenchmarkRun(settings=request.settings(), progress={}, created_by=actor[:64], where=request.where)
    run_on_vm = None
    if request.session:
        session = sessions_service.get_session(request.session)
        target = _session_target(run, session, home, request.endpoint)
        longest = max(p.input_len + p.output_len for p in prompts)
        if session.max_model_len and longest > session.max_model_len:
            raise FieldError({"input_len": f"prompt + output ({longest} tokens) exceed the session's context of "
                                           f"{session.max_model_len} tokens"})
        if request.where == "vm":
            run_on_vm = _vm_runner(app, session, home)
    else:
        target = Target(str(request.base_url), str(request.model), request.api_key, request.endpoint)
        run.base_url, run.model_id, run.served_name = request.base_url, str(request.model), str(request.model)
    db.session.add(run)
    db.session.commit()
    plan = benchmark_runner.RunPlan(target, prompts, request.levels, ignore_eos=request.dataset == "random",
                                    slos_ms=parse_goodput(request.goodput) if request.goodput else None,
                                    warmup=request.warmup, seed=request.seed, run_on_vm=run_on_vm)
    benchmark_runner.start(app, run.id, plan)
    return run


def get_run(app: Flask, run_id: int) -> BenchmarkRun:
    """The run; one left running by a stopped server is marked failed the first time it is read."""
    run = db.session.get(BenchmarkRun, run_id)
    if run is None:
        raise NotFoundError(f"no benchmark run #{run_id}")
    if not run.state.is_finished() and run_id not in benchmark_runner.active_runs(app):
        run.status, run.error, run.finished_at = RunState.FAILED.value, STOPPED_MESSAGE, utcnow()
        db.session.commit()
    return run


def progress(app: Flask, run: BenchmarkRun) -> dict[str, Any]:
    """Live progress while running: level, requests done / total, output tokens per second."""
    active = benchmark_runner.active_runs(app).get(run.id)
    return active.snapshot() if active else {}


def list_runs(app: Flask, limit: int = 200) -> list[BenchmarkRun]:
    """Runs, newest first; any left running by a stopped server is marked failed."""
    runs = list(db.session.scalars(sa.select(BenchmarkRun).order_by(BenchmarkRun.id.desc()).limit(limit)))
    return [get_run(app, run.id) if not run.state.is_finished() else run for run in runs]


def runs_by_ids(app: Flask, ids: list[int]) -> list[BenchmarkRun]:
    return [get_run(app, i) for i in ids]


def counterpart(run: BenchmarkRun) -> BenchmarkRun | None:
    """The newest finished run of the same session measured from the other place (tunnel vs VM), if any."""
    if not run.session_id:
        return None
    return db.session.scalar(
        sa.select(BenchmarkRun).where(BenchmarkRun.session_id == run.session_id, BenchmarkRun.where != run.where,
                                      BenchmarkRun.status == RunState.DONE.value)
        .order_by(BenchmarkRun.id.desc()).limit(1))


def request_cancel(app: Flask, run_id: int) -> BenchmarkRun:
    """Stop a run after its in-flight requests are cut; finished levels stay stored."""
    run = get_run(app, run_id)
    if run.state.is_finished():
        raise UserError(f"benchmark #{run_id} has already ended ({run.status})")
    run.cancel_requested = True
    db.session.commit()
    active = benchmark_runner.active_runs(app).get(run_id)
    if active is not None:
        active.control.cancel.set()
    return run


def delete_run(app: Flask, run_id: int) -> None:
    run = get_run(app, run_id)
    if not run.state.is_finished():
        raise UserError(f"benchmark #{run_id} is still running: cancel it first")
    db.session.delete(run)
    db.session.commit()
