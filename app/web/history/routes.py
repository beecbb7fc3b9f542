"""History page route."""
from __future__ import annotations

from flask import render_template

from app.models import utcnow
from app.services import sessions as sessions_service
from app.services import spending
from app.web.history import bp
from app.web.sessions import views


@bp.get("/")
def index():
    """List finished sessions with runtime and cost, and the total spend."""
    now = utcnow()
    rows = [views.view(session, now) for session in sessions_service.history()]
    billed = spending.billed_intervals(now)
    charts = [("chart-per-day", "Spent per day, last 30 days (UTC)", spending.per_day(billed, now, 30), False),
              ("chart-per-model", "Spent per model", spending.per_key(billed, "model_id"), True),
              ("chart-per-plan", "Spent per GPU plan", spending.per_key(billed, "plan"), True)]
    return render_template("history/index.html", rows=rows, total=sum(row.cost for row in rows),
                           total_runtime=sum((row.runtime for row in rows), start=views.timedelta(0)),
                           charts=charts, spend_total=sum(sum(c[2].values) for c in charts[1:2]))
