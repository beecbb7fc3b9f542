"""Sign-in and invite forms: shape only; the users service checks passwords, lock-outs and invites."""
from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import HiddenField, PasswordField, StringField
from wtforms.validators import DataRequired, Length

from app.services.users import MAX_PASSWORD_LENGTH


class _AuthForm(FlaskForm):
    class Meta:
        csrf = False  # CSRFProtect already checks every POST


class LoginForm(_AuthForm):
    name = StringField("User name", validators=[DataRequired(message="Enter your user name."), Length(max=40)])
    password = PasswordField("Password", validators=[DataRequired(message="Enter your password."),
                                                     Length(max=MAX_PASSWORD_LENGTH)])
    next = HiddenField()


class InviteForm(_AuthForm):
    password = PasswordField("Choose a password", validators=[DataRequired(message="Choose a password."),
                                                              Length(max=MAX_PASSWORD_LENGTH)])
    confirm = PasswordField("Type it again", validators=[DataRequired(message="Type the password again."),
                                                         Length(max=MAX_PASSWORD_LENGTH)])
