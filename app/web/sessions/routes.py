"""Dashboard and session pages: thin routes that read the database; workers do the cloud I/O."""
from __future__ import annotations

from flask import render_template

from app.services import sessions as sessions_service
from app.web.sessions import bp


@bp.get("/")
def index():
    """Show every live session with its cost, and the totals."""
    overview = sessions_service.dashboard_overview()
    return render_template("sessions/index.html", overview=overview)
