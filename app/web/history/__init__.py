"""History: finished sessions with what each ran and cost, and the total spend."""
from flask import Blueprint

bp = Blueprint("history", __name__, url_prefix="/history")

from app.web.history import routes  # noqa: E402,F401  (registers the routes on bp)
