"""``maider check`` and ``maider validate-perf``: a one-line verdict per check, exit 1 when any fails."""
from __future__ import annotations

from typing import Any

import click

from app.cli.client import connect, resolve_name


def _report(kind: str, name: str | None) -> None:
    session = resolve_name(name)
    report: dict[str, Any] = connect().post(f"/sessions/{session}/{kind}")
    for item in report["checks"]:
        line = f"{'✓' if item['ok'] else '✗'} {item['name']}: {item['message']}"
        click.echo(line + (f"\n    fix: {item['fix']}" if item.get("fix") and not item["ok"] else ""))
    if not report["ok"]:
        failed = sum(1 for item in report["checks"] if not item["ok"])
        click.echo(f"{kind}: {failed} of {len(report['checks'])} checks failed on {session}")
        raise SystemExit(1)
    click.echo(f"{kind}: {session} passed all {len(report['checks'])} checks")


@click.command()
@click.argument("name", required=False)
def check(name: str | None) -> None:
    """Quick GPU check (seconds): every GPU visible, memory balanced across ranks, one completion returns."""
    _report("check", name)


@click.command("validate-perf")
@click.argument("name", required=False)
def validate_perf(name: str | None) -> None:
    """Performance check under load (about a minute): utilization, memory headroom, vLLM log, TTFT by prompt length."""
    _report("validate-perf", name)


commands = [check, validate_perf]
