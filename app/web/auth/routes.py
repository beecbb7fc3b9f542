"""Sign-in routes. The owner's link and invites are single use; failed passwords are rate-limited per address
(here) and per account (the users service locks an account after ten failures in a minute)."""
from __future__ import annotations

from urllib.parse import urlsplit

from flask import current_app, redirect, render_template, request, url_for

from app.errors import UserError
from app.services import users as users_service
from app.models import Role
from app.web.access import current_user, requires, sign_in, sign_out
from app.web.auth import bp
from app.web.auth.forms import InviteForm, LoginForm
from app.web.rate_limit import limiter


def _safe_next(target: str | None) -> str:
    """Only a path on this panel: never another host, scheme, or protocol-relative URL."""
    target = (target or "").strip()
    parts = urlsplit(target)
    if not target.startswith("/") or target.startswith("//") or parts.scheme or parts.netloc or "\\" in target:
        return url_for("sessions.index")
    return target


def _failed_password(response) -> bool:
    return response.status_code in (400, 401, 429)


@bp.get("/login")
def login():
    """With ``?token=``: redeem the owner's one-time link. Without: the sign-in page."""
    token = request.args.get("token")
    if token is not None:
        if current_app.extensions["maider_login_links"].redeem(token):
            sign_in(users_service.ensure_owner())
            return redirect(_safe_next(request.args.get("next")), code=303)
        return render_template("auth/login.html", form=LoginForm(formdata=None), next_path="/",
                               error="That sign-in link was used already or is no longer valid. Run "
                                     "'maider open' on the laptop that runs maider for a new one."), 401
    if current_user() is not None:
        return redirect(url_for("sessions.index"), code=303)
    return render_template("auth/login.html", form=LoginForm(formdata=None), next_path=request.args.get("next", "/"))


@bp.post("/login")
@limiter.limit("20 per minute", deduct_when=_failed_password,
               error_message="Too many failed sign-ins from this address: wait a minute and try again.")
def login_post():
    """Check a teammate's name and password."""
    form = LoginForm()
    if not form.validate():
        return render_template("auth/login.html", form=form, next_path=_safe_next(form.next.data)), 400
    try:
        user = users_service.authenticate(form.name.data, form.password.data)
    except users_service.LoginRefused as exc:
        return render_template("auth/login.html", form=form, next_path=_safe_next(form.next.data),
                               error=str(exc)[:1].upper() + str(exc)[1:]), 401
    sign_in(user)
    return redirect(_safe_next(form.next.data), code=303)


@bp.post("/logout")
@requires(Role.VIEWER)
def logout():
    """Forget this browser's sign-in."""
    sign_out()
    return redirect(url_for("auth.login"), code=303)


@bp.route("/invite/<token>", methods=["GET", "POST"])
@limiter.limit("30 per minute", methods=["POST"])
def invite(token: str):
    """A new teammate chooses a password, then is signed in."""
    try:
        pending = users_service.pending_invite(token)
    except UserError as exc:
        return render_template("auth/invite.html", form=None, error=_sentence(exc)), 404
    form = InviteForm()
    error = None
    if request.method == "POST" and form.validate():
        try:
            user = users_service.accept_invite(token, form.password.data, form.confirm.data)
        except UserError as exc:
            error = _sentence(exc)
        else:
            sign_in(user)
            return redirect(url_for("sessions.index"), code=303)
    status = 400 if request.method == "POST" else 200
    return render_template("auth/invite.html", form=form, name=pending.user.name, role=pending.user.role,
                           error=error), status


@bp.post("/account/api-key")
@requires(Role.VIEWER)
def new_api_key():
    """Create (or replace) the signed-in user's key for the OpenAI-compatible proxy; shown once."""
    user = current_user()
    key = users_service.create_api_key(user, user.name)
    return render_template("auth/_api_key.html", key=key, prefix=key[:10],
                           session_name=request.form.get("session") or None)


def _sentence(error: Exception) -> str:
    text = str(error)
    return text[:1].upper() + text[1:]
