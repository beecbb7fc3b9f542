"""Team forms: shape only; the users service checks names, roles and duplicates."""
from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import SelectField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Regexp

from app.models import Role
from app.services.users import USER_NAME_RE

ROLE_CHOICES = [(Role.VIEWER.value, "viewer — sees sessions, cost, history"),
                (Role.OPERATOR.value, "operator — also launches, switches, destroys"),
                (Role.ADMIN.value, "admin — also users, credentials, settings")]


class _TeamForm(FlaskForm):
    class Meta:
        csrf = False  # CSRFProtect already checks every POST


class AddUserForm(_TeamForm):
    name = StringField("Name", filters=[lambda v: (v or "").strip().lower()], validators=[
        DataRequired(message="Enter a name."),
        Regexp(f"^{USER_NAME_RE.pattern}$", message="A lowercase letter first, then letters, digits, '.', '_' or '-' "
                                                   "(at most 40).")])
    role = SelectField("Role", choices=[SelectChoice(v, label) for v, label in ROLE_CHOICES], default=Role.VIEWER.value)


class RoleForm(_TeamForm):
    role = SelectField("Role", choices=[SelectChoice(value) for value, _ in ROLE_CHOICES])
