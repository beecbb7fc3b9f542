"""Ready sessions: keep their tunnels up, read vLLM's counters for the watchdog and the panel's live figures."""
from __future__ import annotations

import logging

import sqlalchemy as sa
from flask import Flask

from app.engine import failsafe
from app.engine.claims import for_each_claimed
from app.domain import vm_contract as vm
from app.engine.health import scrape_metrics
from app.engine.steps import remote_target
from app.engine.identity import ensure_identity
from app.engine.runtime import runtime
from app.engine.session_tunnels import ensure_tunnel
from app.engine.state import record_event
from app.extensions import db
from app.models import Session, SessionState, vm_may_bill_clause
from app.redaction import redact
from app.remote import RemoteError

log = logging.getLogger(__name__)

SAMPLE_RING = 240  # live-chart samples kept per session: 20 minutes at the 5 s health interval, then the oldest go
VM_DETAIL_EVERY_S = 30  # nvidia-smi and the vLLM log tail: often enough to be live, rare enough to cost nothing
LOG_TAIL_LINES = 80


def parse_gpu_rows(text: str) -> list[dict[str, object]]:
    """Rows of CMD_GPU_QUERY's CSV (index, name, memory.total, memory.used, utilization, temperature)."""
    rows = []
    for line in text.strip().splitlines():
        cells = [c.strip() for c in line.split(",")]
        if len(cells) < 6:
            continue
        try:
            rows.append({"index": int(cells[0]), "name": cells[1], "memory_total_mb": int(float(cells[2])),
                         "memory_used_mb": int(float(cells[3])), "utilization": int(float(cells[4])),
                         "temperature": int(float(cells[5]))})
        except ValueError:
            continue
    return rows


def refresh_vm_detail(engine, session: Session, identity, state: dict, now) -> None:
    """GPU table and vLLM log tail for the session page (through the shared SSH connection)."""
    if now.timestamp() - state.get("vm_detail_at", 0) < VM_DETAIL_EVERY_S:
        return
    remote = engine.remote(*remote_target(session, identity))
    gpus = remote.run(vm.CMD_GPU_QUERY, timeout=20)
    if gpus.exit_code == 0:
        state["gpus"] = parse_gpu_rows(gpus.stdout)
    lines = remote.run(vm.CMD_VLLM_LOGS, timeout=20).stdout.splitlines()[-LOG_TAIL_LINES:]
    state["log_tail"] = redact("\n".join(lines))  # vLLM echoes its arguments, the API key among them
    state["vm_detail_at"] = now.timestamp()


def _check(app: Flask, session: Session) -> None:
    engine = runtime(app)
    now = engine.clock()
    identity = ensure_identity(engine.home, session.uid)
    before = session.tunnel_state
    ensure_tunnel(engine, session, identity)  # never raises: SSH failures show in the tunnel's status
    status = engine.tunnels.status(session.uid)
    if status is not None:
        session.tunnel_state = status.state
    # Activity is vLLM's own request counters (below), not tunnel bytes: maider's own probes and an Open WebUI tab
    # left open move bytes through the tunnel all day, and counting them would keep an idle VM billing forever.
    if before != session.tunnel_state:
        record_event(session, "tunnel", f"tunnel {session.tunnel_state} on ports {session.api_port}/"
                                        f"{session.webui_port}")
    _keep_failsafe(engine, session, identity, now)
    state = dict(session.engine_state or {})
    try:
        refresh_vm_detail(engine, session, identity, state, now)
    except RemoteError as exc:
        log.info("monitor: %s: no VM detail (%s)", session.name, type(exc).__name__)
    session.engine_state = dict(state)
    snapshot = scrape_metrics(session.api_port or 0, engine.timings.http_timeout.total_seconds())
    if snapshot is None:
        return
    previous = state.get("metrics") or {}
    if snapshot.requests_running > 0 or snapshot.activity_counter != previous.get("activity"):
        if previous:  # the first scrape after a restart is a baseline, not activity
            session.last_activity_at = now
    elapsed = (now.timestamp() - previous["at"]) if previous.get("at") else 0
    rate = ((snapshot.generation_tokens - previous.get("generation_tokens", 0)) / elapsed) if elapsed > 0 else 0.0
    state["metrics"] = {
        "at": now.timestamp(), "activity": snapshot.activity_counter, "running": snapshot.requests_running,
        "waiting": snapshot.requests_waiting, "generation_tokens": snapshot.generation_tokens,
        "tokens_per_s": max(rate, 0.0), "kv_cache_usage": snapshot.kv_cache_usage,
    }
    state["samples"] = _with_sample(state.get("samples"), session, now, state["metrics"])
    session.engine_state = dict(state)  # a new object, so the JSON column is seen as changed


def _keep_failsafe(engine, session: Session, identity, now, renew: bool = True) -> None:
    """The VM's failsafe hears from maider at every tick (and gets a fresh token or clock when due)."""
    if not failsafe.is_armed(session):
        return
    try:
        remote = engine.remote(*remote_target(session, identity))
        failsafe.beat(session, remote, now)
        if renew:
            failsafe.renew_if_due(session, engine.provider_for(session), remote, now)
    except RemoteError as exc:
        log.info("monitor: %s: no failsafe heartbeat (%s)", session.name, type(exc).__name__)


def _with_sample(samples: list | None, session: Session, now, metrics: dict) -> list[list[float]]:
    """The session's bounded ring of [time, output tok/s, running, waiting, KV use, cost so far] for live charts."""
    started = session.billing_started_at
    cost = session.hourly_price * max(0.0, (now - started).total_seconds()) / 3600 if started else 0.0
    sample = [round(now.timestamp(), 1), round(metrics["tokens_per_s"], 2), metrics["running"], metrics["waiting"],
              round(metrics["kv_cache_usage"], 4), round(cost, 4)]
    return [*(samples or [])[-(SAMPLE_RING - 1):], sample]


def run_once(app: Flask) -> int:
    """Check every ready session once."""
    engine = runtime(app)
    ids = list(db.session.scalars(sa.select(Session.id).where(Session.status == SessionState.READY.value)))

    def check(session: Session) -> None:
        if session.state == SessionState.READY and session.destroy_requested_at is None:
            _check(app, session)

    # A failed launch's VM kept for debugging stays alive while maider runs; with the laptop closed it goes.
    kept = list(db.session.scalars(sa.select(Session.id).where(Session.status == SessionState.FAILED.value,
                                                               vm_may_bill_clause())))

    def keep(session: Session) -> None:
        if session.state == SessionState.FAILED and session.destroy_requested_at is None:
            _keep_failsafe(engine, session, ensure_identity(engine.home, session.uid), engine.clock(), renew=False)

    return for_each_claimed(ids, engine.clock, check, "monitor") + for_each_claimed(kept, engine.clock, keep,
                                                                                    "monitor")
