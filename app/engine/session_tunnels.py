"""Open (or reuse) a session's forwards for vLLM and Open WebUI on this laptop's 127.0.0.1.

A session keeps its local ports for its whole life: they are in the ``.aider-env`` the user sourced, and a port
maider let go is one another local user could take to receive prompts and the key. So a restarted maider reopens
every tunnel on its recorded ports before any worker runs (``restore_tunnels``), and when a port really had to move,
``.aider-env`` and the metadata file are rewritten and the move is shown (an event, and a note on the session page).
"""
from __future__ import annotations

import logging

import sqlalchemy as sa
from flask import Flask

from app.domain import vm_contract as vm
from app.engine.aider_files import write_aider_files
from app.engine.identity import SessionIdentity, ensure_identity
from app.engine.runtime import EngineRuntime, runtime
from app.engine.state import record_event
from app.engine.steps import remote_target
from app.engine.tunnels import ForwardSpec
from app.extensions import db
from app.models import Session, SessionState

log = logging.getLogger(__name__)

PREFERRED_API_PORT = 8000
PREFERRED_WEBUI_PORT = 3000
PORTS_MOVED = "ports_moved"  # engine_state key: the last port move, shown on the session page
# States in which a session holds tunnels (starting opens them to probe vLLM).
TUNNELLED_STATES = (SessionState.STARTING, SessionState.READY, SessionState.SWITCHING_MODEL)


def ensure_tunnel(runtime: EngineRuntime, session: Session, identity: SessionIdentity,
                  wait: bool = True) -> dict[str, int]:
    """Forwards for the session, opened on the ports it had (or 8000/3000, else the next free ones).

    ``wait=False`` returns once the ports are bound; the SSH connection follows in the background.
    """
    status = runtime.tunnels.status(session.uid)
    if status is not None and status.state != "down" and status.ports:
        ports = dict(status.ports)
    else:
        target = remote_target(session, identity)
        ports = runtime.tunnels.open(
            session.uid, lambda: runtime.remote(*target),
            [ForwardSpec("api", vm.VLLM_PORT, session.api_port or PREFERRED_API_PORT, front="http"),
             ForwardSpec("webui", vm.WEBUI_PORT, session.webui_port or PREFERRED_WEBUI_PORT, front="webui")],
            wait=wait,
        )
    recorded = {"api": session.api_port, "webui": session.webui_port}
    session.api_port, session.webui_port = ports["api"], ports["webui"]
    moved = {name: (recorded[name], ports[name]) for name in ports if recorded[name] and recorded[name] != ports[name]}
    if moved:
        _ports_moved(session, identity, moved)
    status = runtime.tunnels.status(session.uid)
    session.tunnel_state = status.state if status is not None else "down"
    return ports


def _ports_moved(session: Session, identity: SessionIdentity, moved: dict[str, tuple[int, int]]) -> None:
    """A recorded port was taken by something else: point the user's files at the new one and say so."""
    what = ", ".join(f"{'vLLM API' if name == 'api' else 'Open WebUI'} {old} → {new}"
                     for name, (old, new) in moved.items())
    message = f"local port taken by another program; tunnel moved: {what}"
    if session.workdir and session.ready_at is not None:  # the aider files exist once the session was ready
        try:
            env_path, _ = write_aider_files(
                session.workdir, session_name=session.name, served_name=session.served_name,
                api_key=identity.api_key, api_port=session.api_port or 0, webui_port=session.webui_port or 0,
                max_model_len=session.max_model_len or 0, hourly_price=session.hourly_price)
            message += f"; rewrote {env_path.name} and the model metadata (source it again)"
        except OSError as exc:
            message += f"; could not rewrite the aider files in {session.workdir}: {exc}"
    record_event(session, "warning", message, moved={name: list(pair) for name, pair in moved.items()})
    session.engine_state = {**(session.engine_state or {}), PORTS_MOVED: message}
    log.warning("session %s: %s", session.name, message)


def close_tunnel(runtime: EngineRuntime, session: Session) -> None:
    runtime.tunnels.close(session.uid)
    session.tunnel_state = "down"


def restore_tunnels(app: Flask) -> int:
    """At start-up, before any worker claims a port: no tunnel is up in a fresh process, so every recorded state
    says "down"; then every live session's ports are bound again (one by one: binding takes microseconds) and their
    SSH connections come up in parallel in the background. Returns how many sessions got their tunnels back."""
    engine = runtime(app)
    restored = 0
    with app.app_context():
        db.session.execute(sa.update(Session).where(Session.tunnel_state != "down").values(tunnel_state="down"))
        sessions = db.session.scalars(sa.select(Session).where(
            Session.status.in_([s.value for s in TUNNELLED_STATES]), Session.api_port.is_not(None),
            Session.destroy_requested_at.is_(None)).order_by(Session.id)).all()
        for session in sessions:
            try:
                _refresh_local_vm_address(engine, session)
                ensure_tunnel(engine, session, ensure_identity(engine.home, session.uid), wait=False)
                restored += 1
            except Exception:  # noqa: BLE001 -- one session's trouble must not keep the others' ports unbound
                log.exception("restoring the tunnels of %s failed; the monitor retries", session.name)
        db.session.commit()
    return restored


def _refresh_local_vm_address(engine: EngineRuntime, session: Session) -> None:
    """A demo VM lives in maider's process, so a restart powered it off: boot it again (asking the simulated cloud
    for it does) and take its SSH address, which moves only if its old port was taken meanwhile."""
    if session.provider != "simulated" or not session.instance_id:
        return
    instance = engine.provider_for(session).get(session.instance_id)
    if (instance.ssh_host, instance.ssh_port) != (session.ssh_host, session.ssh_port):
        record_event(session, "tunnel", f"the demo VM's SSH port moved {session.ssh_port} → {instance.ssh_port}")
        session.ssh_host, session.ssh_port = instance.ssh_host, instance.ssh_port
