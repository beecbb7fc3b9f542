"""The ``maider`` command: ``serve`` runs the panel and its workers; every other command is a client of it."""
from __future__ import annotations

import logging

import click

from app import redaction
from app.cli import catalog, diagnose, hosts, serve, sessions, users, validate, vm_access, wizard


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("-v", "--verbose", is_flag=True, help="Log debug detail to stderr.")
def main(verbose: bool) -> None:
    """maider: private coding LLMs on short-lived cloud GPUs, from a panel on this laptop."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    redaction.install()


for _module in (serve, wizard, validate, catalog, sessions, vm_access, diagnose, users, hosts):
    for _command in _module.commands:
        main.add_command(_command)

from app.cli import benchmark, checks  # noqa: E402
for _command in (benchmark.benchmark, *checks.commands):
    main.add_command(_command)
