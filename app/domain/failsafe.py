"""The failsafe's arithmetic (pure): its token's expiry, the configuration the VM gets, and the deadlines people see.

The VM deletes itself (``cloud_init/maider-failsafe.py``) when maider has been silent for ``silence_minutes`` and vLLM
idle as long, or at the hard lifetime, or when the budget is spent. maider mints a provider token for that, living
just past the session's hard lifetime and never longer than the user's ``MAX_LIFETIME_HOURS``; 24 h when there is
none, renewed while the session lives on.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

DEFAULT_SILENCE_MINUTES = 30  # when neither FAILSAFE_MINUTES nor an idle timeout is set
TOKEN_MARGIN = timedelta(hours=1)  # the token outlives the hard lifetime by this much (a late check still works)
TOKEN_LIFE_WITHOUT_LIMIT = timedelta(hours=24)
RENEW_BEFORE = timedelta(hours=2)  # a token with less left than this is replaced while the session lives
MIN_TOKEN_LIFE = timedelta(minutes=10)


@dataclass(frozen=True)
class Limits:
    """What one session's VM enforces on itself."""

    silence_minutes: int  # maider silent and vLLM idle this long: delete
    max_lifetime_hours: float | None  # since the provider created the VM
    budget_usd: float | None
    hourly_price: float
    started_at: datetime  # the provider's creation time (billing starts here), naive UTC


def silence_minutes(failsafe_minutes: int | None, idle_timeout_minutes: int | None) -> int:
    """FAILSAFE_MINUTES when set, else the idle timeout, else 30 min."""
    return int(failsafe_minutes or idle_timeout_minutes or DEFAULT_SILENCE_MINUTES)


def token_expiry(now: datetime, started_at: datetime | None, session_lifetime_hours: float | None,
                 user_max_lifetime_hours: float | None, silence_minutes: int = DEFAULT_SILENCE_MINUTES) -> datetime:
    """When the session's token should expire: the hard lifetime plus a margin, capped by MAX_LIFETIME_HOURS.

    Without any lifetime the token lives 24 h (maider renews it, see ``needs_renewal``) -- and always long enough to
    outlive a silence that starts now, or the VM would decide to delete itself after its token expired. Never in the
    past.
    """
    cap = timedelta(hours=user_max_lifetime_hours) if user_max_lifetime_hours else TOKEN_LIFE_WITHOUT_LIMIT
    if session_lifetime_hours:
        end = (started_at or now) + timedelta(hours=session_lifetime_hours) + TOKEN_MARGIN
        life = min(end - now, cap)
    else:
        life = max(cap, _silence_cover(silence_minutes) + RENEW_BEFORE)
    return now + max(life, MIN_TOKEN_LIFE)


def needs_renewal(now: datetime, expires_at: datetime, lifetime_end: datetime | None,
                  silence_minutes: int = DEFAULT_SILENCE_MINUTES) -> bool:
    """Renew a token that may run out before the VM could need it: if maider fell silent now, the silence rule fires
    ``silence_minutes`` later, and the token must still work then. Not when the session's own hard lifetime ends
    (and the token covers that) first."""
    if lifetime_end is not None and lifetime_end + TOKEN_MARGIN <= expires_at:
        return False
    return expires_at - now <= _silence_cover(silence_minutes) + RENEW_BEFORE


def _silence_cover(silence_minutes: int) -> timedelta:
    """How long a token must still live for a silence that begins now: the silence, then the check and retries."""
    return timedelta(minutes=silence_minutes) + TOKEN_MARGIN


def vm_config(*, instance_id: str, api_url: str, token: str, limits: Limits, armed_at: datetime,
              written_at: datetime | None = None) -> dict[str, object]:
    """The JSON the VM's failsafe reads (times as Unix seconds; it holds the token: SSH and 0600 only).

    The times are on this laptop's clock; ``written_at`` lets the VM move them onto its own (the config file's
    modification time is the VM's clock at the same moment), so a laptop clock that is off never makes the VM
    delete itself early or late."""
    return {
        "instance_id": str(instance_id), "api_url": api_url, "token": token,
        "silence_minutes": limits.silence_minutes, "max_lifetime_hours": limits.max_lifetime_hours or 0,
        "budget_usd": limits.budget_usd or 0, "hourly_price": limits.hourly_price,
        "started_at": _unix(limits.started_at), "armed_at": _unix(armed_at),
        "written_at": _unix(written_at or armed_at),
    }


def lifetime_end(limits: Limits) -> datetime | None:
    return limits.started_at + timedelta(hours=limits.max_lifetime_hours) if limits.max_lifetime_hours else None


def budget_end(limits: Limits) -> datetime | None:
    if not limits.budget_usd or limits.hourly_price <= 0:
        return None
    return limits.started_at + timedelta(hours=limits.budget_usd / limits.hourly_price)


def silence_deadline(last_heartbeat: datetime, limits: Limits) -> datetime:
    """The earliest the VM deletes itself if maider says nothing more (and nobody uses vLLM)."""
    return last_heartbeat + timedelta(minutes=limits.silence_minutes)


def next_deadline(last_heartbeat: datetime, limits: Limits) -> tuple[datetime, str]:
    """The VM's next self-deletion moment and its reason, as things stand."""
    candidates = [(silence_deadline(last_heartbeat, limits), f"maider silent for {limits.silence_minutes} min")]
    end = lifetime_end(limits)
    if end is not None:
        candidates.append((end, f"maximum lifetime of {limits.max_lifetime_hours:g} h"))
    spent = budget_end(limits)
    if spent is not None:
        candidates.append((spent, f"budget of ${limits.budget_usd:.2f} spent"))
    return min(candidates, key=lambda c: c[0])


def autostop_in(now: datetime, *, idle_timeout_minutes: int | None, idle_since: datetime | None,
                started_at: datetime | None, max_lifetime_hours: float | None, budget_usd: float | None,
                hourly_price: float) -> tuple[timedelta, str] | None:
    """Time left before maider's watchdog stops the VM, and why; None when nothing would stop it."""
    candidates: list[tuple[timedelta, str]] = []
    if idle_timeout_minutes and idle_since is not None:
        candidates.append((idle_since + timedelta(minutes=idle_timeout_minutes) - now, "idle"))
    if started_at is not None and max_lifetime_hours:
        candidates.append((started_at + timedelta(hours=max_lifetime_hours) - now, "lifetime"))
    if started_at is not None and budget_usd and hourly_price > 0:
        candidates.append((started_at + timedelta(hours=budget_usd / hourly_price) - now, "budget"))
    if not candidates:
        return None
    left, why = min(candidates, key=lambda c: c[0])
    return max(left, timedelta(0)), why


def format_left(left: timedelta) -> str:
    """``1 h 05 min``, ``12 min``, ``<1 min``."""
    minutes = int(left.total_seconds() // 60)
    if minutes < 1:
        return "<1 min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min"


def explain_end(now: datetime, last_heartbeat: datetime | None, limits: Limits) -> tuple[str, datetime] | None:
    """Why a VM armed with ``limits`` most likely deleted itself while maider was away, and about when: the earliest
    rule that could have fired since maider last spoke to it. None when none could have fired yet (then someone
    else deleted it)."""
    when, why = next_deadline(last_heartbeat or limits.started_at, limits)
    return (why, when) if when <= now else None


def _unix(moment: datetime) -> float:
    """Naive UTC → Unix seconds."""
    return (moment - datetime(1970, 1, 1)).total_seconds()
