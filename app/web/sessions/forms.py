"""Forms of the sessions pages: they check shape with the API's rules (app.web.schemas); the services check the rules
that need the database or the provider (fit, names taken, states)."""
from __future__ import annotations

from typing import Any

from flask_wtf import FlaskForm
from wtforms import Field, Form, StringField
from wtforms.validators import DataRequired, Optional, ValidationError

from app.web import schemas
from app.web.fields import context_field


def _strip(value: str | None) -> str | None:
    value = (value or "").strip()
    return value or None


class Follows:
    """A WTForms validator that applies one of the API's rules, so a form and a JSON body accept the same values."""

    def __init__(self, rule: schemas.Rule) -> None:
        self.rule = rule

    def __call__(self, form: Form, field: Field) -> None:
        try:
            self.rule.check(field.data)
        except ValueError as exc:
            message = str(exc)
            raise ValidationError(message[:1].upper() + message[1:] + ".") from None


class _PanelForm(FlaskForm):
    class Meta:
        csrf = False  # CSRFProtect already checks every POST (header from htmx, or the hidden field)


def _text(label: str, rule: schemas.Text, *validators: Any) -> StringField:
    return StringField(label, filters=[_strip], validators=[*(validators or (Optional(),)), Follows(rule)])


class LaunchForm(_PanelForm):
    """The dashboard's quick launch: every field optional; empty ones come from the saved configuration."""

    name = _text("Name", schemas.SESSION_NAME)
    model_id = _text("Model", schemas.MODEL_ID)
    region = _text("Region", schemas.REGION)
    plan = _text("GPU plan", schemas.PLAN)
    max_model_len = context_field("Context (tokens)")
    workdir = StringField("Project folder", filters=[_strip])  # checked by the service (exists, the user's own)


class SwitchModelForm(_PanelForm):
    """Switch the model of a running VM; the service checks it fits the GPUs."""

    model_id = _text("New model", schemas.MODEL_ID,
                     DataRequired(message="Enter the Hugging Face id of the model to serve."))
    max_model_len = context_field("Context (tokens)")
