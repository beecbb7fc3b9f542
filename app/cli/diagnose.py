"""``maider diagnose``: the auto-heal's diagnosis for any vLLM log, from a file or stdin."""
from __future__ import annotations

import click

from app.domain.diagnosis import diagnose as diagnose_log

EXIT_NO_CAUSE = 3


@click.command("diagnose")
@click.argument("log_file", type=click.File("r", encoding="utf-8", errors="replace"), default="-")
def diagnose(log_file: click.utils.LazyFile) -> None:
    """Diagnose why vLLM failed to start, from a log FILE (or - for stdin)."""
    diagnosis = diagnose_log(log_file.read())
    if diagnosis is None:
        click.echo("No known vLLM start-up failure found in this log.")
        raise SystemExit(EXIT_NO_CAUSE)
    click.echo(f"Cause:    {diagnosis.cause.value}: {diagnosis.summary}")
    if diagnosis.oom_phase:
        click.echo(f"Phase:    {diagnosis.oom_phase}")
    click.echo(f"Evidence: {diagnosis.evidence}")
    if diagnosis.numbers:
        facts = ", ".join(f"{name}={value:g}" for name, value in diagnosis.numbers.items())
        click.echo(f"Numbers:  {facts}")
    if diagnosis.healable:
        click.echo(f"maider would: {diagnosis.fix}")
        click.echo(f"If that is not enough: {diagnosis.user_action}")
    else:
        click.echo("maider cannot fix this itself.")
        click.echo(f"You need to: {diagnosis.user_action}")


commands = [diagnose]
