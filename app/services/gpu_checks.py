"""GPU checks of a ready session, for the CLI, the API and the session page's buttons.

The user waits for the verdict, so the checks run in the request's thread (bounded: seconds for ``check``, about
a minute for ``validate-perf``); each result is also recorded in the session's events.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from flask import Flask

from app.domain.gpu_checks import CheckResult
from app.engine import gpu_checks as engine_checks
from app.engine.identity import load_identity
from app.engine.runtime import runtime
from app.engine.state import record_event
from app.errors import UserError
from app.extensions import db
from app.models import SessionState
from app.services import sessions as sessions_service

KINDS = {"check": engine_checks.check, "validate-perf": engine_checks.validate_perf}


@dataclass(frozen=True)
class Report:
    kind: str
    session: str
    results: list[CheckResult]

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)

    def as_dict(self) -> dict[str, object]:
        return {"kind": self.kind, "session": self.session, "ok": self.ok,
                "checks": [r.as_dict() for r in self.results]}


def run(app: Flask, name: str, kind: str, actor: str) -> Report:
    """Run ``check`` or ``validate-perf`` on a ready session and record the verdict."""
    session = sessions_service.get_session(name)
    if session.state != SessionState.READY or not session.api_port:
        raise UserError(f"session '{session.name}' is {session.state.label.lower()}; GPU checks need a ready "
                        "session")
    identity = load_identity(Path(app.config["MAIDER_HOME"]), session.uid)
    results = KINDS[kind](runtime(app), session, identity)
    report = Report(kind, session.name, results)
    failed = [r for r in results if not r.ok]
    message = (f"{kind}: all {len(results)} checks passed" if not failed
               else f"{kind} failed: " + "; ".join(f"{r.name}: {r.message}" for r in failed))
    record_event(session, "check", message[:500], actor=actor, ok=report.ok,
                 checks=[r.as_dict() for r in results])
    db.session.commit()
    return report
