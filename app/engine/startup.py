"""Start-up steps: starting (image pull, download, load; healing lives here) and switching_model → ready."""
from __future__ import annotations

import logging
from dataclasses import asdict

from app.domain import vm_contract as vm
from app.domain.startup_progress import model_load_seconds, startup_phase
from app.domain.vllm_env import update_env
from app.engine import failsafe
from app.engine.aider_files import write_aider_files
from app.engine.healer import heal_if_failed
from app.engine.health import probe_ready
from app.engine.session_tunnels import ensure_tunnel
from app.engine.state import record_event, transition
from app.engine.steps import StepContext, connection_lost, deadline_passed, fail_launch, poll_later
from app.engine.vllm_config import vllm_settings_for
from app.models import Reason, SessionState
from app.redaction import redact
from app.remote import RemoteError, RemoteHost

log = logging.getLogger(__name__)

_ENV_FOR_CONFIG = {
    "MODEL_ID": "model_id", "SERVED_MODEL_NAME": "served_name", "VLLM_MAX_MODEL_LEN": "max_model_len",
    "VLLM_GPU_MEMORY_UTILIZATION": "gpu_memory_utilization", "VLLM_MAX_NUM_SEQS": "max_num_seqs",
    "VLLM_TENSOR_PARALLEL_SIZE": "tensor_parallel_size", "VLLM_DTYPE": "dtype",
    "VLLM_KV_CACHE_DTYPE": "kv_cache_dtype", "VLLM_ENFORCE_EAGER": "enforce_eager",
    "VLLM_EXTRA_ARGS": "extra_args",
}


def _env_value(value: object) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def _note_phase(ctx: StepContext, remote: RemoteHost, log_text: str) -> None:
    """Record each new start-up phase once (the stage timeline) and show it as progress."""
    stage_word = remote.run(vm.CMD_READ_STAGE, timeout=20).stdout.strip()
    phase = startup_phase(stage_word, log_text)
    state = dict(ctx.session.engine_state or {})
    state["log_tail"] = redact("\n".join(log_text.splitlines()[-80:]))  # vLLM echoes its args, key included
    seen = list(state.get("phases", []))
    if phase.key not in seen:
        seen.append(phase.key)
        state["phases"] = seen
        detail = {"phase": phase.key}
        load_s = model_load_seconds(log_text)
        if load_s is not None:
            detail["model_load_seconds"] = load_s
        record_event(ctx.session, "stage", phase.label, **detail)
    ctx.session.engine_state = state
    ctx.session.stage_detail = phase.label


def _become_ready(ctx: StepContext, max_model_len: int | None) -> None:
    session = ctx.session
    identity = ctx.identity()
    session.max_model_len = max_model_len or vllm_settings_for(session).max_model_len
    session.ready_at = session.ready_at or ctx.now
    session.last_activity_at = ctx.now
    session.heal_attempts = 0
    state = {k: v for k, v in (session.engine_state or {}).items() if k not in ("phases", "switch_applied")}
    session.engine_state = state
    if session.workdir:
        try:
            env_path, _ = write_aider_files(
                session.workdir, session_name=session.name, served_name=session.served_name,
                api_key=identity.api_key, api_port=session.api_port or 0, webui_port=session.webui_port or 0,
                max_model_len=session.max_model_len, hourly_price=session.hourly_price)
            record_event(session, "action", f"wrote {env_path.name} and the model metadata in {session.workdir}")
        except OSError as exc:
            record_event(session, "warning", f"could not write the aider files in {session.workdir}: {exc}")
    transition(session, SessionState.READY, now=ctx.now)


def _wait_for_vllm(ctx: StepContext, fail) -> None:
    """One readiness round: tunnel up, probe, and if vLLM crashed, diagnose and heal."""
    session = ctx.session
    identity = ctx.identity()
    try:
        remote = ctx.remote()
        failsafe.beat(session, remote, ctx.now)  # a long model load is not silence
        ensure_tunnel(ctx.runtime, session, identity)
        readiness = probe_ready(session.api_port or 0, identity.api_key, session.served_name,
                                ctx.timings.http_timeout.total_seconds())
        if readiness.ready:
            _become_ready(ctx, readiness.max_model_len)
            return
        log_text = remote.run(vm.CMD_VLLM_LOGS, timeout=30).stdout
        outcome = heal_if_failed(session, remote, log_text)
        if outcome.give_up:
            fail(outcome.give_up)
            return
        if outcome.healed:
            session.deadline_at = None  # a recreated container gets a fresh start-up allowance
            session.stage_started_at = ctx.now
            session.poll_count = 0
            poll_later(ctx, f"applied a fix ({outcome.diagnosis.cause.value}); restarting vLLM")
            return
        _note_phase(ctx, remote, log_text)
        poll_later(ctx)
    except RemoteError as exc:
        connection_lost(ctx, exc, "reconnecting to the VM")


def step_starting(ctx: StepContext) -> None:
    """Wait until vLLM serves the model, healing known start-up failures on the way."""
    if deadline_passed(ctx, ctx.timings.start_deadline):
        fail_launch(ctx, Reason.LAUNCH_TIMEOUT, "vLLM did not become ready in time; see the log tail")
        return
    _wait_for_vllm(ctx, lambda message: fail_launch(ctx, Reason.VLLM_FAILED, message))


def _fail_switch(ctx: StepContext, message: str) -> None:
    transition(ctx.session, SessionState.FAILED, reason=Reason.VLLM_FAILED, now=ctx.now,
               message=f"{message} The VM is still running (and billed): switch to another model or destroy it.")


def step_switching_model(ctx: StepContext) -> None:
    """Rewrite the VM's env for the new model, recreate only the vLLM container, then wait for readiness."""
    session = ctx.session
    if deadline_passed(ctx, ctx.timings.switch_deadline):
        _fail_switch(ctx, "the new model did not become ready in time.")
        return
    if not (session.engine_state or {}).get("switch_applied"):
        try:
            remote = ctx.remote()
            env_text = remote.run(vm.CMD_READ_ENV, timeout=30).stdout
            wanted = asdict(vllm_settings_for(session))
            updates = {key: _env_value(wanted[attr]) for key, attr in _ENV_FOR_CONFIG.items()}
            remote.run(vm.CMD_WRITE_ENV, stdin=update_env(env_text, updates).encode(), timeout=30)
            result = remote.run(vm.CMD_RECREATE_VLLM, timeout=300)
            if result.exit_code != 0:
                _fail_switch(ctx, f"recreating the vLLM container failed: {result.stderr.strip()[:300]}")
                return
        except RemoteError as exc:
            connection_lost(ctx, exc, "reconnecting to the VM")
            return
        session.heal_attempts = 0
        session.engine_state = {**(session.engine_state or {}), "switch_applied": True, "phases": []}
        record_event(session, "stage", f"loading {session.model_id} (weights cache kept)")
        poll_later(ctx, "loading the new model")
        return
    _wait_for_vllm(ctx, lambda message: _fail_switch(ctx, message))
