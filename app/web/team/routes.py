"""Team page routes (admins only: the access policy gives this blueprint the admin role)."""
from __future__ import annotations

from flask import current_app, render_template, request, url_for

from app.errors import UserError
from app.models import utcnow
from app.services import users as users_service
from app.web.access import actor
from app.web.team import bp
from app.web.team.forms import ROLE_CHOICES, AddUserForm, RoleForm


def invite_url(token: str) -> str:
    """The link a teammate opens: on the shared address when the panel is shared, else this one."""
    base = current_app.config.get("MAIDER_PUBLIC_URL") or request.host_url.rstrip("/")
    return base.rstrip("/") + url_for("auth.invite", token=token)


@bp.get("/")
def index():
    """Users, their roles and state, and the add form."""
    return render_template("team/index.html", **_context(AddUserForm(formdata=None)))


@bp.post("/users")
def add():
    """Add a teammate; the page shows their invite link once."""
    form = AddUserForm()
    new_link = error = None
    if form.validate():
        try:
            invite = users_service.add_user(form.name.data, form.role.data, actor())
        except UserError as exc:
            error = str(exc)
        else:
            new_link = (invite.user.name, invite_url(invite.token))
            form = AddUserForm(formdata=None)
    return _team(form, new_link=new_link, error=error)


@bp.post("/users/<name>/invite")
def reinvite(name: str):
    """A new invite link for a teammate (earlier links stop working)."""
    invite = users_service.reinvite(name, actor())
    return _team(AddUserForm(formdata=None), new_link=(invite.user.name, invite_url(invite.token)))


@bp.post("/users/<name>/role")
def change_role(name: str):
    """Give a teammate another role."""
    form = RoleForm()
    if not form.validate():
        raise UserError("pick viewer, operator or admin")
    users_service.set_role(name, form.role.data, actor())
    return _team(AddUserForm(formdata=None), notice=f"{name} is now {form.role.data}.")


@bp.delete("/users/<name>")
def remove(name: str):
    """Remove a teammate: their sign-ins and API key stop working at once."""
    users_service.remove_user(name, actor())
    return _team(AddUserForm(formdata=None), notice=f"Removed {name}.")


def _team(form: AddUserForm, **extra):
    template = "team/_team.html" if request.headers.get("HX-Request") else "team/index.html"
    return render_template(template, **_context(form, **extra))


def _context(form: AddUserForm, **extra) -> dict:
    return {"users": users_service.list_users(), "form": form, "role_choices": ROLE_CHOICES,
            "now": utcnow(), **extra}
