"""Benchmark runs and their per-level results (one row per concurrency level or request rate).

A run keeps the facts of what it measured (model, plan, GPU, price, vLLM version) so it stays comparable after its
session is gone. No secret is stored: a run against another server keeps its URL, never its API key.
"""
from __future__ import annotations

import enum
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.extensions import db
from app.models import utcnow


class RunState(str, enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    def is_finished(self) -> bool:
        return self in (RunState.DONE, RunState.FAILED, RunState.CANCELLED)


class BenchmarkRun(db.Model):
    __tablename__ = "benchmark_runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    session_id: Mapped[int | None] = mapped_column(sa.ForeignKey("sessions.id", ondelete="SET NULL"), index=True)
    session_name: Mapped[str | None] = mapped_column(sa.String(64))  # kept after the session is forgotten
    status: Mapped[str] = mapped_column(sa.String(16), default=RunState.QUEUED.value, index=True)
    error: Mapped[str | None] = mapped_column(sa.Text)
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    settings: Mapped[dict] = mapped_column(sa.JSON, default=dict)  # concurrency, num_prompts, lengths, dataset, ...
    progress: Mapped[dict] = mapped_column(sa.JSON, default=dict)  # level, done, total, output tok/s
    # What was measured: copied from the session (or given for another server) when the run starts.
    where: Mapped[str] = mapped_column(sa.String(8), default="tunnel")  # "tunnel" or "vm"
    base_url: Mapped[str | None] = mapped_column(sa.String(300))  # another OpenAI-compatible server (no key)
    model_id: Mapped[str] = mapped_column(sa.String(200), default="")
    served_name: Mapped[str] = mapped_column(sa.String(100), default="")
    provider: Mapped[str | None] = mapped_column(sa.String(32))
    plan: Mapped[str | None] = mapped_column(sa.String(64))
    region: Mapped[str | None] = mapped_column(sa.String(32))
    gpu: Mapped[str | None] = mapped_column(sa.String(64))
    gpus: Mapped[int | None] = mapped_column()
    hourly_price: Mapped[float] = mapped_column(default=0.0)
    max_model_len: Mapped[int | None] = mapped_column()
    vllm_version: Mapped[str | None] = mapped_column(sa.String(64))
    created_by: Mapped[str] = mapped_column(sa.String(64), default="local")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()

    levels: Mapped[list[BenchmarkLevel]] = relationship(
        back_populates="run", order_by="BenchmarkLevel.position", cascade="all, delete-orphan", lazy="select")

    @property
    def state(self) -> RunState:
        return RunState(self.status)

    @property
    def title(self) -> str:
        """How the run is named in tables and chart legends."""
        where = self.plan or self.base_url or "?"
        return f"#{self.id} {self.served_name or self.model_id} on {where} ({self.where})"

    def __repr__(self) -> str:
        return f"<BenchmarkRun {self.id} {self.status}>"


class BenchmarkLevel(db.Model):
    """One load level's results under ``vllm bench serve --save-result`` key names, and its per-request arrays."""

    __tablename__ = "benchmark_levels"

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(sa.ForeignKey("benchmark_runs.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column()
    max_concurrency: Mapped[int | None] = mapped_column()
    request_rate: Mapped[float | None] = mapped_column()  # None = infinite (all at once)
    results: Mapped[dict] = mapped_column(sa.JSON, default=dict)
    requests: Mapped[dict] = mapped_column(sa.JSON, default=dict)  # input_lens, output_lens, ttfts, itls, ...

    run: Mapped[BenchmarkRun] = relationship(back_populates="levels")
