"""The live sections of the session page: which template, what it shows, and when it counts as changed.

Each section's version key covers exactly what its template shows, so a poll that would render the same markup
answers 204 and the browser keeps the section (a half-typed model id, a selected log line) untouched.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from flask import current_app, render_template, request, url_for

from app.models import Session, utcnow
from app.domain.aider import proxy_aider_command
from app.services import aider as aider_service
from app.services import gpu_checks as checks_service
from app.services import model_proxy
from app.services import users as users_service
from app.web.access import current_user
from app.web.sessions import timeline, views
from app.web.sessions.forms import SwitchModelForm


LIVE_PART_HEADER = "X-Live-Part"  # "<part>:<version>" of a part rendered outside the live channel (static/js/app.js)


@dataclass(frozen=True)
class Section:
    template: str
    every: str  # htmx polling interval while the session is live
    version: Callable[[Session], tuple]
    context: Callable[[Session], dict[str, Any]]


def _timeline_context(session: Session) -> dict[str, Any]:
    return {"timeline": timeline.build_timeline(session, list(session.events), utcnow())}


def _timeline_version(session: Session) -> tuple:
    return (timeline.timeline_version(session, views.last_event_id(session), utcnow()),)


def _aider_context(session: Session) -> dict[str, Any]:
    user = current_user()
    if user is not None and not user.is_owner:  # a teammate: .aider-env is on the owner's laptop, not theirs
        return {"aider_command": proxy_aider_command(_proxy_base(session), session.served_name), "aider_env": None,
                "via_proxy": True}
    return {"aider_command": aider_service.command_for(session), "aider_env": views.aider_env_path(session)}


def _proxy_base(session: Session) -> str:
    base = current_app.config.get("MAIDER_PUBLIC_URL") or request.host_url
    return base.rstrip("/") + url_for("proxy.models", name=session.name).removesuffix("/models")


def _share_context(session: Session) -> dict[str, Any]:
    user = current_user()
    return {"proxy_base": _proxy_base(session), "usage": model_proxy.usage_for(session),
            "my_key_prefix": users_service.api_key_prefix(user) if user is not None else None}


def _share_version(session: Session) -> tuple:
    user = current_user()
    rows = tuple((u.user_name, u.requests, u.completion_tokens) for u in model_proxy.usage_for(session))
    return (session.status, rows, users_service.api_key_prefix(user) if user is not None else None)


def _checks_context(session: Session) -> dict[str, Any]:
    return {"check": checks_service.latest(current_app._get_current_object(), session)}


def _checks_version(session: Session) -> tuple:
    check = _checks_context(session)["check"]
    shown = (check.id, check.status, check.step, len(check.results or [])) if check is not None else None
    return (session.status, session.destroy_requested_at, shown)


SECTIONS: dict[str, Section] = {
    "aider": Section("sessions/_aider.html", "10s", lambda s: (s.status, s.workdir), _aider_context),
    "share": Section("sessions/_share.html", "10s", _share_version, _share_context),
    "tunnel": Section("sessions/_tunnel.html", "5s",
                      lambda s: (s.status, s.tunnel_state, s.api_port, s.webui_port, s.destroy_requested_at,
                                 (s.engine_state or {}).get("ports_moved")),
                      lambda s: {}),
    "webui": Section("sessions/_webui.html", "5s",
                     lambda s: (True, s.webui_port) if views.shows_webui(s) else
                     (False, s.status, s.tunnel_state, s.destroy_requested_at), lambda s: {}),
    "switch": Section("sessions/_switch.html", "4s",
                      lambda s: (s.status, s.model_id, s.stage_detail, s.destroy_requested_at,
                                 (s.vllm_config or {}).get("max_model_len")),
                      lambda s: {}),
    "timeline": Section("sessions/_timeline.html", "5s", _timeline_version, _timeline_context),
    "metrics": Section("sessions/_metrics.html", "10s",
                       lambda s: (views.gpu_rows(s), views.metrics(s), s.status),
                       lambda s: {"gpus": views.gpu_rows(s), "metrics": views.metrics(s)}),
    "log": Section("sessions/_log.html", "5s", lambda s: (views.log_tail(s), s.status),
                   lambda s: {"log_tail": views.log_tail(s)}),
    "events": Section("sessions/_events.html", "5s", lambda s: (views.last_event_id(s),),
                      lambda s: {"events": views.recent_events(s)}),
    "samples": Section("sessions/_samples.html", "5s", views.samples_version,
                       lambda s: {"samples": views.sample_columns(s)}),
    "checks": Section("sessions/_checks.html", "2s", _checks_version, _checks_context),
}


def section_version(name: str, session: Session) -> str:
    return views.version_key(name, views.is_polling(session), *SECTIONS[name].version(session))


def section_context(name: str, session: Session, **extra: Any) -> dict[str, Any]:
    """Everything the section's template needs (also used by the full page, which includes each section)."""
    spec = SECTIONS[name]
    context = {"s": views.view(session), "section": name, "every": spec.every,
               "version": section_version(name, session), **spec.context(session)}
    if name == "switch":
        context.setdefault("form", SwitchModelForm(formdata=None))
    context.update(extra)
    return context


def render_section(name: str, session: Session, shown_version: str | None, **extra: Any):
    """The section's markup, or 204 when the browser already shows this version.

    The markup names its version in ``X-Live-Part``: when an action (the Reconnect button) swaps a section in, the
    page's live channel takes that version as the one it shows. Were it to keep the one from before, a state that came
    and went between two polls (tunnel up, reconnecting, up) would answer 204 and leave "reconnecting" on the page.
    """
    version = section_version(name, session)
    if shown_version is not None and shown_version == version and not extra:
        return "", 204
    response = current_app.make_response(render_template(SECTIONS[name].template,
                                                          **section_context(name, session, **extra)))
    response.headers[LIVE_PART_HEADER] = f"{name}:{version}"
    return response


def header_version(session: Session) -> str:
    """What the page header shows apart from the cost and runtime, which tick in the browser."""
    s = views.view(session)
    failsafe = (session.engine_state or {}).get("failsafe") or {}
    return views.version_key("header", s.polling, s.billing, s.step, s.idle_minutes, session.status,
                             session.stage_detail, session.status_message, session.status_reason,
                             session.destroy_requested_at, session.destroyed_at, session.watchdog_warned_at,
                             session.idle_timeout_minutes, session.tunnel_state, session.webui_port, session.model_id,
                             session.hourly_price, failsafe.get("token_id"), failsafe.get("enabled"),
                             failsafe.get("deadline_at"), failsafe.get("problem"))


def live_parts_version(session: Session) -> str:
    """``header:…,aider:…,…``: the version of every live part of the session page, for its one live channel."""
    parts = {"header": header_version(session), **{name: section_version(name, session) for name in SECTIONS}}
    return ",".join(f"{part}:{version}" for part, version in parts.items())
