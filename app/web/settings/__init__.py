"""Settings: which credentials and configuration maider found, and where (never their values)."""
from flask import Blueprint

bp = Blueprint("settings", __name__, url_prefix="/settings")

from app.web.settings import routes  # noqa: E402,F401
