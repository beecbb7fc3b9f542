"""Team: admins add teammates (with an invite link), change their roles and remove them."""
from flask import Blueprint

bp = Blueprint("team", __name__, url_prefix="/team")

from app.web.team import routes  # noqa: E402,F401
