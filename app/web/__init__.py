"""Web layer: blueprints for pages, htmx partials and the /api/v1 JSON API."""
from __future__ import annotations

from flask import Flask, request


def wants_partial() -> bool:
    """True for an htmx request that should get a fragment, not a full page (boosted requests get pages)."""
    return bool(request.headers.get("HX-Request")) and not request.headers.get("HX-Boosted")


def init_app(app: Flask) -> None:
    """Register security hooks, template helpers, error pages and every blueprint."""
    from app.web import errors, filters, security
    from app.web.api import bp as api_bp
    from app.web.history import bp as history_bp
    from app.web.sessions import bp as sessions_bp
    from app.web.settings import bp as settings_bp
    from app.web.wizard import bp as wizard_bp

    security.init_app(app)
    filters.init_app(app)
    errors.init_app(app)
    app.register_blueprint(sessions_bp)
    app.register_blueprint(history_bp)
    app.register_blueprint(settings_bp)
    app.register_blueprint(api_bp)
    app.register_blueprint(wizard_bp)
    nav = [("sessions.index", "Sessions"), ("history.index", "History"), ("wizard.index", "Setup"),
           ("settings.index", "Settings")]

    @app.context_processor
    def _layout_context() -> dict[str, object]:
        return {"demo_mode": app.config.get("MAIDER_DEMO", False), "nav_items": nav}
