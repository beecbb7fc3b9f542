"""/api/v1: the JSON API the CLI (and anyone scripting maider) talks to.

Every endpoint but /health needs ``Authorization: Bearer <token>``; the running server writes the token to
MAIDER_HOME/server.json (0600), where the CLI reads it. A browser on another site cannot send that header, so these
endpoints need no CSRF token.
"""
import hmac

from flask import Blueprint, current_app, jsonify, request

from app.extensions import csrf

bp = Blueprint("api", __name__, url_prefix="/api/v1")
csrf.exempt(bp)


@bp.before_request
def _require_token():
    if request.endpoint == "api.health":
        return None
    expected = current_app.config.get("MAIDER_API_TOKEN")
    scheme, _, supplied = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        supplied = ""  # a bare token is refused: only the Bearer scheme carries it (RFC 6750)
    if not expected or not hmac.compare_digest(supplied.strip().encode(), str(expected).encode()):
        return jsonify({"error": "missing or wrong API token: the CLI reads it from MAIDER_HOME/server.json",
                        "status": 401}), 401
    return None


from app.web.api import routes  # noqa: E402,F401
from app.web.api import users  # noqa: E402,F401
from app.web.api import benchmarks  # noqa: E402,F401
from app.web.api import checks  # noqa: E402,F401
