"""JSON shapes of the API: one function per resource, so the CLI and scripts see stable field names."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from app.domain.failsafe import autostop_in
from app.models import Event, OrphanInstance, Session, SessionState, utcnow
from app.services import sessions as sessions_service


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() + "Z" if value else None


def session_json(session: Session, now: datetime | None = None) -> dict[str, Any]:
    cost = sessions_service.session_cost(session, now)
    return {
        "uid": session.uid, "name": session.name, "status": session.status, "status_label": session.state.label,
        "status_reason": session.status_reason, "status_message": session.status_message,
        "stage_detail": session.stage_detail, "provider": session.provider, "instance_id": session.instance_id,
        "region": session.region, "plan": session.plan, "gpus": session.gpus, "gpu_name": session.gpu_name,
        "model_id": session.model_id, "served_name": session.served_name, "hourly_price": session.hourly_price,
        "runtime_seconds": int(cost.runtime.total_seconds()), "cost": round(cost.cost, 6),
        "created_at": _iso(session.created_at), "ready_at": _iso(session.ready_at),
        "destroyed_at": _iso(session.destroyed_at), "api_port": session.api_port, "webui_port": session.webui_port,
        "tunnel_state": session.tunnel_state, "max_model_len": session.max_model_len,
        "vllm_config": session.vllm_config, "keep_on_failure": session.keep_on_failure,
        "heal_attempts": session.heal_attempts, "destroy_pending": session.destroy_attempts > 0,
        "vm_alive": sessions_service.is_vm_alive(session), "workdir": session.workdir,
        "ssh_host": session.ssh_host, "ssh_port": session.ssh_port,  # for 'maider ssh' and 'maider logs'; the key stays on disk
        "created_by": session.created_by, **_autostop(session, now or utcnow()),
    }


def _autostop(session: Session, now: datetime) -> dict[str, Any]:
    """When maider's watchdog stops a ready VM (and why), and what its on-VM failsafe is armed with."""
    left = None
    if session.state == SessionState.READY and session.destroy_requested_at is None:
        left = autostop_in(now, idle_timeout_minutes=session.idle_timeout_minutes,
                           idle_since=session.last_activity_at or session.ready_at,
                           started_at=session.billing_started_at, max_lifetime_hours=session.max_lifetime_hours,
                           budget_usd=session.budget_usd, hourly_price=session.hourly_price or 0.0)
    failsafe = (session.engine_state or {}).get("failsafe") or {}
    armed = bool(failsafe.get("token_id")) and sessions_service.is_vm_alive(session)
    return {"autostop_seconds": int(left[0].total_seconds()) if left else None,
            "autostop_reason": left[1] if left else None,
            "failsafe_minutes": failsafe.get("silence_minutes") if armed else None,
            "failsafe_deadline": (failsafe.get("deadline_at") + "Z") if armed and failsafe.get("deadline_at") else None}


def event_json(event: Event) -> dict[str, Any]:
    return {"id": event.id, "at": _iso(event.at), "kind": event.kind, "message": event.message,
            "actor": event.actor, "detail": event.detail}


def orphan_json(orphan: OrphanInstance) -> dict[str, Any]:
    return {"id": orphan.id, "provider": orphan.provider, "instance_id": orphan.instance_id, "label": orphan.label,
            "region": orphan.region, "plan": orphan.plan, "hourly_price": orphan.hourly_price,
            "first_seen_at": _iso(orphan.first_seen_at)}
