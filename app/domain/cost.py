"""Cost and duration arithmetic, and how money and time are written for people.

Billing starts at the provider's creation time and stops only when the instance is deleted. maider accrues cost by the
second on every cloud: DigitalOcean and AWS bill GPU instances per second (AWS with a 60 s minimum), Linode bills
hourly up to a monthly cap without documenting partial-hour rounding, and your own host costs what you said it does.
So every figure here is an estimate and labelled as such.
"""
from __future__ import annotations

from datetime import datetime, timedelta


def runtime(started_at: datetime | None, ended_at: datetime | None, now: datetime) -> timedelta:
    """Billable runtime: from provider creation to deletion (or now while the VM exists)."""
    if started_at is None:
        return timedelta(0)
    end = ended_at or now
    return max(end - started_at, timedelta(0))


def accrued_cost(hourly_price: float, elapsed: timedelta) -> float:
    """Estimated USD spent over ``elapsed`` at ``hourly_price``."""
    return hourly_price * elapsed.total_seconds() / 3600.0


def cost_per_million_tokens(hourly_price: float, output_tokens_per_second: float) -> float | None:
    """USD per 1M output tokens at a measured throughput; None when throughput is zero or the price unknown."""
    if output_tokens_per_second <= 0 or hourly_price <= 0:
        return None
    return hourly_price / (output_tokens_per_second * 3600.0) * 1e6


def format_money(amount: float | None) -> str:
    """``$1.05``; four decimals below a cent so a fresh session does not read as free."""
    if amount is None:
        return "—"
    if 0 < abs(amount) < 0.01:
        return f"${amount:.4f}"
    return f"${amount:,.2f}"


def format_duration(elapsed: timedelta | None) -> str:
    """``1h 04m``, ``4m 09s`` or ``12s``."""
    if elapsed is None:
        return "—"
    seconds = int(elapsed.total_seconds())
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h"
