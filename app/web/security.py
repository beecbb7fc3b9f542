"""Request guards for a panel that must only ever be driven from this laptop.

- Host allowlist: a page on evil.example that resolves its name to 127.0.0.1 (DNS rebinding) sends
  ``Host: evil.example``; anything but localhost/127.0.0.1/[::1] (with any port) is refused with 403.
- Content-Security-Policy with no inline script and no third-party origin; frames only from localhost (the
  tunnelled Open WebUI is embedded from another local port).
- CSRF (Flask-WTF) is enforced for every POST/PUT/PATCH/DELETE; htmx sends the token from the body's hx-headers.
"""
from __future__ import annotations

import re

from flask import Flask, abort, request

from app.config import LOOPBACK_HOSTS
from werkzeug.wrappers import Response

_HOST_RE = re.compile(r"^(?P<host>\[[0-9a-fA-F:]+\]|[^:]+)(?::(?P<port>\d{1,5}))?$")

CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "connect-src 'self'",
    "frame-src http://127.0.0.1:* http://localhost:*",
    "frame-ancestors 'self'",
    "form-action 'self'",
    "base-uri 'none'",
    "object-src 'none'",
])


def host_is_allowed(host_header: str, extra_hosts: frozenset[str] = frozenset()) -> bool:
    """True for a loopback Host header (optionally with a port), or a host named with ``--share``."""
    match = _HOST_RE.match(host_header.strip().lower())
    if not match:
        return False
    return match["host"] in LOOPBACK_HOSTS or match["host"] in extra_hosts


def init_app(app: Flask) -> None:
    """Register the host guard and the security headers."""

    @app.before_request
    def _guard_host() -> None:
        extra = frozenset(app.config.get("MAIDER_ALLOWED_HOSTS", ()))
        if not host_is_allowed(request.host, extra):
            abort(403, description="This panel only answers requests addressed to localhost.")

    @app.after_request
    def _security_headers(response: Response) -> Response:
        response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault("X-Frame-Options", "SAMEORIGIN")
        if request.path.startswith("/api/") or response.mimetype == "text/html":
            response.headers.setdefault("Cache-Control", "no-store")
        return response
