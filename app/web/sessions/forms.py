"""Forms of the sessions pages: they check shape only; the services check the rules (fit, names, states)."""
from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import StringField
from wtforms.validators import DataRequired, Optional, Regexp

from app.web.fields import context_field

NAME_PATTERN = r"^[a-z0-9][a-z0-9-]{0,39}$"
MODEL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$"
REGION_PATTERN = r"^[a-z]{2}-[a-z0-9-]+$"
PLAN_PATTERN = r"^[a-z0-9][a-z0-9-]*$"


def _strip(value: str | None) -> str | None:
    value = (value or "").strip()
    return value or None


class _PanelForm(FlaskForm):
    class Meta:
        csrf = False  # CSRFProtect already checks every POST (header from htmx, or the hidden field)


class LaunchForm(_PanelForm):
    """The dashboard's quick launch: every field optional; empty ones come from the saved configuration."""

    name = StringField("Name", filters=[_strip], validators=[
        Optional(), Regexp(NAME_PATTERN, message="Use lower-case letters, digits and dashes (at most 40), "
                                                 "starting with a letter or digit.")])
    model_id = StringField("Model", filters=[_strip], validators=[
        Optional(), Regexp(MODEL_PATTERN, message="Use a Hugging Face id like Qwen/Qwen2.5-Coder-7B-Instruct-AWQ.")])
    region = StringField("Region", filters=[_strip], validators=[
        Optional(), Regexp(REGION_PATTERN, message="Use a region id like us-ord or de-fra-2.")])
    plan = StringField("GPU plan", filters=[_strip], validators=[
        Optional(), Regexp(PLAN_PATTERN, message="Use a plan id like g2-gpu-rtx4000a1-s.")])
    max_model_len = context_field("Context (tokens)")


class SwitchModelForm(_PanelForm):
    """Switch the model of a running VM; the service checks it fits the GPUs."""

    model_id = StringField("New model", filters=[_strip], validators=[
        DataRequired(message="Enter the Hugging Face id of the model to serve."),
        Regexp(MODEL_PATTERN, message="Use a Hugging Face id like Qwen/Qwen2.5-Coder-14B-Instruct-AWQ.")])
    max_model_len = context_field("Context (tokens)")

