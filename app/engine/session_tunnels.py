"""Open (or reuse) a session's forwards for vLLM and Open WebUI on this laptop's 127.0.0.1."""
from __future__ import annotations

from app.domain import vm_contract as vm
from app.engine.identity import SessionIdentity
from app.engine.runtime import EngineRuntime
from app.engine.steps import remote_target
from app.engine.tunnels import ForwardSpec
from app.models import Session

PREFERRED_API_PORT = 8000
PREFERRED_WEBUI_PORT = 3000


def ensure_tunnel(runtime: EngineRuntime, session: Session, identity: SessionIdentity) -> dict[str, int]:
    """Forwards for the session, opened on the ports it had (or 8000/3000, else the next free ones)."""
    status = runtime.tunnels.status(session.uid)
    if status is not None and status.state != "down" and status.ports:
        ports = dict(status.ports)
    else:
        target = remote_target(session, identity)
        ports = runtime.tunnels.open(
            session.uid, lambda: runtime.remote(*target),
            [ForwardSpec("api", vm.VLLM_PORT, session.api_port or PREFERRED_API_PORT),
             ForwardSpec("webui", vm.WEBUI_PORT, session.webui_port or PREFERRED_WEBUI_PORT)],
        )
    session.api_port, session.webui_port = ports["api"], ports["webui"]
    status = runtime.tunnels.status(session.uid)
    session.tunnel_state = status.state if status is not None else "down"
    return ports


def close_tunnel(runtime: EngineRuntime, session: Session) -> None:
    runtime.tunnels.close(session.uid)
    session.tunnel_state = "down"
