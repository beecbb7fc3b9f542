"""``maider check`` and ``maider validate-perf``: a one-line verdict per check as each ends, exit 1 when any fails.

The server runs the check in its background; this command starts it, prints each verdict as it arrives and the step
in progress (on stderr), and Ctrl-C asks the server to cancel it.
"""
from __future__ import annotations

import sys
import time
from typing import Any

import click

from app.cli.client import MaiderClient, ServerError, connect, resolve_name

POLL_S = 0.5
FINISHED = {"done", "failed", "cancelled"}
SPINNER = "|/-\\"


def _verdict_line(item: dict[str, Any]) -> str:
    line = f"{'✓' if item['ok'] else '✗'} {item['name']}: {item['message']}"
    return line + (f"\n    fix: {item['fix']}" if item.get("fix") and not item["ok"] else "")


class _Progress:
    """The step in progress on stderr: redrawn in place on a terminal, one line per new step otherwise."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.shown = ""
        self.ticks = 0

    def show(self, step: str) -> None:
        if not step:
            return
        if self.tty:
            self.ticks += 1
            click.echo(f"\r\033[K  {SPINNER[self.ticks % len(SPINNER)]} {step}", nl=False, err=True)
        elif step != self.shown:
            click.echo(f"  ... {step}", err=True)
        self.shown = step

    def clear(self) -> None:
        if self.tty and self.shown:
            click.echo("\r\033[K", nl=False, err=True)


def _follow(client: MaiderClient, run: dict[str, Any]) -> dict[str, Any]:
    """Print each verdict once, until the run ends; the first Ctrl-C asks the server to cancel and waits for it."""
    printed, progress, cancelled = 0, _Progress(), False
    while True:
        try:
            if len(run["checks"]) > printed:
                progress.clear()
                for item in run["checks"][printed:]:
                    click.echo(_verdict_line(item))
                printed = len(run["checks"])
            if run["status"] in FINISHED:
                progress.clear()
                return run
            progress.show(run.get("step") or "")
            time.sleep(POLL_S)
            run = client.get(f"/checks/{run['id']}")
        except KeyboardInterrupt:
            if cancelled:
                raise
            cancelled = True
            progress.clear()
            click.echo("  cancelling...", err=True)
            try:
                client.post(f"/checks/{run['id']}/cancel")
            except ServerError:  # it ended in the meantime: its verdict follows
                pass


def _report(kind: str, name: str | None) -> None:
    session = resolve_name(name)
    client = connect()
    run = _follow(client, client.post(f"/sessions/{session}/{kind}"))
    checks = run["checks"]
    if run["status"] == "cancelled":
        click.echo(f"{kind}: cancelled on {session} after {len(checks)} verdict(s)")
        raise SystemExit(1)
    if run["status"] != "done":
        click.echo(f"{kind}: did not finish on {session}: {run.get('error') or run['status']}")
        raise SystemExit(1)
    if not run["ok"]:
        failed = sum(1 for item in checks if not item["ok"])
        click.echo(f"{kind}: {failed} of {len(checks)} checks failed on {session}")
        raise SystemExit(1)
    click.echo(f"{kind}: {session} passed all {len(checks)} checks")


@click.command()
@click.argument("name", required=False)
def check(name: str | None) -> None:
    """Quick GPU check (seconds): every GPU visible, memory balanced across ranks, one completion returns."""
    _report("check", name)


@click.command("validate-perf")
@click.argument("name", required=False)
def validate_perf(name: str | None) -> None:
    """Performance check under load (minutes on a real GPU): utilization, memory headroom, vLLM log, TTFT by prompt
    length. Progress shows while it runs; Ctrl-C cancels it."""
    _report("validate-perf", name)


commands = [check, validate_perf]
