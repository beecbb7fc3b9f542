"""/api/v1: the JSON API the CLI (and anyone scripting maider) talks to."""
from flask import Blueprint

bp = Blueprint("api", __name__, url_prefix="/api/v1")

from app.web.api import routes  # noqa: E402,F401
