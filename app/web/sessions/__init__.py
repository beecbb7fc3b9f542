"""Sessions: the dashboard, the session pages and their live partials."""
from flask import Blueprint

bp = Blueprint("sessions", __name__)

from app.web.sessions import routes  # noqa: E402,F401  (registers the routes on bp)
from app.web.sessions import webui  # noqa: E402,F401  (the link into a session's Open WebUI)
from app.web.sessions import checks  # noqa: E402,F401  (the GPU check buttons)
