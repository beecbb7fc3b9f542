"""``maider serve``: the panel (waitress on loopback) plus the background workers, in one process."""
from __future__ import annotations

import errno
import ipaddress
import logging
import socket
import sys

import click

from app.config import DEFAULT_PORT, LOOPBACK_HOSTS, default_home, load_settings

log = logging.getLogger(__name__)
PORT_SEARCH_SPAN = 50
WAITRESS_THREADS = 8


def _is_loopback(host: str) -> bool:
    if host.strip("[]") in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def find_free_port(host: str, preferred: int, span: int = PORT_SEARCH_SPAN) -> int:
    """``preferred`` if it can be bound, else the next free port above it.

    The probe binds as waitress does, with SO_REUSEADDR: a restart then gets its port back while the previous run's
    connections sit in TIME-WAIT, and a port some process listens on still counts as taken."""
    for port in range(preferred, preferred + span):
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host.strip("[]"), port))
            except OSError as exc:
                if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                    continue
                raise
            return port
    raise click.ClickException(f"no free port between {preferred} and {preferred + span - 1} on {host}")


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (loopback only, unless --share).")
@click.option("--port", type=click.IntRange(1, 65535), default=DEFAULT_PORT, show_default=True,
              envvar="MAIDER_PORT", help="Preferred port; the next free one is used if it is taken.")
@click.option("--demo/--no-demo", default=None,
              help="Simulated cloud on this laptop. Default: demo when no Linode token is configured.")
@click.option("--share", is_flag=True, help="Allow binding a non-loopback address (teammates need a login).")
@click.option("--no-workers", is_flag=True, hidden=True, help="Serve pages only (debugging).")
def serve(host: str, port: int, demo: bool | None, share: bool, no_workers: bool) -> None:
    """Run the maider panel and its background workers."""
    if not _is_loopback(host) and not share:
        raise click.ClickException(
            f"refusing to bind {host}: the panel controls paid VMs and binds loopback only. "
            "Use --share to expose it deliberately (teammates then need a login).")
    if share and not _is_loopback(host):
        raise click.ClickException("--share is not available yet: it needs the panel login, which is not built. "
                                   "Teammates can reach the panel through 'ssh -L' to this laptop instead.")
    if logging.getLogger().level > logging.INFO:
        logging.getLogger().setLevel(logging.INFO)  # the server's log tells what the workers do
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # paramiko logs every reset during a VM reboot at ERROR; maider records SSH state in the session's events.
    logging.getLogger("paramiko.transport").setLevel(logging.CRITICAL)
    settings = load_settings()
    if demo is None:
        demo = settings.linode_token is None
        if demo:
            click.echo("No Linode token found (LINODE_TOKEN, .env.secrets or linode-cli): starting in demo mode.")
    actual = find_free_port(host, port)
    if actual != port:
        click.echo(f"Port {port} is taken; using {actual}.")
    from app.database_check import DatabaseDamaged
    from app.server import AlreadyRunning, run_server

    home = default_home()
    try:
        run_server(home=home, host=host, port=actual, demo=demo, start_workers=not no_workers,
                   threads=WAITRESS_THREADS)
    except (AlreadyRunning, DatabaseDamaged) as exc:
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:
        click.echo("Stopped.", err=True)
        sys.exit(0)


commands = [serve]
