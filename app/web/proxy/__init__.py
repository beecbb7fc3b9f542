"""The OpenAI-compatible proxy: teammates reach a session's model with their own key, never the VM's."""
from flask import Blueprint

from app.extensions import csrf

bp = Blueprint("proxy", __name__, url_prefix="/sessions/<name>/openai/v1")
csrf.exempt(bp)  # a per-user bearer key, which a web page cannot send for someone

from app.web.proxy import routes  # noqa: E402,F401
