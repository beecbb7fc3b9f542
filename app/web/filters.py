"""Jinja filters and globals: money, durations, times and vendored assets, formatted one way everywhere."""
from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from flask import Flask, url_for

from app.domain.cost import format_duration, format_money

VENDOR_ASSETS = {
    "htmx": "vendor/htmx-2.0.11.min.js",
    "chart": "vendor/chart-4.6.1.umd.min.js",
}


def _format_time(value: datetime | None) -> str:
    """ISO-8601 UTC; the browser-side script rewrites <time> elements into local time."""
    if value is None:
        return "—"
    return value.strftime("%Y-%m-%d %H:%M:%S UTC")


def _iso(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value else ""


def _asset_url(key: str) -> str:
    return url_for("static", filename=VENDOR_ASSETS[key])


def _static_v(filename: str) -> str:
    """Cache-busting static URL: the file's mtime as a query string."""
    from flask import current_app

    try:  # one stat, not an exists() and a stat(): a page names several files and every poll counts
        version = int((Path(current_app.static_folder or "") / filename).stat().st_mtime)
    except OSError:
        version = 0
    return url_for("static", filename=filename, v=version)


def _pct(value: float | None) -> str:
    """A 0..1 fraction as ``41%``."""
    if value is None:
        return "—"
    return f"{float(value) * 100:.0f}%"


def _sentence(text: str | None) -> str:
    """A service message shown on its own: capital first letter, full stop (``the model is gated`` reads as a
    sentence)."""
    text = (text or "").strip()
    if not text:
        return text
    first = text.split(" ", 1)[0].rstrip(":,;")
    if first.isalpha() and first.islower():  # "vLLM", a model id or a path keep their own case
        text = text[:1].upper() + text[1:]
    return text if text.endswith((".", "!", "?", ")")) else text + "."


def _problem_points(message: str | None) -> list[str]:
    """A service message listing several problems ("cannot launch: a; b") as separate points, for reading."""
    text = (message or "").strip()
    head, sep, rest = text.partition(":\n")  # "cannot launch:\n  ✗ a\n  ✗ b"
    if sep and head.lower().startswith("cannot "):
        return [point.strip().removeprefix("✗ ") for point in rest.splitlines() if point.strip()]
    head, sep, rest = text.partition(": ")
    if sep and head.lower().startswith("cannot ") and "; " in rest:
        return [point.strip() for point in rest.split("; ") if point.strip()]
    return [text] if text else []


def _session_view(session, now: datetime | None = None):
    from app.web.sessions import views

    return views.view(session, now)


def _aider_command(session) -> str:
    from app.services import aider as aider_service

    return aider_service.command_for(session)


def init_app(app: Flask) -> None:
    """Register filters and globals on the app's Jinja environment."""
    from app.web.sessions import views

    app.jinja_env.filters["pct"] = _pct
    app.jinja_env.filters["sentence"] = _sentence
    app.jinja_env.filters["folder_name"] = lambda path: "in " + (str(path).rstrip("/").rsplit("/", 1)[-1] or "/") + "/"
    app.jinja_env.filters["problem_points"] = _problem_points
    app.jinja_env.filters["session_view"] = _session_view
    app.jinja_env.filters["aider_command"] = _aider_command
    app.jinja_env.filters["plan_label"] = views.plan_label
    app.jinja_env.filters["badge_class"] = views.badge_class
    app.jinja_env.filters["tunnel_class"] = views.tunnel_class
    app.jinja_env.filters["can_destroy"] = views.can_destroy
    app.jinja_env.filters["can_switch"] = views.can_switch
    app.jinja_env.filters["shows_webui"] = views.shows_webui
    app.jinja_env.filters["money"] = format_money
    app.jinja_env.filters["duration"] = lambda v: format_duration(v if isinstance(v, timedelta) or v is None
                                                                  else timedelta(seconds=float(v)))
    app.jinja_env.filters["utctime"] = _format_time
    app.jinja_env.filters["iso"] = _iso
    app.jinja_env.globals["vendor_asset"] = _asset_url
    app.jinja_env.globals["static_v"] = _static_v
