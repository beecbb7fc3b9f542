"""JSON endpoints. Routes parse input, call one service and serialise; they never call a provider."""
from __future__ import annotations

from flask import current_app, jsonify

from app.web.api import bp


@bp.get("/health")
def health():
    """Say that this is a maider server and whether it runs in demo mode."""
    return jsonify({"ok": True, "service": "maider", "demo": bool(current_app.config.get("MAIDER_DEMO"))})
