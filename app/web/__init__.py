"""Web layer: blueprints for pages, htmx partials and the /api/v1 JSON API."""
from __future__ import annotations

import time
from datetime import timedelta

from flask import Flask, request
from flask.sessions import SecureCookieSessionInterface, SessionMixin
from werkzeug.wrappers import Response

from app.services.login_links import LoginLinks

COOKIE_REFRESH = timedelta(hours=1)  # how often a signed-in cookie's 7-day expiry slides forward
_REFRESHED = "at"  # when the cookie was last signed (seconds since the epoch), kept in the cookie itself


def wants_partial() -> bool:
    """True for an htmx request that should get a fragment, not a full page (boosted requests get pages)."""
    return bool(request.headers.get("HX-Request")) and not request.headers.get("HX-Boosted")


def init_app(app: Flask) -> None:
    """Register security hooks, template helpers, error pages and every blueprint."""
    from app.models import Role
    from app.web import access, errors, filters, security
    from app.web.auth import bp as auth_bp
    from app.web.proxy import bp as proxy_bp
    from app.web.rate_limit import limiter
    from app.web.team import bp as team_bp
    from app.web.api import bp as api_bp
    from app.web.benchmarks import bp as benchmarks_bp
    from app.web.history import bp as history_bp
    from app.web.sessions import bp as sessions_bp
    from app.web.settings import bp as settings_bp
    from app.web.wizard import bp as wizard_bp

    _configure_cookie(app)
    app.extensions["maider_login_links"] = LoginLinks()
    security.init_app(app)
    access.init_app(app)
    limiter.init_app(app)
    filters.init_app(app)
    errors.init_app(app)
    app.register_blueprint(sessions_bp)
    app.register_blueprint(history_bp)
    app.register_blueprint(benchmarks_bp)
    app.register_blueprint(settings_bp)
    app.register_blueprint(api_bp)
    app.register_blueprint(wizard_bp)
    app.register_blueprint(auth_bp)
    app.register_blueprint(team_bp)
    app.register_blueprint(proxy_bp)
    # (endpoint, label[, least role]): a link shows only to users who may open it; Settings stays last.
    nav = [("sessions.index", "Sessions"), ("history.index", "History"), ("benchmarks.index", "Benchmarks"),
           ("wizard.index", "Setup", Role.ADMIN),
           ("team.index", "Team", Role.ADMIN), ("settings.index", "Settings", Role.ADMIN)]

    @app.context_processor
    def _layout_context() -> dict[str, object]:
        items = [(entry[0], entry[1], entry[2] if len(entry) > 2 else Role.VIEWER) for entry in nav]
        return {"demo_mode": app.config.get("MAIDER_DEMO", False), "nav_items": items}


def _configure_cookie(app: Flask) -> None:
    """The sign-in cookie: named for the port (two maider servers on one laptop keep apart), HttpOnly, sent only on
    requests this panel's own pages start (SameSite=Strict), Secure over TLS."""
    port = app.config.get("MAIDER_PORT")
    if app.config.get("SESSION_COOKIE_NAME") in (None, "session"):  # Flask's default: name it for maider
        app.config["SESSION_COOKIE_NAME"] = f"maider_{port}" if port else "maider_session"
    app.config["SESSION_COOKIE_HTTPONLY"] = True
    app.config["SESSION_COOKIE_SAMESITE"] = "Strict"
    app.config["SESSION_COOKIE_SECURE"] = bool(app.config.get("MAIDER_TLS"))
    app.session_interface = _SecureOverTlsSessions()
    app.config.setdefault("PERMANENT_SESSION_LIFETIME", timedelta(days=7))
    app.config["SESSION_REFRESH_EACH_REQUEST"] = False  # _SecureOverTlsSessions slides the expiry once an hour


class _SecureOverTlsSessions(SecureCookieSessionInterface):
    """Mark the cookie Secure on every request that came over HTTPS (``--share``'s front), whatever the config; and
    slide a signed-in cookie's expiry (re-sign it) once an hour, not on every answer: an open tab polls every
    second, and signing a cookie per poll was a fifth of what an idle poll cost."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return bool(app.config["SESSION_COOKIE_SECURE"]) or request.is_secure

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        if session and session.permanent and not session.modified:
            now = int(time.time())
            if now - int(session.get(_REFRESHED, 0) or 0) >= COOKIE_REFRESH.total_seconds():
                session[_REFRESHED] = now  # modified: Flask sends the cookie with a new expiry
        super().save_session(app, session, response)
