"""Setup wizard routes: each POST checks one step's form, asks services/wizard, and renders the next step."""
from __future__ import annotations

from flask import abort, flash, make_response, redirect, url_for

from app.services import project_folders
from app.services import wizard as wizard_service
from app.web import wants_partial
from app.web.wizard import bp, forms
from app.web.wizard.views import STEP_NAMES, form_for, open_context, reachable, render_step


def _field_errors(form, exc: wizard_service.WizardError | None = None) -> dict[str, list[str]]:
    errors = {name: list(messages) for name, messages in form.errors.items()}
    if exc is not None:
        errors.setdefault(exc.field or "step", []).append(str(exc))
    return errors


@bp.get("/")
def index():
    """Show the wizard at its first step: the cloud."""
    return render_step("provider", form_for("provider", wizard_service.Choices()))


@bp.post("/step/<step>")
def show(step: str):
    """Go back (or forward) to a step already reached, keeping every choice made."""
    if step not in STEP_NAMES:
        abort(404)
    choices = forms.StateForm().choices()
    return render_step(step if step in reachable(choices) else "tier", form_for(step, choices))


@bp.post("/provider")
def provider():
    """Take the cloud (one with credentials, Linode, or the demo); show the capability tiers."""
    form = forms.ProviderForm()
    if form.validate_on_submit():
        try:
            choices, ctx = wizard_service.choose_provider(open_context(), form.prior_choices("provider"),
                                                          form.provider.data)
            return render_step("tier", form_for("tier", choices), ctx)
        except wizard_service.WizardError as exc:
            return render_step("provider", form, errors=_field_errors(form, exc))
    return render_step("provider", form, errors=_field_errors(form))


@bp.post("/tier")
def tier():
    """Take the capability tier; show the regions that can run it."""
    form = forms.TierForm()
    if form.validate_on_submit():
        choices = wizard_service.choose_tier(form.prior_choices("tier"), form.tier.data)
        return render_step("region", form_for("region", choices))
    return render_step("tier", form, errors=_field_errors(form))


@bp.post("/region")
def region():
    """Take the region; show its GPU plans."""
    form = forms.RegionForm()
    ctx = open_context(form.provider.data)
    if form.validate_on_submit():
        try:
            choices = wizard_service.choose_region(ctx, form.prior_choices("region"), form.region.data)
            return render_step("plan", form_for("plan", choices), ctx)
        except wizard_service.WizardError as exc:
            return render_step("region", form, ctx, errors=_field_errors(form, exc))
    return render_step("region", form, ctx, errors=_field_errors(form))


@bp.post("/plan")
def plan():
    """Take the GPU plan; show models that run on it."""
    form = forms.PlanForm()
    ctx = open_context(form.provider.data)
    if form.validate_on_submit():
        try:
            choices = wizard_service.choose_plan(ctx, form.prior_choices("plan"), form.plan.data)
            return render_step("model", form_for("model", choices), ctx)
        except wizard_service.WizardError as exc:
            return render_step("plan", form, ctx, errors=_field_errors(form, exc))
    return render_step("plan", form, ctx, errors=_field_errors(form))


@bp.post("/model")
def model():
    """Size the model on the plan at the context asked (largest that fits when empty); show the review."""
    form = forms.ModelForm()
    ctx = open_context(form.provider.data)
    if form.validate_on_submit():
        try:
            choices, _sizing = wizard_service.choose_model(ctx, form.choices(), form.chosen_model_id(),
                                                           form.max_model_len.data)
            return render_step("review", form_for("review", choices), ctx)
        except wizard_service.WizardError as exc:
            return render_step("model", form, ctx, errors=_field_errors(form, exc))
    return render_step("model", form, ctx, errors=_field_errors(form))


@bp.post("/save")
def save():
    """Validate with the typed tokens and merge everything into .env / .env.secrets; then go to the dashboard."""
    form = forms.CredentialsForm()
    ctx = open_context(form.provider.data)
    if not form.validate_on_submit():
        return render_step("review", form, ctx, errors=_field_errors(form))
    try:
        result, saved = wizard_service.save(ctx, form.choices(), form.tokens())
    except wizard_service.WizardError as exc:
        return render_step("review", form, ctx, errors=_field_errors(form, exc))
    if saved is None:
        return render_step("review", form, ctx, review=result, extra={"typed_tokens": any(form.tokens().values())})
    project_folders.remember(ctx.workdir)  # the launch card opens on the folder just set up
    names = " and ".join(path.name for path in (saved.env, saved.secrets) if path is not None)
    flash(f"Saved {names} — ready to launch {result.settings.model_id} on {result.settings.plan} in "
          f"{result.settings.region}.", "success")
    if wants_partial():
        response = make_response("", 200)
        response.headers["HX-Redirect"] = url_for("sessions.index")
        return response
    return redirect(url_for("sessions.index"), code=303)
