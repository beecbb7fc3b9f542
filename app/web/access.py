"""Who may use the panel, and what they may do.

Every page, partial and form needs a signed-in browser; static files, the sign-in pages, the JSON API (its own
bearer token) and the OpenAI proxy (per-user API keys) are the only exceptions. The role a request needs comes from,
in order: a ``@requires(Role.X)`` on the view, the blueprint's role (settings, setup and team are admin-only), else
the method: reading needs a viewer, anything that changes something an operator. So a new route is never open to
less than an operator by accident.

The signed cookie carries the user's id and a random per-user nonce; removing a user, changing their role or
password, or signing out re-rolls it (or deletes it with the row), which voids every browser session they had. Ids are
never reused, so a removed user's cookie can never name the next user added.
"""
from __future__ import annotations

import hmac
import json
from collections.abc import Callable
from typing import TypeVar

from flask import Flask, current_app, render_template, request, session
from werkzeug.wrappers import Response

from app.models import Role, User
from app.services import users as users_service

F = TypeVar("F", bound=Callable)
ROLE_ATTRIBUTE = "_maider_role"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
PUBLIC_ENDPOINTS = frozenset({"static", "auth.login", "auth.login_post", "auth.invite"})
_USER_KEY = "maider.user"  # per-request cache in the WSGI environ (``g`` can outlive a request under a test context)
SELF_AUTHENTICATED_BLUEPRINTS = frozenset({"api", "proxy"})  # bearer token / per-user API key
BLUEPRINT_ROLES = {"settings": Role.ADMIN, "wizard": Role.ADMIN, "team": Role.ADMIN}
ROLE_WORDS = {Role.VIEWER: "view the panel", Role.OPERATOR: "launch, switch, extend or destroy sessions",
              Role.ADMIN: "manage users, credentials and settings"}


def requires(role: Role) -> Callable[[F], F]:
    """Declare the least role a view needs (overrides the blueprint's and the method's default)."""

    def mark(view: F) -> F:
        setattr(view, ROLE_ATTRIBUTE, role)
        return view

    return mark


def sign_in(user: User) -> None:
    """Bind this browser to ``user`` (a fresh session: nothing an attacker planted before sign-in survives)."""
    session.clear()
    request.environ.pop(_USER_KEY, None)
    session.permanent = True
    session["uid"] = user.id
    session["sn"] = user.session_nonce


def sign_out() -> None:
    """Sign this user out everywhere: a copy of the cookie stops working too."""
    user = current_user()
    session.clear()
    if user is not None:
        users_service.end_sessions(user)
    request.environ.pop(_USER_KEY, None)


def current_user() -> User | None:
    """The signed-in user of this request, or None."""
    if _USER_KEY in request.environ:
        return request.environ[_USER_KEY]
    user = None
    uid, nonce = session.get("uid"), session.get("sn")
    if isinstance(uid, int) and isinstance(nonce, str):
        found = users_service.user_by_id(uid)
        if found is not None and hmac.compare_digest(found.session_nonce.encode(), nonce.encode()):
            user = found
    request.environ[_USER_KEY] = user
    return user


def actor() -> str:
    """The name events record for whoever made this request."""
    user = current_user()
    return user.name if user is not None else "anonymous"


def needed_role() -> Role:
    view = current_app.view_functions.get(request.endpoint or "")
    declared = getattr(view, ROLE_ATTRIBUTE, None)
    if declared is not None:
        return declared
    if request.blueprint in BLUEPRINT_ROLES:
        return BLUEPRINT_ROLES[request.blueprint]
    return Role.VIEWER if request.method in SAFE_METHODS else Role.OPERATOR


def init_app(app: Flask) -> None:
    """Refuse every request that is not signed in (401) or whose user's role is too low (403)."""

    @app.before_request
    def _require_sign_in() -> Response | tuple | None:
        if request.endpoint is None or request.endpoint in PUBLIC_ENDPOINTS:
            return None
        if request.blueprint in SELF_AUTHENTICATED_BLUEPRINTS:
            return None
        user = current_user()
        if user is None:
            return _signed_out()
        role = needed_role()
        if not user.role_enum.allows(role):
            return _forbidden(user, role)
        return None

    @app.context_processor
    def _user_context() -> dict[str, object]:
        user = current_user()
        return {"current_user": user, "may_operate": user is not None and user.role_enum.allows(Role.OPERATOR),
                "may_admin": user is not None and user.role_enum.allows(Role.ADMIN),
                # reached through --share's HTTPS front: the tunnels on the owner's loopback are not reachable
                "on_shared_address": bool(request.environ.get("maider.shared"))}


def _signed_out():
    if request.headers.get("HX-Request") or request.method not in SAFE_METHODS:
        headers = {"HX-Reswap": "none", "HX-Trigger": '{"maider:signed-out": {}}'}
        return "Signed out: sign in again (run 'maider open' on the laptop that runs maider).", 401, headers
    next_path = request.full_path.rstrip("?") if request.method == "GET" else "/"
    from app.web.auth.forms import LoginForm

    return render_template("auth/login.html", next_path=next_path, form=LoginForm(formdata=None)), 401


def _forbidden(user: User, role: Role):
    message = (f"Your role ({user.role}) cannot {ROLE_WORDS[role]}: that needs {role.value}. "
               "Ask an admin if you need it.")
    if request.headers.get("HX-Request"):
        toast = {"maider:toast": {"level": "error", "title": "Not allowed", "message": message}}
        return "", 403, {"HX-Reswap": "none", "HX-Trigger": json.dumps(toast)}
    from app.web.errors import render_error

    return render_error(403, "Not allowed", message)
