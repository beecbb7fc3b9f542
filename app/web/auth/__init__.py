"""Signing in: the owner's one-time link, teammates' passwords and invites, signing out, one's own proxy key."""
from flask import Blueprint

bp = Blueprint("auth", __name__)

from app.web.auth import routes  # noqa: E402,F401
