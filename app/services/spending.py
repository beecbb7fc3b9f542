"""Where the money went, for the charts: spend per day, per model and per plan, from each VM's billed interval.

A VM is billed from its creation at the provider until its deletion was confirmed (or now, while it lives); a day's
spend is the part of that interval inside the day (UTC) at the VM's hourly price."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta

import sqlalchemy as sa

from app.extensions import db
from app.models import Session


@dataclass(frozen=True)
class Billed:
    start: datetime
    end: datetime
    hourly_price: float
    model_id: str
    plan: str


@dataclass(frozen=True)
class Series:
    """One chart: labels along the x axis and one value per label (USD)."""

    labels: list[str]
    values: list[float]

    def as_chart(self, label: str) -> dict:
        return {"labels": self.labels, "datasets": [{"label": label, "data": [round(v, 4) for v in self.values]}]}


def billed_intervals(now: datetime) -> list[Billed]:
    """Every VM maider billed, narrow columns only (the dashboard renders this on each page load)."""
    rows = db.session.execute(sa.select(
        Session.provider_created_at, Session.created_at, Session.instance_id, Session.destroyed_at,
        Session.hourly_price, Session.model_id, Session.plan).where(Session.instance_id.is_not(None))).all()
    billed = []
    for provider_created_at, created_at, _instance, destroyed_at, price, model_id, plan in rows:
        start = provider_created_at or created_at
        end = min(destroyed_at or now, now)
        if start is not None and end > start:
            billed.append(Billed(start, end, price or 0.0, model_id, plan))
    return billed


def _cost(item: Billed, start: datetime, end: datetime) -> float:
    overlap = (min(item.end, end) - max(item.start, start)).total_seconds()
    return max(overlap, 0.0) / 3600 * item.hourly_price


def per_day(billed: list[Billed], now: datetime, days: int) -> Series:
    """Spend on each of the last ``days`` days (UTC), oldest first, today last."""
    first = (now - timedelta(days=days - 1)).date()
    labels, values = [], []
    for offset in range(days):
        day: date = first + timedelta(days=offset)
        start = datetime(day.year, day.month, day.day)
        labels.append(day.strftime("%b %d"))
        values.append(sum(_cost(item, start, start + timedelta(days=1)) for item in billed))
    return Series(labels, values)


def per_key(billed: list[Billed], key: str, limit: int = 8) -> Series:
    """Total spend per model or per plan (``key``), largest first; the rest summed as "other"."""
    totals: dict[str, float] = defaultdict(float)
    for item in billed:
        name = getattr(item, key)
        totals[name.split("/")[-1] if key == "model_id" else name] += _cost(item, item.start, item.end)  # short
    ranked = sorted(totals.items(), key=lambda kv: kv[1], reverse=True)
    head, rest = ranked[:limit], ranked[limit:]
    if rest:
        head.append(("other", sum(v for _, v in rest)))
    return Series([k for k, _ in head], [v for _, v in head])
