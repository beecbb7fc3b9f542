"""Render a wizard step: the options it shows come from services/wizard; full page or htmx partial."""
from __future__ import annotations

from typing import Any

from flask import current_app, render_template, request

from app.services import project_folders
from app.services import wizard as wizard_service
from app.web import wants_partial
from app.web.wizard import forms

STEPS: tuple[tuple[str, str], ...] = (
    ("provider", "Cloud"), ("tier", "Capability"), ("region", "Region"), ("plan", "GPU plan"), ("model", "Model"),
    ("review", "Review & save"),
)
STEP_NAMES = tuple(name for name, _label in STEPS)


def reachable(choices: wizard_service.Choices) -> set[str]:
    """Steps the progress bar may jump to: every step whose earlier choices are made."""
    made = (True, True, bool(choices.tier), bool(choices.region), bool(choices.plan), bool(choices.model_id))
    steps = set()
    for name, ok in zip(STEP_NAMES, made):
        if not ok:
            break
        steps.add(name)
    return steps


def form_for(step: str, choices: wizard_service.Choices) -> Any:
    """The step's form, pre-filled from earlier choices (not from the request)."""
    state = {"provider": choices.provider, "tier": choices.tier, "region": choices.region, "plan": choices.plan,
             "model_id": choices.model_id, "context": choices.max_model_len, "tp": choices.tensor_parallel_size}
    if step == "model":
        catalog_ids = {m.model_id for m in wizard_service.CATALOG}
        custom = bool(choices.model_id) and choices.model_id not in catalog_ids
        return forms.ModelForm(formdata=None, **state, model=forms.CUSTOM_MODEL if custom else choices.model_id,
                               custom_model_id=choices.model_id if custom else "", max_model_len=choices.max_model_len)
    form_class = {"provider": forms.ProviderForm, "tier": forms.TierForm, "region": forms.RegionForm,
                  "plan": forms.PlanForm, "review": forms.CredentialsForm}[step]
    return form_class(formdata=None, **state)


def open_context(provider: str | None = None) -> wizard_service.Context:
    """The wizard's context on the provider chosen at the first step (None: the project's PROVIDER), in the project
    folder of the launch card that opened it (``workdir``, carried through every step; else the one the launch
    card opens on), so the settings are saved where the next launch reads them."""
    config = current_app.config
    workdir = project_folders.chosen(request.values.get("workdir"), config["MAIDER_WORKDIR"])
    return wizard_service.open_context(workdir, config["MAIDER_HOME"],
                                       demo=bool(config.get("MAIDER_DEMO")), provider=provider or None)


def _options(ctx: wizard_service.Context, step: str, choices: wizard_service.Choices,
             review: wizard_service.Review | None) -> dict[str, Any]:
    """What the step lists; a provider or sizing failure becomes ``step_error`` (shown in the step)."""
    data: dict[str, Any] = {}
    try:
        if step == "provider":
            data["providers"] = wizard_service.provider_options(ctx)
        elif step == "tier":
            data["tiers"] = wizard_service.TIER_OPTIONS
        elif step == "region":
            data["regions"] = wizard_service.region_options(ctx, choices.tier or "")
        elif step == "plan":
            data["plans"] = wizard_service.plan_options(ctx, choices.tier or "", choices.region or "")
        elif step == "model":
            plan = wizard_service.find_plan(ctx, choices.tier or "", choices.region or "", choices.plan)
            data["plan"] = plan
            data["models"] = wizard_service.model_options(choices.tier or "", plan)
        elif step == "review":
            data["plan"] = wizard_service.find_plan(ctx, choices.tier or "", choices.region or "", choices.plan)
            data["review"] = review or wizard_service.review(ctx, choices)
            data["credentials"] = wizard_service.credential_info(ctx.settings, ctx.provider_name)
        if step in ("plan", "review"):
            data["region_name"] = wizard_service.region_name(ctx, choices.region)
    except wizard_service.WizardError as exc:
        data["step_error"] = str(exc)
    return data


def render_step(step: str, form: Any, ctx: wizard_service.Context | None = None, *,
                errors: dict[str, list[str]] | None = None, extra: dict[str, Any] | None = None,
                review: wizard_service.Review | None = None) -> str:
    """The step's partial (htmx) or the whole page, from the one partial template."""
    choices = form.choices()
    ctx = ctx or open_context(choices.provider)
    data = _options(ctx, step, choices, review)
    context = {
        "step": step, "steps": STEPS, "step_index": STEP_NAMES.index(step), "reachable": reachable(choices),
        "form": form, "choices": choices, "demo": ctx.demo, "provider_name": ctx.provider_name,
        "workdir": str(ctx.workdir), "current": ctx.settings,
        "field_errors": errors or {}, **data, **(extra or {}),
    }
    template = "wizard/_wizard.html" if wants_partial() else "wizard/index.html"
    return render_template(template, **context)
