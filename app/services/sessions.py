"""Session use cases: request a launch, destroy, switch model, extend; list and summarise sessions.

Services only write rows and events; the workers in ``app.engine`` do the cloud and SSH I/O. Rules (names, allowed
moves, fit) live here so the panel, the API and the CLI obey the same ones.
"""
from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from app.config import Settings, load_settings
from app.domain.cost import accrued_cost, runtime
from app.domain.models_catalog import catalog_entry
from app.domain.sizing import MIN_CONTEXT_TOKENS
from app.engine import failsafe
from app.engine.claims import claimed
from app.engine.state import record_event, transition
from app.errors import ConfigError, ConflictError, FieldError, NotFoundError, UserError
from app.extensions import db
from app.models import OrphanInstance, Session, SessionState, utcnow
from app.providers import get_provider
from app.services.providers import cheapest_across_providers

NAME_PATTERN = r"[a-z0-9][a-z0-9-]{0,39}"  # matched whole (re.fullmatch): "x\n" is not a name
NAME_RE = re.compile(NAME_PATTERN)
NAME_ATTEMPTS = 20  # an automatic name taken by a concurrent launch moves on to the next number this often
# Project folders the server never writes aider's files into, even when its user owns them (a server run as root).
SYSTEM_DIRS = ("/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/proc", "/run", "/sbin", "/sys",
               "/usr/bin", "/usr/include", "/usr/lib", "/usr/libexec", "/usr/sbin", "/usr/share", "/var/cache",
               "/var/lib", "/var/log", "/var/run", "/var/spool", "/private/etc", "/System")  # the last two: macOS
SYSTEM_ROOTS = ("/", "/usr", "/var")  # refused themselves; folders below them (/usr/local/src/app) are fine
# In demo mode a launch works with no configuration at all.
DEMO_DEFAULTS = {"region": "us-ord", "plan": "g2-gpu-rtx4000a1-s", "model_id": "Qwen/Qwen2.5-Coder-7B-Instruct-AWQ"}


@dataclass(frozen=True)
class SessionCost:
    runtime: timedelta  # billable time so far (or in total, once destroyed)
    cost: float  # estimated USD


@dataclass(frozen=True)
class Overview:
    sessions: list[Session]  # live sessions (not destroyed), newest first
    orphans: list[OrphanInstance]  # maider-tagged VMs no session owns
    burn_rate: float  # USD/h of every VM that may be running now
    spent_today: float  # estimated USD accrued since 00:00 UTC, live and destroyed sessions
    spent_total: float  # estimated USD over all history
    now: datetime


@dataclass(frozen=True)
class LaunchRequest:
    """What the user asked for; None fields come from the project's settings (.env)."""

    workdir: str
    name: str | None = None
    actor: str = "local"
    provider: str | None = None  # pins the cloud; None: PROVIDER, or the cheapest configured cloud when no plan
    region: str | None = None
    plan: str | None = None
    model_id: str | None = None
    served_name: str | None = None
    max_model_len: int | None = None
    tensor_parallel_size: int | None = None
    keep_on_failure: bool = False
    idle_minutes: int | None = None  # autostop after this idle time (0: no idle autostop); None: the settings'
    max_hours: float | None = None  # hard lifetime for this launch (0: none)
    budget_usd: float | None = None  # budget cap for this launch (0: none)


def is_vm_alive(session: Session) -> bool:
    """A VM may exist (and bill) for this session."""
    return session.state.may_cost_money() and session.destroyed_at is None and (
        session.instance_id is not None or session.state.is_launching() or session.state == SessionState.DESTROYING)


def session_cost(session: Session, now: datetime | None = None) -> SessionCost:
    """Runtime and estimated cost from the provider's creation time to deletion (or now)."""
    now = now or utcnow()
    elapsed = runtime(session.billing_started_at, session.destroyed_at, now)
    return SessionCost(elapsed, accrued_cost(session.hourly_price, elapsed))


def get_session(name: str) -> Session:
    """The live session with this name, else the newest destroyed one; NotFoundError if none."""
    session = db.session.scalar(
        sa.select(Session).where(Session.name == name)
        .order_by((Session.status == SessionState.DESTROYED.value), Session.id.desc()).limit(1))
    if session is None:
        raise NotFoundError(f"no session named '{name}' (see 'maider list')")
    return session


def live_clause():
    """Live = on the dashboard and holding its name: the VM is not confirmed gone (destroyed, or failed with the VM
    deleted). The same condition as the unique index on live names (``models.LIVE_NAME_INDEX``)."""
    return Session.destroyed_at.is_(None)


def live_sessions() -> list[Session]:
    """Every session that is not destroyed, newest first."""
    return list(db.session.scalars(
        sa.select(Session).where(Session.status != SessionState.DESTROYED.value).order_by(Session.id.desc())))


def history(limit: int = 200) -> list[Session]:
    """Finished sessions (destroyed, or failed with the VM gone), newest first."""
    return list(db.session.scalars(
        sa.select(Session).where(Session.destroyed_at.is_not(None)).order_by(Session.destroyed_at.desc())
        .limit(limit)))


def dashboard_overview(now: datetime | None = None) -> Overview:
    """Live sessions, orphans and money totals for the dashboard."""
    now = now or utcnow()
    live = list(db.session.scalars(sa.select(Session).where(live_clause()).order_by(Session.id.desc())))
    burn = sum(s.hourly_price for s in live if is_vm_alive(s) and s.instance_id)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    spent_today = spent_total = 0.0
    for session in db.session.scalars(sa.select(Session).where(Session.instance_id.is_not(None))):
        started = session.billing_started_at
        if started is None:
            continue
        spent_total += session_cost(session, now).cost
        if session.destroyed_at is None or session.destroyed_at > midnight:
            spent_today += accrued_cost(session.hourly_price, runtime(max(started, midnight), session.destroyed_at,
                                                                      now))
    orphans = list(db.session.scalars(sa.select(OrphanInstance).order_by(OrphanInstance.first_seen_at)))
    return Overview(live, orphans, burn + sum(o.hourly_price for o in orphans), spent_today, spent_total, now)


NAME_BASE_MAX = 24


def _name_base(text: str) -> str:
    """A slug of ``text`` cut at a word boundary: ``my-project``, never ``qwen2-5-coder-7b-instruc``."""
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    if len(slug) > NAME_BASE_MAX:
        cut = slug[:NAME_BASE_MAX + 1].rsplit("-", 1)[0]
        slug = cut if cut and len(cut) <= NAME_BASE_MAX else slug[:NAME_BASE_MAX]
    return slug.strip("-") or "session"


def _name_for(workdir: str | None, model_id: str) -> str:
    """An automatic name after the project folder (it stays true after a model switch); the model's when none."""
    base = _name_base(Path(workdir).name if workdir and Path(workdir).name else model_id.split("/")[-1])
    taken = set(db.session.scalars(sa.select(Session.name).where(Session.name.like(f"{base}-%"))))
    number = 1
    while f"{base}-{number}" in taken:
        number += 1
    return f"{base}-{number}"


def _effective_settings(request: LaunchRequest, demo: bool) -> Settings:
    settings = load_settings(request.workdir)
    overrides = {k: v for k, v in {
        "region": request.region, "plan": request.plan, "model_id": request.model_id,
        "served_model_name": request.served_name, "max_model_len": request.max_model_len,
        "tensor_parallel_size": request.tensor_parallel_size,
        "max_lifetime_hours": request.max_hours, "budget_usd": request.budget_usd,
    }.items() if v is not None}
    if request.idle_minutes is not None:
        overrides["watchdog_enabled"] = request.idle_minutes > 0
        overrides["watchdog_timeout_minutes"] = request.idle_minutes or settings.watchdog_timeout_minutes
    if request.provider is not None and request.provider != settings.provider and not demo:
        overrides["provider"] = request.provider
        if request.region is None:
            overrides["region"] = None  # REGION is PROVIDER's; the plan's own region is taken instead
    if demo:
        if request.provider not in (None, "simulated"):
            raise UserError(f"the panel runs in demo mode, so it launches only on the simulated cloud, not on "
                            f"{request.provider}: restart 'maider serve' without --demo to use {request.provider}")
        overrides["provider"] = "simulated"
        for attr, value in DEMO_DEFAULTS.items():
            if getattr(settings, attr) is None and attr not in overrides:
                overrides[attr] = value
    return replace(settings, **overrides)


def quote_hourly_price(workdir: str, plan: str | None, region: str | None, *, demo: bool) -> float | None:
    """What the launch would cost per hour, from the cached catalog (never an API call from a page)."""
    from flask import current_app

    from app.engine.runtime import runtime
    from app.services import catalog as catalog_service

    if not plan:
        return None
    engine = runtime(current_app._get_current_object())
    provider_name = "simulated" if demo else load_settings(workdir).provider
    return catalog_service.quoted_price(engine.provider(provider_name, workdir), engine.home, plan, region)


def _with_cheapest_plan(settings: Settings, report) -> Settings:
    """No plan chosen: take the cheapest plan in the region that fits the model at the asked context."""
    for recommendation in report.recommendations:
        regions = recommendation.plan.regions
        if not regions or settings.region in regions:
            return replace(settings, plan=recommendation.plan.id)
    return settings


def _with_region_of_plan(settings: Settings, provider, home: Path) -> Settings:
    """No region (a provider pinned other than PROVIDER): the first region that offers the plan."""
    from app.providers.base import ProviderError
    from app.services import catalog as catalog_service

    try:
        plans = catalog_service.list_plans(provider, home)
    except (ProviderError, ConfigError):
        return settings  # validation then reports what is missing
    plan = next((p for p in plans if p.id == settings.plan), None)
    return replace(settings, region=plan.regions[0]) if plan is not None and plan.regions else settings


def request_launch(request: LaunchRequest, *, home: Path, demo: bool = False, provider=None) -> Session:
    """Validate the request (config, plan in region, model fits) and queue the launch; no VM exists yet.

    The name is checked here for a friendly message; the unique index on live names decides races: a launch that
    loses one gets ConflictError, or, with an automatic name, the next free number.
    """
    from flask import current_app

    from app.engine.runtime import runtime
    from app.services.validation import validate_launch

    settings = _effective_settings(request, demo)
    name = request.name or _name_for(request.workdir, settings.model_id or "session")
    if not NAME_RE.fullmatch(name):
        raise UserError(f"{name!r} is not a valid session name: use lower-case letters, digits and dashes "
                        "(at most 40, starting with a letter or digit)")
    if request.name:
        _refuse_taken(name)
    engine = runtime(current_app._get_current_object())
    chosen = None
    if provider is None and settings.plan is None and settings.model_id and not demo and request.provider is None \
            and request.region is None:
        factory = current_app.config.get("MAIDER_PROVIDER_FACTORY") or get_provider
        chosen = cheapest_across_providers(settings, home, factory)
        if chosen is not None:
            settings = chosen.settings
    provider = provider or engine.provider(settings.provider, request.workdir)
    if settings.region is None and settings.plan:
        settings = _with_region_of_plan(settings, provider, home)
    if settings.plan is None and settings.region and settings.model_id:
        settings = _with_cheapest_plan(settings, validate_launch(settings, provider, home))
    report = validate_launch(settings, provider, home)
    if chosen is not None:
        report.notes.insert(0, chosen.sentence)
    if not report.ok:
        raise UserError("cannot launch:\n" + "\n".join(f"  ✗ {p}" for p in report.problems))  # one problem a line
    for _attempt in range(NAME_ATTEMPTS):
        session = _queue_launch(request, settings, report, name)
        try:
            db.session.commit()
        except sa.exc.IntegrityError:
            db.session.rollback()
            if request.name or not _live_named(name):
                _refuse_taken(name)
                raise
            name = _name_for(request.workdir, settings.model_id or "session")
        else:
            return session
    raise ConflictError("every automatic name was taken by concurrent launches; give this session a name")


def _live_named(name: str) -> Session | None:
    return db.session.scalar(sa.select(Session).where(Session.name == name, live_clause()))


def _refuse_taken(name: str) -> None:
    existing = _live_named(name)
    if existing is not None:
        raise ConflictError(f"a session named '{name}' already exists ({existing.state.label}); pick another name "
                            "or destroy it first")


def _queue_launch(request: LaunchRequest, settings: Settings, report, name: str) -> Session:
    """Add the session row and its first events to the transaction (the caller commits)."""
    plan = report.plan
    fit = report.fit
    tp = settings.tensor_parallel_size or (fit.tp if fit is not None and getattr(fit, "tp", None) else plan.gpus)
    dtype = settings.dtype
    if dtype == "auto" and fit is not None and fit.dtype_flag:
        dtype = fit.dtype_flag
    uid = uuid.uuid4().hex
    session = Session(
        uid=uid, name=name, provider=settings.provider, label=f"maider-{uid[:12]}", region=settings.region,
        plan=plan.id, gpus=plan.gpus, gpu_name=plan.gpu.name if plan.gpu else None, model_id=settings.model_id,
        served_name=settings.served_model_name, hourly_price=plan.hourly_price, workdir=request.workdir,
        keep_on_failure=request.keep_on_failure, created_by=request.actor, budget_usd=settings.budget_usd,
        idle_timeout_minutes=settings.watchdog_timeout_minutes if settings.watchdog_enabled else None,
        max_lifetime_hours=settings.max_lifetime_hours,
        vllm_config={
            "max_model_len": settings.max_model_len, "gpu_memory_utilization": settings.gpu_memory_utilization,
            "max_num_seqs": settings.max_num_seqs, "tensor_parallel_size": tp, "dtype": dtype,
            "kv_cache_dtype": settings.kv_cache_dtype, "enforce_eager": False, "extra_args": settings.extra_args,
        },
    )
    db.session.add(session)
    record_event(session, "action", f"launch requested: {session.model_id} on {plan.id} in {session.region} "
                                    f"at ${plan.hourly_price:.2f}/h", actor=request.actor)
    for note in report.notes:
        record_event(session, "note", note, actor="maider")
    return session


def checked_workdir(path: str) -> str:
    """A project folder a client named: an existing directory the server's user owns, outside the system's folders
    (aider's files, with the API key, are written there). FieldError otherwise."""
    import os

    try:
        resolved = Path(path).resolve()
        owner = resolved.stat().st_uid if resolved.is_dir() else None
    except (OSError, RuntimeError, ValueError):  # a name too long, a symlink loop, a NUL byte
        owner = None
    if owner is None:
        raise FieldError({"workdir": f"{path!r} is not an existing directory"})
    if owner != os.geteuid():
        raise FieldError({"workdir": f"{path!r} belongs to another user; use a folder of your own"})
    text = str(resolved)
    if text in SYSTEM_ROOTS or any(text == d or text.startswith(d + "/") for d in SYSTEM_DIRS):
        raise FieldError({"workdir": f"{path!r} is a system folder; use your project's folder"})
    return text


def request_destroy(name: str, actor: str = "local") -> Session:
    """Ask the workers to destroy the session's VM (they confirm the deletion before marking it destroyed)."""
    session = get_session(name)
    if session.state == SessionState.DESTROYED or (session.state == SessionState.FAILED and session.destroyed_at):
        raise UserError(f"session '{name}' is already destroyed")
    if session.state != SessionState.DESTROYING:
        session.destroy_requested_at = utcnow()
        session.engine_state = {**(session.engine_state or {}), "destroy_requested_by": actor}
        record_event(session, "action", "destroy requested", actor=actor)
        db.session.commit()
    return session


def extend(name: str, actor: str = "local") -> Session:
    """Reset the idle watchdog's timer."""
    session = get_session(name)
    if session.state != SessionState.READY:
        raise UserError(f"session '{name}' is {session.state.label.lower()}; only a ready session can be extended")
    session.last_activity_at = utcnow()
    session.watchdog_warned_at = None
    failsafe.request_extend(session, session.last_activity_at)  # the VM's clock moves at the monitor's next tick
    record_event(session, "action", "watchdog timer reset (extend)", actor=actor)
    db.session.commit()
    return session


def switch_model(name: str, model_id: str, *, home: Path, max_model_len: int | None = None,
                 tensor_parallel_size: int | None = None, actor: str = "local") -> Session:
    """Check the new model fits this VM, then queue the switch (only the vLLM container is recreated)."""
    session = get_session(name)
    if not _can_switch(session):
        raise UserError(f"session '{name}' is {session.state.label.lower()}; switch models once it is ready")
    config = dict(session.vllm_config or {})
    entry = catalog_entry(model_id)
    # the new model's own context (the catalog's), not the old model's; shrunk to what fits unless asked for
    context = max_model_len or (entry.default_context if entry else int(config.get("max_model_len", 32768)))
    tp = tensor_parallel_size or int(config.get("tensor_parallel_size", session.gpus))
    settings = load_settings(session.workdir) if session.workdir else load_settings()
    fit = _check_switch_fit(session, model_id, context, tp, settings, home, shrink=max_model_len is None)
    if fit is not None:
        context = fit.context
    config.update({"max_model_len": context, "tensor_parallel_size": tp,
                   "dtype": (fit.dtype_flag or "auto") if fit is not None else "auto", "enforce_eager": False})
    session_id = session.id
    db.session.rollback()  # the fit check read; the change itself is made under the session's lease
    with claimed(session_id, utcnow) as held:
        if held is None or not _can_switch(held):
            raise UserError(f"session '{name}' is busy (maider is checking or changing it); try again in a moment")
        previous = held.model_id
        held.model_id = model_id
        held.vllm_config = config
        held.engine_state = {**(held.engine_state or {}), "switch_applied": False}
        transition(held, SessionState.SWITCHING_MODEL, actor=actor, message=f"{previous} → {model_id}")
        record_event(held, "action", f"switch model requested: {previous} → {model_id} at {context:,} tokens",
                     actor=actor)
    return db.session.get(Session, session_id)


def _can_switch(session: Session) -> bool:
    """Ready, or failed with its VM kept (a failed switch leaves the VM up for another try)."""
    vm_kept = session.state == SessionState.FAILED and session.destroyed_at is None and session.instance_id
    return session.state == SessionState.READY or bool(vm_kept)


def _check_switch_fit(session: Session, model_id: str, context: int, tp: int, settings: Settings, home: Path,
                      shrink: bool = False):
    """Refuse a model that cannot fit this VM; None when the model cannot be sized (Hub unreachable).

    With ``shrink`` (no context asked for) a context that is only too long for the VRAM becomes the largest that
    fits."""
    from app.domain.gpu_catalog import gpu_of
    from app.providers.base import GpuPlan
    from app.services.model_info import ModelLookupError
    from app.services.validation import check_fit

    plan = GpuPlan(id=session.plan, label=session.plan, gpus=session.gpus,
                   gpu=gpu_of(session.plan, session.gpu_name), hourly_price=session.hourly_price, memory_mb=0, vcpus=0)
    try:
        fit = check_fit(model_id, plan, context, tp, hf_token=settings.hf_token.reveal() if settings.hf_token
                        else None, home=home, gpu_memory_utilization=settings.gpu_memory_utilization)
    except ModelLookupError as exc:
        if exc.failure.is_network:
            record_event(session, "note", f"could not size {model_id} ({exc}); switching without the fit check")
            return None
        raise
    only_context = fit.problems and all(p.setting == "max_model_len" and p.memory for p in fit.problems)
    if not fit.fits and shrink and only_context and fit.max_context >= MIN_CONTEXT_TOKENS:
        return _check_switch_fit(session, model_id, fit.max_context, tp, settings, home)
    if not fit.fits:
        problems = "; ".join(p.message.removeprefix("won't fit: ") for p in fit.problems)
        hint = (f"; the largest context that fits is {fit.max_context:,} tokens"
                if fit.max_context and "largest context" not in problems else "")
        raise UserError(f"{model_id} won't fit on {session.plan}: {problems}{hint}.")
    return fit


def events_for(session: Session, after_id: int = 0, limit: int = 500):
    """The session's events after ``after_id``, oldest first."""
    from app.models import Event

    return list(db.session.scalars(sa.select(Event).where(Event.session_id == session.id, Event.id > after_id)
                                   .order_by(Event.id).limit(limit)))
