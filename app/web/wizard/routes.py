"""Setup wizard routes."""
from __future__ import annotations

from flask import render_template

from app.web.wizard import bp


@bp.get("/")
def index():
    """The wizard page."""
    return render_template("wizard/index.html")
