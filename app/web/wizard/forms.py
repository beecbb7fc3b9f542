"""Wizard forms: the shape of each step's input. The rules (what fits, what is offered) live in services/wizard."""
from __future__ import annotations

from dataclasses import replace

from flask_wtf import FlaskForm
from wtforms import HiddenField, PasswordField, RadioField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import InputRequired, Length, Optional, ValidationError

from app.services import wizard as wizard_service
from app.web.fields import context_field

CUSTOM_MODEL = "custom"


def _int_or_none(raw: str | None) -> int | None:
    try:
        return int(raw) if raw not in (None, "") else None
    except ValueError:
        return None


class StateForm(FlaskForm):
    """Choices of earlier steps, carried in hidden fields (never a secret)."""

    provider = HiddenField()
    tier = HiddenField()
    region = HiddenField()
    plan = HiddenField()
    model_id = HiddenField()
    context = HiddenField()
    tp = HiddenField()
    previous = HiddenField()  # this step's earlier answer, so a changed answer starts the later steps over

    def choices(self) -> wizard_service.Choices:
        return wizard_service.Choices(
            provider=self.provider.data or None, tier=self.tier.data or None, region=self.region.data or None,
            plan=self.plan.data or None,
            model_id=self.model_id.data or None, max_model_len=_int_or_none(self.context.data),
            tensor_parallel_size=_int_or_none(self.tp.data),
        )

    def prior_choices(self, step: str) -> wizard_service.Choices:
        """The choices as they stood before this submission (the step's own field at its earlier answer)."""
        return replace(self.choices(), **{step: self.previous.data or None})


class ProviderForm(StateForm):
    provider = RadioField("Cloud", validators=[InputRequired("Pick where the GPU runs.")], choices=[],
                          validate_choice=False)  # services/wizard knows which are usable


class TierForm(StateForm):
    tier = RadioField("Capability", validators=[InputRequired("Pick a capability tier.")],
                      choices=[SelectChoice(t.key, t.label) for t in wizard_service.TIER_OPTIONS])


class RegionForm(StateForm):
    region = RadioField("Region", validators=[InputRequired("Pick a region.")], choices=[], validate_choice=False)


class PlanForm(StateForm):
    plan = RadioField("GPU plan", validators=[InputRequired("Pick a GPU plan.")], choices=[], validate_choice=False)


class ModelForm(StateForm):
    model = RadioField("Model", validators=[InputRequired("Pick a model, or choose “Other” and type its id.")],
                       choices=[], validate_choice=False)
    custom_model_id = StringField("Hugging Face model id", validators=[Length(max=200)])
    max_model_len = context_field("Context length (tokens)")

    def validate_custom_model_id(self, field: StringField) -> None:
        if self.model.data == CUSTOM_MODEL and not (field.data or "").strip():
            raise ValidationError("Type a Hugging Face model id, e.g. Qwen/Qwen2.5-Coder-7B-Instruct.")

    def chosen_model_id(self) -> str:
        return (self.custom_model_id.data or "").strip() if self.model.data == CUSTOM_MODEL else self.model.data


class CredentialsForm(StateForm):
    """Tokens travel only in this, the final POST; a field left empty keeps what is saved."""

    linode_token = PasswordField("Linode API token", validators=[Optional(), Length(max=512)])
    hf_token = PasswordField("Hugging Face token", validators=[Optional(), Length(max=512)])

    def validate_linode_token(self, field: PasswordField) -> None:
        self._check(field, "LINODE_TOKEN")

    def validate_hf_token(self, field: PasswordField) -> None:
        self._check(field, "HUGGING_FACE_HUB_TOKEN")

    @staticmethod
    def _check(field: PasswordField, variable: str) -> None:
        try:
            wizard_service.check_token(field.data or "", variable)
        except wizard_service.WizardError as exc:
            raise ValidationError(str(exc)) from None

    def tokens(self) -> dict[str, str | None]:
        return {"linode": (self.linode_token.data or "").strip() or None,
                "hf": (self.hf_token.data or "").strip() or None}


