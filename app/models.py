"""SQLAlchemy models: sessions (one cloud VM each), their events, and orphan instances found by the reconciler.

The database row is the state: workers hold nothing in memory between steps. No secret ever lands in these tables --
the vLLM API key and SSH keys live in files under MAIDER_HOME (see ``app.services.session_files``).
"""
from __future__ import annotations

import enum
import secrets
import uuid
from datetime import datetime, timezone

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.extensions import db


def utcnow() -> datetime:
    """Naive UTC 'now': SQLite stores no zone, so every timestamp in the database is naive UTC."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


class SessionState(str, enum.Enum):
    REQUESTED = "requested"
    CREATING = "creating"
    BOOTING = "booting"
    CONFIGURING = "configuring"
    REBOOTING = "rebooting"
    STARTING = "starting"
    READY = "ready"
    SWITCHING_MODEL = "switching_model"
    DESTROYING = "destroying"
    DESTROYED = "destroyed"
    FAILED = "failed"

    def is_terminal(self) -> bool:
        """No VM can exist any more (destroyed), or nothing more will happen without the user (failed)."""
        return self in (SessionState.DESTROYED, SessionState.FAILED)

    def is_launching(self) -> bool:
        return self in LAUNCH_STATES

    def is_active(self) -> bool:
        """A worker has something to do for this session."""
        return self not in (SessionState.READY, SessionState.DESTROYED, SessionState.FAILED)

    def may_cost_money(self) -> bool:
        """A VM may exist at the provider in this state."""
        return self not in (SessionState.REQUESTED, SessionState.DESTROYED)

    @property
    def label(self) -> str:
        return _STATE_LABELS[self]


_STATE_BY_VALUE = {state.value: state for state in SessionState}

LAUNCH_STATES = (
    SessionState.REQUESTED, SessionState.CREATING, SessionState.BOOTING,
    SessionState.CONFIGURING, SessionState.REBOOTING, SessionState.STARTING,
)

_STATE_LABELS = {
    SessionState.REQUESTED: "Requested",
    SessionState.CREATING: "Creating VM",
    SessionState.BOOTING: "Booting",
    SessionState.CONFIGURING: "Installing drivers",
    SessionState.REBOOTING: "Rebooting",
    SessionState.STARTING: "Starting vLLM",
    SessionState.READY: "Ready",
    SessionState.SWITCHING_MODEL: "Switching model",
    SessionState.DESTROYING: "Destroying",
    SessionState.DESTROYED: "Destroyed",
    SessionState.FAILED: "Failed",
}

_S = SessionState
# The only moves a session may make. FAILED -> DESTROYING lets a kept-for-debugging VM be destroyed later;
# FAILED -> SWITCHING_MODEL lets a user try another model on a VM that was kept.
ALLOWED_TRANSITIONS: dict[SessionState, frozenset[SessionState]] = {
    _S.REQUESTED: frozenset({_S.CREATING, _S.DESTROYING, _S.DESTROYED, _S.FAILED}),
    _S.CREATING: frozenset({_S.BOOTING, _S.DESTROYING, _S.FAILED}),
    _S.BOOTING: frozenset({_S.CONFIGURING, _S.DESTROYING, _S.FAILED}),
    _S.CONFIGURING: frozenset({_S.REBOOTING, _S.STARTING, _S.DESTROYING, _S.FAILED}),
    _S.REBOOTING: frozenset({_S.STARTING, _S.DESTROYING, _S.FAILED}),
    _S.STARTING: frozenset({_S.READY, _S.DESTROYING, _S.FAILED}),
    _S.READY: frozenset({_S.SWITCHING_MODEL, _S.STARTING, _S.DESTROYING, _S.FAILED}),
    _S.SWITCHING_MODEL: frozenset({_S.READY, _S.DESTROYING, _S.FAILED}),
    _S.DESTROYING: frozenset({_S.DESTROYED, _S.FAILED}),
    _S.DESTROYED: frozenset(),
    _S.FAILED: frozenset({_S.DESTROYING, _S.SWITCHING_MODEL, _S.DESTROYED}),
}


class Reason(str, enum.Enum):
    """Why a session was failed or destroyed; required by ``transition`` for those targets."""

    USER_REQUESTED = "user_requested"
    WATCHDOG_IDLE = "watchdog_idle"
    MAX_LIFETIME = "max_lifetime"
    BUDGET_EXCEEDED = "budget_exceeded"
    LAUNCH_FAILED = "launch_failed"
    LAUNCH_TIMEOUT = "launch_timeout"
    PROVIDER_ERROR = "provider_error"
    AUTH_ERROR = "auth_error"
    NO_CAPACITY = "no_capacity"
    SSH_UNREACHABLE = "ssh_unreachable"
    HOST_KEY_MISMATCH = "host_key_mismatch"
    CLOUD_INIT_ERROR = "cloud_init_error"
    VLLM_FAILED = "vllm_failed"
    VANISHED = "vanished"
    FAILSAFE = "failsafe"  # the VM deleted itself (maider silent, or its lifetime or budget ran out)
    FORCED_CLEANUP = "forced_cleanup"
    INTERNAL_ERROR = "internal_error"


# A live session (its VM not confirmed gone) holds its name: at most one live row per name, decided by SQLite, so
# concurrent launches with one name cannot both succeed. services.sessions.live_clause() is the same condition.
LIVE_NAME_INDEX = "uq_sessions_live_name"
LIVE_NAME_WHERE = "destroyed_at IS NULL"


class Session(db.Model):
    __tablename__ = "sessions"
    __table_args__ = (sa.Index(LIVE_NAME_INDEX, "name", unique=True, sqlite_where=sa.text(LIVE_NAME_WHERE)),)

    id: Mapped[int] = mapped_column(primary_key=True)
    uid: Mapped[str] = mapped_column(sa.String(36), unique=True, default=lambda: uuid.uuid4().hex)
    name: Mapped[str] = mapped_column(sa.String(64), index=True)  # unique among live sessions (LIVE_NAME_INDEX)
    provider: Mapped[str] = mapped_column(sa.String(32))
    instance_id: Mapped[str | None] = mapped_column(sa.String(64), index=True)
    label: Mapped[str] = mapped_column(sa.String(64), unique=True)  # provider label: the idempotency key
    region: Mapped[str] = mapped_column(sa.String(32))
    plan: Mapped[str] = mapped_column(sa.String(64))
    gpus: Mapped[int] = mapped_column(default=1)
    gpu_name: Mapped[str | None] = mapped_column(sa.String(64))
    model_id: Mapped[str] = mapped_column(sa.String(200))
    served_name: Mapped[str] = mapped_column(sa.String(100))
    vllm_config: Mapped[dict] = mapped_column(sa.JSON, default=dict)  # max_model_len, tp, dtype, ... (no secrets)
    hourly_price: Mapped[float] = mapped_column(default=0.0)

    status: Mapped[str] = mapped_column(sa.String(32), default=SessionState.REQUESTED.value, index=True)
    status_reason: Mapped[str | None] = mapped_column(sa.String(32))
    status_message: Mapped[str | None] = mapped_column(sa.Text)
    status_changed_at: Mapped[datetime] = mapped_column(default=utcnow)
    stage_detail: Mapped[str | None] = mapped_column(sa.String(200))  # e.g. "downloading weights 41%"

    ssh_host: Mapped[str | None] = mapped_column(sa.String(255))
    ssh_port: Mapped[int] = mapped_column(default=22)
    api_port: Mapped[int | None] = mapped_column()  # local tunnel port for vLLM
    webui_port: Mapped[int | None] = mapped_column()  # local tunnel port for Open WebUI
    tunnel_state: Mapped[str] = mapped_column(sa.String(16), default="down")
    max_model_len: Mapped[int | None] = mapped_column()  # as reported by vLLM's /v1/models

    workdir: Mapped[str | None] = mapped_column(sa.String(1024))  # the user's project: .env and aider files live here
    keep_on_failure: Mapped[bool] = mapped_column(default=False)
    destroy_requested_at: Mapped[datetime | None] = mapped_column()  # set by the user; the worker acts on it
    heal_attempts: Mapped[int] = mapped_column(default=0)
    destroy_attempts: Mapped[int] = mapped_column(default=0)
    budget_usd: Mapped[float] = mapped_column(default=0.0)
    idle_timeout_minutes: Mapped[int | None] = mapped_column()  # None = watchdog off for this session
    max_lifetime_hours: Mapped[float] = mapped_column(default=0.0)
    last_activity_at: Mapped[datetime | None] = mapped_column()
    watchdog_warned_at: Mapped[datetime | None] = mapped_column()

    created_by: Mapped[str] = mapped_column(sa.String(64), default="local")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    provider_created_at: Mapped[datetime | None] = mapped_column()  # billing starts here
    ready_at: Mapped[datetime | None] = mapped_column()
    destroyed_at: Mapped[datetime | None] = mapped_column()

    # Worker bookkeeping (see app.engine.claims): a compare-and-swap lease, and the schedule of the next step.
    lease_token: Mapped[str | None] = mapped_column(sa.String(32))
    lease_expires_at: Mapped[datetime | None] = mapped_column()
    last_processed_at: Mapped[datetime | None] = mapped_column()
    next_attempt_at: Mapped[datetime | None] = mapped_column()
    stage_started_at: Mapped[datetime | None] = mapped_column()
    deadline_at: Mapped[datetime | None] = mapped_column()
    poll_count: Mapped[int] = mapped_column(default=0)
    engine_state: Mapped[dict] = mapped_column(sa.JSON, default=dict)  # step scratch: boot id, stage times, ...

    events: Mapped[list[Event]] = relationship(
        back_populates="session", order_by="Event.id", cascade="all, delete-orphan", lazy="select",
    )

    @property
    def state(self) -> SessionState:
        # A dict lookup, not SessionState(...): templates read this hundreds of times per dashboard render.
        try:
            return _STATE_BY_VALUE[self.status]
        except KeyError:
            raise ValueError(f"{self.status!r} is not a valid SessionState") from None

    @property
    def billing_started_at(self) -> datetime | None:
        if self.provider_created_at:
            return self.provider_created_at
        return self.created_at if self.instance_id else None

    def __repr__(self) -> str:
        return f"<Session {self.id} {self.name} {self.status}>"


def vm_may_bill_clause():
    """SQL: sessions whose VM may exist at the provider and bill -- every session not confirmed gone, once a VM
    was (or may have been) asked for. The watchdog's budget and lifetime limits apply to all of them."""
    return sa.and_(
        Session.destroyed_at.is_(None),
        Session.status.notin_([SessionState.REQUESTED.value, SessionState.DESTROYED.value]),
        sa.or_(Session.status != SessionState.FAILED.value, Session.instance_id.is_not(None)),
    )


class Event(db.Model):
    """One thing that happened to a session: a state change, a stage, a heal, a user action."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(primary_key=True)
    session_id: Mapped[int | None] = mapped_column(sa.ForeignKey("sessions.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    kind: Mapped[str] = mapped_column(sa.String(32))  # "state", "stage", "heal", "action", "tunnel", "error", ...
    message: Mapped[str] = mapped_column(sa.Text)
    actor: Mapped[str] = mapped_column(sa.String(64), default="maider")  # who did it: "maider", "local", a user
    detail: Mapped[dict] = mapped_column(sa.JSON, default=dict)  # structured facts, e.g. {"from": .., "to": ..}

    session: Mapped[Session | None] = relationship(back_populates="events")

    def __repr__(self) -> str:
        return f"<Event {self.id} {self.kind} {self.message[:40]!r}>"


class OrphanInstance(db.Model):
    """A maider-tagged instance the provider lists but no session owns: offered for adopt/destroy."""

    __tablename__ = "orphan_instances"
    __table_args__ = (sa.UniqueConstraint("provider", "instance_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    provider: Mapped[str] = mapped_column(sa.String(32))
    instance_id: Mapped[str] = mapped_column(sa.String(64))
    label: Mapped[str] = mapped_column(sa.String(64))
    region: Mapped[str] = mapped_column(sa.String(32))
    plan: Mapped[str] = mapped_column(sa.String(64))
    hourly_price: Mapped[float] = mapped_column(default=0.0)
    provider_created_at: Mapped[datetime | None] = mapped_column()
    first_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)


class Role(str, enum.Enum):
    """What a panel user may do. Each role includes everything the roles before it may do."""

    VIEWER = "viewer"  # sessions, cost, history, benchmarks
    OPERATOR = "operator"  # also launch, switch, extend, destroy
    ADMIN = "admin"  # also users, credentials, settings

    @property
    def rank(self) -> int:
        return _ROLE_RANK[self]

    def allows(self, needed: Role) -> bool:
        return self.rank >= needed.rank


_ROLE_RANK = {Role.VIEWER: 0, Role.OPERATOR: 1, Role.ADMIN: 2}


class User(db.Model):
    """Someone who may sign in to the panel. The laptop's owner is a user too (``is_owner``): it signs in through the
    one-time URL that ``maider serve`` prints and has no password."""

    __tablename__ = "users"
    __table_args__ = {"sqlite_autoincrement": True}  # a removed user's id is never handed to the next one

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(40), unique=True)
    role: Mapped[str] = mapped_column(sa.String(16), default=Role.VIEWER.value)
    is_owner: Mapped[bool] = mapped_column(default=False)
    password_hash: Mapped[str | None] = mapped_column(sa.String(255))  # None until the invite is accepted
    # Random, carried in the signed cookie; re-rolled on role change, password change and sign-out, which voids
    # every browser session the user had (and removal voids them with the row).
    session_nonce: Mapped[str] = mapped_column(sa.String(32), default=lambda: secrets.token_hex(16))
    failed_logins: Mapped[int] = mapped_column(default=0)
    failed_window_started_at: Mapped[datetime | None] = mapped_column()
    locked_until: Mapped[datetime | None] = mapped_column()
    created_by: Mapped[str] = mapped_column(sa.String(64), default="maider")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column()

    invites: Mapped[list[Invite]] = relationship(back_populates="user", cascade="all, delete-orphan")
    api_keys: Mapped[list[ApiKey]] = relationship(back_populates="user", cascade="all, delete-orphan")

    @property
    def role_enum(self) -> Role:
        return Role(self.role)

    def __repr__(self) -> str:
        return f"<User {self.name} {self.role}>"


class Invite(db.Model):
    """A single-use link where a new teammate chooses a password. Only the token's SHA-256 is stored."""

    __tablename__ = "invites"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()
    used_at: Mapped[datetime | None] = mapped_column()

    user: Mapped[User] = relationship(back_populates="invites")


class ApiKey(db.Model):
    """A user's key for the OpenAI-compatible proxy. Only its SHA-256 is stored; ``prefix`` identifies it in lists."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id", ondelete="CASCADE"), index=True)
    key_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    prefix: Mapped[str] = mapped_column(sa.String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column()

    user: Mapped[User] = relationship(back_populates="api_keys")


class ProxyUsage(db.Model):
    """Requests and tokens one user sent to one session through the proxy (kept after the user is removed)."""

    __tablename__ = "proxy_usage"
    __table_args__ = (sa.UniqueConstraint("session_id", "user_name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    session_id: Mapped[int] = mapped_column(sa.ForeignKey("sessions.id", ondelete="CASCADE"), index=True)
    user_name: Mapped[str] = mapped_column(sa.String(40))
    requests: Mapped[int] = mapped_column(default=0)
    errors: Mapped[int] = mapped_column(default=0)
    prompt_tokens: Mapped[int] = mapped_column(default=0)
    completion_tokens: Mapped[int] = mapped_column(default=0)
    last_request_at: Mapped[datetime | None] = mapped_column()
