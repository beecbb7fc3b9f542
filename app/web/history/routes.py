"""History page route."""
from __future__ import annotations

from flask import render_template

from app.models import utcnow
from app.services import sessions as sessions_service
from app.web.history import bp
from app.web.sessions import views


@bp.get("/")
def index():
    """List finished sessions with runtime and cost, and the total spend."""
    now = utcnow()
    rows = [views.view(session, now) for session in sessions_service.history()]
    return render_template("history/index.html", rows=rows, total=sum(row.cost for row in rows),
                           total_runtime=sum((row.runtime for row in rows), start=views.timedelta(0)))
