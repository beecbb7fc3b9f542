"""``maider validate``: check .env/.env.secrets before a launch costs money."""
from __future__ import annotations

from pathlib import Path

import click

from app.cli.local_cloud import local_cloud
from app.config import load_settings
from app.errors import ConfigError
from app.services import project_folders
from app.services import providers as providers_service
from app.services import validation as validation_service


@click.command()
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Directory holding .env and .env.secrets (default: the current directory).")
@click.pass_context
def validate(ctx: click.Context, workdir: Path | None) -> None:
    """Check the launch configuration: settings, region, plan, tensor parallelism, dtype and VRAM fit."""
    try:
        settings, provider, home = local_cloud(load_settings(workdir))
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    report = validation_service.validate_launch(settings, provider, home, offline_fit=True)
    project_folders.remember(workdir or Path.cwd())
    for problem in report.problems:
        click.echo(f"✗ {problem.variable}: {problem.message}")
    for note in report.notes:
        click.echo(f"• {note}")
    if settings.plan is None and settings.provider != "simulated":
        choice = providers_service.cheapest_across_providers(settings, home)
        if choice is not None:
            click.echo(f"• {choice.sentence} ('maider up' without TYPE launches there)")
    if report.ok:
        click.echo(f"✓ configuration is valid: {settings.model_id} on {settings.plan} in {settings.region}")
    else:
        count = len(report.problems)
        click.echo(f"{count} problem{'s' if count != 1 else ''} found; fix {'them' if count != 1 else 'it'} "
                   "in .env (or .env.secrets) and run 'maider validate' again")
        ctx.exit(1)


commands = [validate]
