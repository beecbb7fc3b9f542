"""Setup wizard: pick a tier, region, GPU plan, model and credentials, validate, and save .env/.env.secrets."""
from flask import Blueprint

bp = Blueprint("wizard", __name__, url_prefix="/setup")

from app.web.wizard import routes  # noqa: E402,F401  (registers the routes on bp)
