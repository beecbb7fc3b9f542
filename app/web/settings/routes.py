"""Settings page routes."""
from __future__ import annotations

from flask import current_app, flash, redirect, render_template, url_for

from app.services import settings as settings_service
from app.web.settings import bp


@bp.get("/")
def index():
    """Show the configuration maider will use and where each credential was found."""
    report = settings_service.settings_report(current_app.config["MAIDER_WORKDIR"])
    return render_template("settings/index.html", report=report)


@bp.post("/plan-cache")
def clear_plan_cache():
    """Forget the cached GPU plans so the next listing asks the provider again."""
    removed = settings_service.clear_plan_cache(current_app.config["MAIDER_HOME"])
    flash("GPU plan cache cleared." if removed else "The GPU plan cache was already empty.", "info")
    return redirect(url_for("settings.index"), code=303)
