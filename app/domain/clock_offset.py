"""How far the provider's clock is from this laptop's, and the arithmetic to bill on the provider's clock.

Billing runs on the provider's clock: a VM is billed from its ``created`` time (provider's clock) until deletion. A
laptop clock 20 minutes behind would make a fresh VM look as if it were created 20 minutes in the future: runtime,
cost and the budget check all read $0 until the laptop caught up. Each answer of the provider's API carries an HTTP
``Date`` header; the offset (provider minus laptop) is estimated from those, and every provider timestamp is moved
onto the laptop's clock with it before maider compares it with ``now`` -- so every duration maider computes equals the
one the provider bills.
"""
from __future__ import annotations

import statistics
import threading
from collections import deque
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime

AGREEMENT = timedelta(seconds=2)  # HTTP dates have 1 s resolution: clocks closer than this are taken to agree
SAMPLES = 7  # the median of the last few answers: one slow answer does not move the estimate


def parse_http_date(value: str | None) -> datetime | None:
    """An HTTP ``Date`` header as a naive UTC datetime; None when absent or unreadable."""
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(timezone.utc).replace(tzinfo=None)
    return parsed


def parse_iso_utc(value: object) -> datetime | None:
    """A cloud's ISO 8601 time ("2026-11-27T09:00:00", "...Z" or "+00:00") as a naive UTC datetime; None if absent
    or unreadable (Linode's ``created``, DigitalOcean's ``created_at``)."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(timezone.utc).replace(tzinfo=None)
    return parsed


class ClockOffset:
    """The provider's clock minus the laptop's, estimated from the provider's answers (zero until one arrives)."""

    def __init__(self) -> None:
        self._samples: deque[float] = deque(maxlen=SAMPLES)
        self._lock = threading.Lock()

    def observe(self, provider_time: datetime, local_time: datetime) -> None:
        """Record one answer: the provider's ``Date`` and the laptop's UTC time when the answer arrived."""
        with self._lock:
            self._samples.append((provider_time - local_time).total_seconds())

    @property
    def offset(self) -> timedelta:
        with self._lock:
            samples = list(self._samples)
        if not samples:
            return timedelta(0)
        estimate = timedelta(seconds=statistics.median(samples))
        return timedelta(0) if abs(estimate) < AGREEMENT else estimate

    def to_local(self, provider_time: datetime | None) -> datetime | None:
        """``provider_time`` as the laptop's clock read at that moment."""
        return None if provider_time is None else provider_time - self.offset
