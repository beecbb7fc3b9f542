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

    path = Path(current_app.static_folder or "") / filename
    version = int(path.stat().st_mtime) if path.exists() else 0
    return url_for("static", filename=filename, v=version)


def init_app(app: Flask) -> None:
    """Register filters and globals on the app's Jinja environment."""
    app.jinja_env.filters["money"] = format_money
    app.jinja_env.filters["duration"] = lambda v: format_duration(v if isinstance(v, timedelta) or v is None
                                                                  else timedelta(seconds=float(v)))
    app.jinja_env.filters["utctime"] = _format_time
    app.jinja_env.filters["iso"] = _iso
    app.jinja_env.globals["vendor_asset"] = _asset_url
    app.jinja_env.globals["static_v"] = _static_v
