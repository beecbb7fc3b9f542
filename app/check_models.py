"""GPU check runs (``maider check`` / ``validate-perf``): one row per run, written by its thread as each check ends.

A check run is a handful of verdict lines and a current step, not a benchmark's levels and per-request arrays, so it
has its own small table rather than squeezing into ``benchmark_runs``.
"""
from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from app.benchmark_models import RunState
from app.extensions import db
from app.models import utcnow


class CheckRun(db.Model):
    __tablename__ = "check_runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    session_id: Mapped[int | None] = mapped_column(sa.ForeignKey("sessions.id", ondelete="SET NULL"), index=True)
    session_name: Mapped[str] = mapped_column(sa.String(64), default="")
    kind: Mapped[str] = mapped_column(sa.String(16))  # "check" or "validate-perf"
    status: Mapped[str] = mapped_column(sa.String(16), default=RunState.QUEUED.value, index=True)
    step: Mapped[str] = mapped_column(sa.String(200), default="")  # what it is doing now, for the progress line
    steps_total: Mapped[int] = mapped_column(default=0)  # checks this kind gives a verdict on
    results: Mapped[list] = mapped_column(sa.JSON, default=list)  # [{name, ok, message, fix}] as each check ends
    error: Mapped[str | None] = mapped_column(sa.Text)
    created_by: Mapped[str] = mapped_column(sa.String(64), default="local")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()

    @property
    def state(self) -> RunState:
        return RunState(self.status)

    @property
    def ok(self) -> bool | None:
        """The verdict once done (every check passed); None while it runs or when it did not finish."""
        if self.state != RunState.DONE:
            return None
        return all(r.get("ok") for r in self.results or [])

    def __repr__(self) -> str:
        return f"<CheckRun {self.id} {self.kind} {self.status}>"
