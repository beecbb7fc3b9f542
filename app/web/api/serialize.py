"""JSON shapes of the API: one function per resource, so the CLI and scripts see stable field names."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from app.models import Event, OrphanInstance, Session
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
        "created_by": session.created_by,
    }


def event_json(event: Event) -> dict[str, Any]:
    return {"id": event.id, "at": _iso(event.at), "kind": event.kind, "message": event.message,
            "actor": event.actor, "detail": event.detail}


def orphan_json(orphan: OrphanInstance) -> dict[str, Any]:
    return {"id": orphan.id, "provider": orphan.provider, "instance_id": orphan.instance_id, "label": orphan.label,
            "region": orphan.region, "plan": orphan.plan, "hourly_price": orphan.hourly_price,
            "first_seen_at": _iso(orphan.first_seen_at)}
