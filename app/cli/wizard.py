"""``maider wizard``: the setup wizard on the terminal, with the web wizard's rules (services/wizard)."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import click

from app.config import PROVIDER_NAMES, default_home
from app.domain.cost import format_money
from app.domain.sizing import MAX_CONTEXT_TOKENS, MIN_CONTEXT_TOKENS, format_context
from app.services import project_folders
from app.services import wizard as wizard_service

OTHER_MODEL = "Other Hugging Face model (type its id)"


def _pick(title: str, rows: Sequence[tuple[str, str]], default: int, yes: bool) -> int:
    """Numbered choice; ``default`` (0-based) is the recommended row. Returns the 0-based index."""
    click.echo(click.style(title, bold=True))
    for number, (label, detail) in enumerate(rows, start=1):
        mark = click.style("  (recommended)", fg="green") if number - 1 == default else ""
        click.echo(f"  {number:>2}) {label}{mark}")
        if detail:
            click.echo(f"      {click.style(detail, dim=True)}")
    if yes:
        click.echo(f"  → {rows[default][0]}")
        return default
    return click.prompt("Choice", type=click.IntRange(1, len(rows)), default=default + 1) - 1


def _fail(exc: wizard_service.WizardError) -> click.ClickException:
    return click.ClickException(" ".join(str(exc).split()))


def _choose_provider(ctx: wizard_service.Context, asked: str | None, yes: bool) -> str:
    """The cloud: asked only when more than one can be used; those without credentials say how to add them."""
    options = wizard_service.provider_options(ctx)
    usable = [o for o in options if o.enabled]
    if asked is not None:
        return asked
    if len(usable) == 1:
        click.echo(click.style("1. Cloud", bold=True) + f"  → {usable[0].label} ({usable[0].detail})")
        return usable[0].name
    click.echo(click.style("1. Cloud", bold=True))
    numbered = []
    for option in options:
        mark = click.style("  (recommended)", fg="green") if option.recommended else ""
        if option.enabled:
            numbered.append(option)
            click.echo(f"  {len(numbered):>2}) {option.label}{mark}")
            click.echo(f"      {click.style(option.detail, dim=True)}")
        else:
            click.echo(click.style(f"   –  {option.label}: {option.detail}", dim=True))
    default = next(i for i, o in enumerate(numbered) if o.recommended)
    if yes:
        click.echo(f"  → {numbered[default].label}")
        return numbered[default].name
    return numbered[click.prompt("Choice", type=click.IntRange(1, len(numbered)), default=default + 1) - 1].name


def _choose_tier(yes: bool) -> str:
    rows = [(t.label, t.summary) for t in wizard_service.TIER_OPTIONS]
    return wizard_service.TIER_OPTIONS[_pick("2. Capability", rows, 0, yes)].key


def _choose_region(ctx: wizard_service.Context, tier: str, yes: bool) -> str:
    options = wizard_service.region_options(ctx, tier)
    if not options:
        raise click.ClickException("no region offers a GPU plan for this tier right now; pick another tier")
    rows = []
    for o in options:
        price = f" · from {format_money(o.from_price)}/h" if o.from_price > 0 else ""
        hint = f" · {o.latency.text}" if o.latency else ""
        rows.append((f"{o.region.label} ({o.region.id})", f"{o.fitting_plans} plan{'s' if o.fitting_plans != 1 else ''} fit{'s' if o.fitting_plans == 1 else ''}{price}{hint}"))
    default = next(i for i, o in enumerate(options) if o.recommended)
    return options[_pick("3. Region", rows, default, yes)].region.id


def _choose_plan(ctx: wizard_service.Context, tier: str, region: str, yes: bool) -> str:
    options = wizard_service.plan_options(ctx, tier, region)
    if not options:
        raise click.ClickException(f"no GPU plan is offered in {region} right now; pick another region")
    rows = []
    for o in options:
        if tier == wizard_service.CUSTOM_TIER:
            fit = "" if o.fits else " · GPU unknown: fit not checked"
        else:
            fit = f" · runs {', '.join(m.split('/')[-1] for m in o.fitting_models)}" if o.fits else \
                f" · too small for {tier} models"
        rows.append((o.plan.id, wizard_service.describe_plan(o.plan) + fit))
    default = next((i for i, o in enumerate(options) if o.recommended), 0)
    return options[_pick("4. GPU plan (cheapest first)", rows, default, yes)].plan.id


def _choose_model(ctx: wizard_service.Context, choices: wizard_service.Choices,
                  yes: bool) -> wizard_service.Choices:
    plan = wizard_service.find_plan(ctx, choices.tier or "", choices.region or "", choices.plan)
    options = wizard_service.model_options(choices.tier or "", plan)
    rows = [(o.entry.model_id, f"{o.entry.description} · {format_context(o.context)} context proposed, "
                               f"largest that fits {o.max_context:,}") for o in options]
    rows.append((OTHER_MODEL, "any org/name on Hugging Face; sized from the Hub when it can be"))
    default = next((i for i, o in enumerate(options) if o.recommended), len(options))
    while True:
        index = _pick("5. Model", rows, default, yes)
        if index < len(options):
            model_id, proposed = options[index].entry.model_id, options[index].context
        else:
            model_id, proposed = click.prompt("Hugging Face model id").strip(), None
        context = proposed
        if not yes:
            context = click.prompt("Context length in tokens", type=click.IntRange(MIN_CONTEXT_TOKENS, MAX_CONTEXT_TOKENS),
                                   default=proposed, show_default=proposed is not None)
        try:
            chosen, sizing = wizard_service.choose_model(ctx, choices, model_id, context)
        except wizard_service.WizardError as exc:
            if yes:
                raise _fail(exc) from None
            click.secho(f"✗ {exc}", fg="red")
            continue
        if sizing.note:
            click.secho(f"• {sizing.note}", fg="yellow")
        return chosen


def _ask_tokens(ctx: wizard_service.Context, yes: bool) -> dict[str, str | None]:
    click.echo(click.style("6. Credentials", bold=True))
    if ctx.demo:
        click.echo("  Demo mode: tokens are optional (nothing is created in a cloud).")
    tokens: dict[str, str | None] = {}
    for key, info in wizard_service.credential_info(ctx.settings, ctx.provider_name).items():
        click.echo(f"  {info.variable}: {info.description}")
        if yes:
            tokens[key] = None
            continue
        while True:
            typed = click.prompt(f"  {info.variable} (token or op:// reference; empty keeps "
                                 f"{'it' if info.found else 'it unset'})",
                                 default="", show_default=False, hide_input=True)
            try:
                tokens[key] = wizard_service.check_token(typed, info.variable)
                break
            except wizard_service.WizardError as exc:
                click.secho(f"  ✗ {exc}", fg="red")
    return tokens


def _show_review(result: wizard_service.Review) -> None:
    click.echo(click.style("7. Review", bold=True))
    for problem in result.report.problems:
        click.secho(f"✗ {problem.variable}: {problem.message}", fg="red")
    for warning in result.warnings:
        click.secho(f"! {warning}", fg="yellow")
    for note in result.report.notes:
        click.echo(f"• {note}")
    settings = result.settings
    click.echo(f"• autostop: an idle VM is destroyed after {settings.watchdog_timeout_minutes} min "
               "(WATCHDOG_TIMEOUT_MINUTES in .env, or maider up --idle-minutes N)" if settings.watchdog_enabled
               else "• autostop off: an idle VM runs (and bills) until you destroy it (WATCHDOG_ENABLED=true)")
    if result.ok and result.report.fit is None:
        click.secho("! region and plan check out, but the model's fit was not checked: if it does not fit, vLLM "
                    "stops at start-up and the VM is billed until it is destroyed", fg="yellow")
    elif result.ok:
        click.secho("✓ checks passed: region, plan, tensor parallelism, dtype and VRAM fit", fg="green")


@click.command()
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Directory for .env and .env.secrets (default: the current directory).")
@click.option("--demo", is_flag=True, help="Use the simulated cloud: no token needed, nothing costs money.")
@click.option("--provider", type=click.Choice(PROVIDER_NAMES), metavar="PROVIDER",
              help=f"Skip the cloud step: {', '.join(PROVIDER_NAMES)} (saved as PROVIDER).")
@click.option("--yes", "-y", is_flag=True, help="Accept every recommendation and save without asking.")
def wizard(workdir: Path | None, demo: bool, provider: str | None, yes: bool) -> None:
    """Set up .env and .env.secrets step by step: cloud, tier, region, GPU plan, model, context and credentials."""
    ctx = wizard_service.open_context(workdir or Path.cwd(), default_home(), demo=demo)
    try:
        choices, ctx = wizard_service.choose_provider(ctx, wizard_service.Choices(),
                                                      _choose_provider(ctx, provider, yes))
        choices = wizard_service.choose_tier(choices, _choose_tier(yes))
        choices = wizard_service.choose_region(ctx, choices, _choose_region(ctx, choices.tier or "", yes))
        choices = wizard_service.choose_plan(ctx, choices, _choose_plan(ctx, choices.tier or "",
                                                                         choices.region or "", yes))
        choices = _choose_model(ctx, choices, yes)
        tokens = _ask_tokens(ctx, yes)
        result = wizard_service.review(ctx, choices, tokens)
        _show_review(result)
        if not result.ok:
            count = len(result.report.problems)
            raise click.ClickException(f"nothing saved: {count} problem{'s' if count != 1 else ''} to fix first")
        if not yes and not click.confirm(f"Save to {ctx.workdir / '.env'}?", default=True):
            click.echo("Nothing saved.")
            return
        result, saved = wizard_service.save(ctx, choices, tokens)
        project_folders.remember(ctx.workdir)  # the panel's launch card opens on this folder
    except wizard_service.WizardError as exc:
        raise _fail(exc) from None
    if saved is None:
        _show_review(result)
        raise click.ClickException("nothing saved: the checks failed")
    names = " and ".join(path.name for path in (saved.env, saved.secrets) if path is not None)
    click.secho(f"✓ Saved {names} in {ctx.workdir} — ready to launch: maider up", fg="green")


commands = [wizard]
