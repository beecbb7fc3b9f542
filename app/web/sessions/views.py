"""What the panel shows about a session, computed from its row and events (database reads only, no I/O).

The templates stay simple: they get plain values (labels, durations, fractions) from these helpers, and every polled
partial gets a small ``version`` key so an unchanged section answers 204 and the browser keeps the DOM (and the
user's scroll position or text selection) as it is.
"""
from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Callable

import sqlalchemy as sa
import sqlalchemy.orm  # noqa: F401  (sa.orm.defer)

from app.domain.aider import AIDER_ENV_FILENAME
from app.extensions import db
from app.redaction import redact
from app.models import LAUNCH_STATES, Event, Session, SessionState, utcnow
from app.services import sessions as sessions_service
from app.services import spending
from app.web.sessions import db_stamp

RECENTLY_ENDED = timedelta(minutes=15)  # ended sessions stay on the dashboard this long, so nobody misses a failure
EVENTS_SHOWN = 200
TOTALS_MAX_AGE = timedelta(seconds=1)  # many tabs polling the totals share one computation per second


def is_polling(session: Session) -> bool:
    """Whether the session's partials keep polling: anything may still change while a VM can exist or work is due."""
    if session.state == SessionState.DESTROYED:
        return False
    if session.state == SessionState.FAILED:
        return session.destroyed_at is None and (session.instance_id is not None
                                                 or session.destroy_requested_at is not None)
    return True




def launch_step(session: Session) -> tuple[int, int] | None:
    """(step, of) while launching, e.g. (3, 6) while booting; None otherwise."""
    if session.state in LAUNCH_STATES:
        return LAUNCH_STATES.index(session.state) + 1, len(LAUNCH_STATES)
    return None


def plan_label(session: Session) -> str:
    """``1 × RTX 4000 Ada`` (or the plan id when the GPU is unknown)."""
    if session.gpu_name:
        return f"{session.gpus} × {session.gpu_name}"
    return session.plan


def badge_class(session: Session) -> str:
    state = session.state
    if state == SessionState.READY:
        return "badge-ok"
    if state == SessionState.FAILED:
        return "badge-err"
    if state in (SessionState.DESTROYING, SessionState.DESTROYED):
        return "badge-muted" if state == SessionState.DESTROYED else "badge-warn"
    return "badge-info"


def tunnel_class(state: str | None) -> str:
    return {"up": "badge-ok", "reconnecting": "badge-warn"}.get(state or "", "badge-err")




def can_destroy(session: Session) -> bool:
    if session.state in (SessionState.DESTROYING, SessionState.DESTROYED):
        return False
    if session.state == SessionState.FAILED and session.destroyed_at is not None:
        return False
    return session.destroy_requested_at is None


def can_switch(session: Session) -> bool:
    if session.destroy_requested_at is not None:
        return False
    vm_kept = session.state == SessionState.FAILED and session.destroyed_at is None and session.instance_id
    return session.state == SessionState.READY or bool(vm_kept)


def shows_webui(session: Session) -> bool:
    """The tunnelled Open WebUI can be embedded: the session is up and its tunnel is up."""
    return (session.state in (SessionState.READY, SessionState.SWITCHING_MODEL) and session.tunnel_state == "up"
            and bool(session.webui_port) and session.destroy_requested_at is None)


def aider_env_path(session: Session) -> str | None:
    return str(Path(session.workdir) / AIDER_ENV_FILENAME) if session.workdir else None


@dataclass
class SessionView:
    """A session with everything a card or a page header shows."""

    session: Session
    now: datetime
    runtime: timedelta = field(init=False)
    cost: float = field(init=False)

    def __post_init__(self) -> None:
        cost = sessions_service.session_cost(self.session, self.now)
        self.runtime, self.cost = cost.runtime, cost.cost

    @property
    def name(self) -> str:
        return self.session.name

    @property
    def polling(self) -> bool:
        return is_polling(self.session)

    @property
    def shown(self) -> str:
        """What a polled header or card shows, sent back so the server can tell the page when the session moved."""
        return f"{self.session.status}.{int(self.session.destroy_requested_at is not None)}"

    @property
    def step(self) -> tuple[int, int] | None:
        return launch_step(self.session)

    @property
    def billing(self) -> bool:
        return sessions_service.is_vm_alive(self.session) and self.session.billing_started_at is not None

    @property
    def idle_minutes(self) -> int | None:
        last = self.session.last_activity_at
        if last is None:
            return None
        return max(int((self.now - last).total_seconds() // 60), 0)


def view(session: Session, now: datetime | None = None) -> SessionView:
    return SessionView(session, now or utcnow())


def _recently_ended_query(column, now: datetime):
    """Sessions that ended (destroyed, or failed with the VM gone) in the last few minutes, newest first."""
    return (sa.select(column).where(Session.destroyed_at.is_not(None), Session.destroyed_at > now - RECENTLY_ENDED)
            .order_by(Session.destroyed_at.desc()).limit(10))


def recently_ended(now: datetime | None = None) -> list[Session]:
    """Sessions that ended in the last few minutes, so nobody misses a failure."""
    return list(db.session.scalars(_recently_ended_query(Session, now or utcnow())))


def dashboard(cache_key: str) -> sessions_service.Overview:
    """The dashboard's overview without decoding each row's JSON columns (the cards show none of them).

    The totals come from ``totals`` (shared by every tab for a second); the rows are the same as the service's.
    """
    now = utcnow()
    live = list(db.session.scalars(
        sa.select(Session).options(sa.orm.defer(Session.engine_state), sa.orm.defer(Session.vllm_config))
        .where(sessions_service.live_clause()).order_by(Session.id.desc())))
    spend = totals(cache_key)
    from app.services import cleanup as cleanup_service

    return sessions_service.Overview(live, cleanup_service.orphans(), spend.burn_rate, spend.spent_today,
                                     spend.spent_total, now)


# What a dashboard card, the totals and the orphans panel show, apart from the cost and runtime that tick in the
# browser: one narrow query decides whether anything a tab shows has changed.
_CARD_COLUMNS = (Session.id, Session.name, Session.status, Session.stage_detail, Session.status_message,
                 Session.tunnel_state, Session.destroy_requested_at, Session.destroy_attempts, Session.hourly_price,
                 Session.instance_id, Session.provider_created_at, Session.model_id, Session.plan, Session.region,
                 Session.workdir, Session.api_port, Session.webui_port)


_versions: dict[str, tuple[db_stamp.Stamp, float, datetime, str]] = {}
_versions_lock = threading.Lock()
VERSION_MAX_AGE = timedelta(seconds=1)  # bounds how late a session leaves "recently ended" (it depends on the time)


def dashboard_version() -> str:
    """The change version of the whole dashboard, recomputed only when something committed to the database since
    (two ``stat`` calls instead of three queries per poll), or after ``VERSION_MAX_AGE``."""
    path = db_stamp.database_file(str(db.engine.url))
    seen = db_stamp.stamp(path) if path is not None else None
    now, key = utcnow(), str(path)
    with _versions_lock:
        memo = _versions.get(key)
    if (seen is not None and memo is not None and memo[0] == seen and now < memo[2]
            and time.monotonic() - memo[1] < VERSION_MAX_AGE.total_seconds()):
        return memo[3]
    version = dashboard_version_now(now)
    if seen is not None:
        with _versions_lock:
            _versions[key] = (seen, time.monotonic(), now + VERSION_MAX_AGE, version)
    return version


def dashboard_version_now(now: datetime | None = None) -> str:
    """The change version of the whole dashboard (cards, recently ended, orphans, totals' rates and the day)."""
    from app.models import OrphanInstance

    now = now or utcnow()
    live = db.session.execute(sa.select(*_CARD_COLUMNS).where(sessions_service.live_clause())
                              .order_by(Session.id.desc())).all()
    ended = list(db.session.scalars(_recently_ended_query(Session.id, now)))
    orphans = list(db.session.execute(sa.select(OrphanInstance.id, OrphanInstance.hourly_price)).all())
    return version_key([tuple(row) for row in live], ended, [tuple(row) for row in orphans], now.date())


def live_list_version(now: datetime | None = None) -> str:
    """``list_version`` from two narrow id queries: a poll that changes nothing never loads whole rows."""
    now = now or utcnow()
    live = list(db.session.scalars(
        sa.select(Session.id).where(sessions_service.live_clause()).order_by(Session.id.desc())))
    ended = list(db.session.scalars(_recently_ended_query(Session.id, now)))
    return version_key(live, ended)


@dataclass(frozen=True)
class Totals:
    burn_rate: float
    spent_today: float
    spent_total: float
    spend_days: spending.Series  # the dashboard's chart: spend per day over the last week


_totals_cache: dict[str, tuple[float, str, Totals]] = {}
_totals_lock = threading.Lock()
SPEND_CHART_DAYS = 7


def totals(cache_key: str, max_age: timedelta = TOTALS_MAX_AGE) -> Totals:
    """The spend totals and the week's chart, computed at most once per ``max_age`` however many tabs ask, and again
    as soon as the dashboard's version moves (a live answer never shows totals from before its change)."""
    now = time.monotonic()
    version = dashboard_version()
    with _totals_lock:
        cached = _totals_cache.get(cache_key)
        if cached is not None and cached[1] == version and now - cached[0] < max_age.total_seconds():
            return cached[2]
    overview = sessions_service.dashboard_overview()
    week = spending.per_day(spending.billed_intervals(overview.now), overview.now, SPEND_CHART_DAYS)
    value = Totals(overview.burn_rate, overview.spent_today, overview.spent_total, week)
    with _totals_lock:
        _totals_cache[cache_key] = (now, version, value)
    return value


def forget_totals() -> None:
    """After an action that changes the totals (launch, destroy), the next poll recomputes them."""
    with _totals_lock:
        _totals_cache.clear()
        _rendered.clear()


_rendered: dict[tuple, tuple[float, str]] = {}
_render_lock = threading.Lock()
RENDERED_MAX_AGE_S = 2.0


def rendered_once(key: tuple, render: Callable[[], str]) -> str:
    """The markup for ``key`` (a change version and who is looking), rendered once however many tabs ask for it in
    the same moment: every open tab sees a change at the same poll, and the second CPU is not there to share."""
    hit = _fresh_render(key)
    if hit is not None:
        return hit
    with _render_lock:  # the tabs asking at the same moment wait for the first one's render, not render it again
        hit = _fresh_render(key)
        if hit is not None:
            return hit
        body = render()
        now = time.monotonic()
        with _totals_lock:
            for stale in [k for k, (at, _) in _rendered.items() if now - at >= RENDERED_MAX_AGE_S]:
                del _rendered[stale]
            _rendered[key] = (now, body)
        return body


def _fresh_render(key: tuple) -> str | None:
    with _totals_lock:
        hit = _rendered.get(key)
    return hit[1] if hit is not None and time.monotonic() - hit[0] < RENDERED_MAX_AGE_S else None


def version_key(*parts: Any) -> str:
    """A short stable digest of what a partial shows; the partial's poll sends it back to skip unchanged swaps."""
    raw = json.dumps(parts, default=str, sort_keys=True)
    return hashlib.blake2s(raw.encode(), digest_size=8).hexdigest()


def orphans_version(orphans: list) -> str:
    return version_key([o.id for o in orphans])


def list_version(sessions: list[Session], ended: list[Session]) -> str:
    return version_key([s.id for s in sessions], [s.id for s in ended])


def last_event_id(session: Session) -> int:
    return db.session.scalar(sa.select(sa.func.max(Event.id)).where(Event.session_id == session.id)) or 0


def recent_events(session: Session, limit: int = EVENTS_SHOWN) -> list[Event]:
    """The newest events first."""
    return list(db.session.scalars(sa.select(Event).where(Event.session_id == session.id)
                                   .order_by(Event.id.desc()).limit(limit)))


def gpu_rows(session: Session) -> list[dict[str, Any]]:
    rows = []
    for gpu in (session.engine_state or {}).get("gpus") or []:
        if not isinstance(gpu, dict):
            continue
        total = gpu.get("memory_total_mb") or 0
        used = gpu.get("memory_used_mb") or 0
        rows.append({**gpu, "memory_fraction": (used / total) if total else 0.0})
    return rows


def metrics(session: Session) -> dict[str, Any] | None:
    value = (session.engine_state or {}).get("metrics")
    return value if isinstance(value, dict) and value else None


SAMPLE_FIELDS = ("t", "tokens_per_s", "running", "waiting", "kv_cache_usage", "cost")  # the monitor's sample rows


def sample_columns(session: Session) -> dict[str, list[float]]:
    """The monitor's samples (a bounded ring) as one column per field, as the session page's charts plot them."""
    samples = (session.engine_state or {}).get("samples") or []
    return {field: [row[i] for row in samples] for i, field in enumerate(SAMPLE_FIELDS)}


def samples_version(session: Session) -> tuple:
    """A new sample always comes last and has a later time: the count and the last row tell a change."""
    samples = (session.engine_state or {}).get("samples") or []
    return (len(samples), samples[-1] if samples else None)


def log_tail(session: Session) -> str:
    return redact(str((session.engine_state or {}).get("log_tail") or ""))


def session_by_uid(name: str, uid: str) -> Session:
    """One exact session (history links name past sessions whose name a live one may reuse)."""
    from app.errors import NotFoundError

    session = db.session.scalar(sa.select(Session).where(Session.uid == uid, Session.name == name))
    if session is None:
        raise NotFoundError(f"no session named '{name}' with that id")
    return session


@dataclass(frozen=True)
class LaunchContext:
    """What "Launch" will use: the project's saved configuration (or the demo defaults)."""

    workdir: str
    demo: bool
    demo_defaults: bool  # demo mode filled in what the project has not saved
    model_id: str | None
    plan: str | None
    region: str | None
    max_model_len: int
    missing: tuple[str, ...]  # settings a real launch needs and the project lacks
    problems: tuple[str, ...]  # settings that could not be read
    hourly_price: float | None = None  # from the cached catalog; None when not known yet
    provider: str = "linode"  # PROVIDER (the simulated cloud in demo mode)
    clouds: tuple[str, ...] = ()  # with no plan saved: the configured providers whose cheapest fit is taken

    @property
    def ready(self) -> bool:
        return not self.missing and not self.problems


def launch_context(workdir: str, demo: bool) -> LaunchContext:
    """Read the project's .env (a local file read; nothing is resolved or fetched)."""
    from app.config import load_settings

    from flask import current_app

    from app.services import providers as providers_service

    settings = load_settings(workdir)
    home = Path(current_app.config["MAIDER_HOME"])
    model = settings.model_id or (sessions_service.DEMO_DEFAULTS["model_id"] if demo else None)
    plan = settings.plan or (sessions_service.DEMO_DEFAULTS["plan"] if demo else None)
    region = settings.region or (sessions_service.DEMO_DEFAULTS["region"] if demo else None)
    configured = () if demo else tuple(providers_service.configured_providers(settings, home))
    clouds = configured if plan is None and configured not in ((), (settings.provider,)) else ()
    needed = (("model (MODEL_ID)", model),) + ((("region (REGION)", region),) if not clouds else ())
    missing = tuple(label for label, value in needed if not value)
    if not demo and not clouds and settings.provider not in configured and settings.provider != "simulated":
        missing += ("Linode token (LINODE_TOKEN)" if settings.provider == "linode" else
                    f"{settings.provider} credentials ({providers_service.HOW_TO_CONFIGURE[settings.provider]})",)
    problems = tuple(str(p) for p in settings.problems)
    defaults = demo and not (settings.model_id and settings.region)
    price = sessions_service.quote_hourly_price(workdir, plan, region, demo=demo)
    return LaunchContext(workdir, demo, defaults, model, plan, region, settings.max_model_len, missing, problems,
                         price, "simulated" if demo else settings.provider, clouds)
