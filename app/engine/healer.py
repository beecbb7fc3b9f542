"""Auto-heal: read the vLLM container's log, diagnose it, rewrite /opt/llm/.env and recreate the container.

The fix is verified by reading the file back (a change that silently does nothing would burn an attempt and the
user's money), and applied with ``docker compose up -d --force-recreate vllm`` because ``restart`` keeps the old
environment.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from app.domain import vm_contract as vm
from app.domain.diagnosis import Diagnosis, diagnose
from app.domain.healing import MAX_HEAL_ATTEMPTS, plan_heal
from app.domain.vllm_env import parse_env, settings_from_env, update_env
from app.engine.state import record_event
from app.models import Session
from app.remote import RemoteHost


@dataclass(frozen=True)
class HealOutcome:
    diagnosis: Diagnosis | None  # None: the log shows no known failure
    healed: bool  # a fix was applied and the container recreated
    give_up: str | None  # set when maider must stop: what went wrong and what the user should do


def heal_if_failed(session: Session, remote: RemoteHost, log_text: str) -> HealOutcome:
    """Diagnose ``log_text``; apply the next, stronger fix if there is one."""
    diagnosis = diagnose(log_text)
    if diagnosis is None:
        return HealOutcome(None, False, None)
    if session.heal_attempts >= MAX_HEAL_ATTEMPTS:
        return HealOutcome(diagnosis, False, f"{diagnosis.summary} — still failing after {MAX_HEAL_ATTEMPTS} "
                                             f"automatic fixes. {diagnosis.user_action or diagnosis.fix}")
    env_text = remote.run(vm.CMD_READ_ENV, timeout=30).stdout
    plan = plan_heal(diagnosis, parse_env(env_text), session.heal_attempts + 1, session.gpus)
    if plan is None:
        return HealOutcome(diagnosis, False, f"{diagnosis.summary} {diagnosis.user_action or ''}".strip())
    new_text = update_env(env_text, plan.env_updates)
    remote.run(vm.CMD_WRITE_ENV, stdin=new_text.encode(), timeout=30)
    written = parse_env(remote.run(vm.CMD_READ_ENV, timeout=30).stdout)
    unchanged = {k: v for k, v in plan.env_updates.items() if written.get(k) != v}
    if unchanged:
        return HealOutcome(diagnosis, False, f"could not apply the fix on the VM (still: {sorted(unchanged)})")
    result = remote.run(vm.CMD_RECREATE_VLLM, timeout=300)
    if result.exit_code != 0:
        return HealOutcome(diagnosis, False, f"recreating the vLLM container failed: {result.stderr.strip()[:300]}")
    session.heal_attempts += 1
    applied = asdict(settings_from_env(written))
    session.vllm_config = {**(session.vllm_config or {}),
                           **{k: v for k, v in applied.items() if k not in ("model_id", "served_name")}}
    record_event(session, "heal", f"attempt {session.heal_attempts}: {diagnosis.summary} → {plan.description}",
                 cause=diagnosis.cause.value, evidence=diagnosis.evidence[:500], updates=plan.env_updates)
    return HealOutcome(diagnosis, True, None)
