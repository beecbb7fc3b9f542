"""``maider serve``: the panel (waitress on loopback) plus the background workers, in one process."""
from __future__ import annotations

import errno
import ipaddress
import logging
import re
import socket
import sys
from pathlib import Path

import click

from app.config import DEFAULT_PORT, LOOPBACK_HOSTS, default_home, load_settings

log = logging.getLogger(__name__)
PORT_SEARCH_SPAN = 50
DEFAULT_SHARE_PORT = 8443
WAITRESS_THREADS = 16  # the proxy may hold 12 for long streams (model_proxy.DEFAULT_SLOTS); the panel keeps 4


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
@click.option("--host", default=None,
              help="Loopback address of the panel (default 127.0.0.1); with --share, the address the HTTPS front "
                   "binds (default 0.0.0.0: every interface).")
@click.option("--port", type=click.IntRange(1, 65535), default=DEFAULT_PORT, show_default=True,
              envvar="MAIDER_PORT", help="Preferred port; the next free one is used if it is taken.")
@click.option("--demo/--no-demo", default=None,
              help="Simulated cloud on this laptop. Default: demo when no Linode token is configured.")
@click.option("--share", is_flag=True,
              help="Also serve the panel to teammates over HTTPS on --host (needs at least one user: "
                   "'maider user add').")
@click.option("--share-port", type=click.IntRange(1, 65535), default=DEFAULT_SHARE_PORT, show_default=True,
              help="With --share: the HTTPS port.")
@click.option("--name", "names", multiple=True, metavar="HOSTNAME",
              help="With --share: a host name or address teammates use to reach this laptop (repeatable). Requests "
                   "for any other name are refused. Default: the --host address, else this machine's names.")
@click.option("--tls-cert", type=click.Path(dir_okay=False, path_type=Path),
              help="With --share: your certificate (PEM) instead of a self-signed one.")
@click.option("--tls-key", type=click.Path(dir_okay=False, path_type=Path), help="With --share: its private key (PEM).")
@click.option("--no-workers", is_flag=True, hidden=True, help="Serve pages only (debugging).")
def serve(host: str | None, port: int, demo: bool | None, share: bool, share_port: int, names: tuple[str, ...],
          tls_cert: Path | None, tls_key: Path | None, no_workers: bool) -> None:
    """Run the maider panel and its background workers.

    The panel always answers on 127.0.0.1 over plain HTTP (this laptop only). With --share it also answers
    teammates over HTTPS at --host:--share-port, once at least one of them has been added with 'maider user add'."""
    share_options = _share_options(host, share_port, names, tls_cert, tls_key) if share else None
    if host is not None and not _is_loopback(host) and not share:
        raise click.ClickException(
            f"refusing to serve plain HTTP on {host}: the panel controls paid VMs. Use --share to serve teammates "
            "over HTTPS (they sign in with their own password); the panel itself stays on 127.0.0.1.")
    host = "127.0.0.1" if share or host is None else host
    if logging.getLogger().level > logging.INFO:
        logging.getLogger().setLevel(logging.INFO)  # the server's log tells what the workers do
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)  # "Context impl SQLiteImpl." is not news to a user
    # paramiko logs every reset during a VM reboot at ERROR; maider records SSH state in the session's events.
    logging.getLogger("paramiko.transport").setLevel(logging.CRITICAL)
    settings = load_settings()
    if demo is None:
        from app.services.providers import configured_providers

        demo = not configured_providers(settings, default_home())  # any cloud with credentials will do
        if demo:
            click.echo("No Linode token found (LINODE_TOKEN, .env.secrets or linode-cli), nor any other cloud's "
                       "credentials (DIGITALOCEAN_TOKEN, AWS, 'maider host add'): starting in demo mode.")
    actual = find_free_port(host, port)
    if actual != port:
        click.echo(f"Port {port} is taken; using {actual}.")
    from app.database_check import DatabaseDamaged
    from app.server import AlreadyRunning, ShareRefused, run_server

    home = default_home()
    try:
        run_server(home=home, host=host, port=actual, demo=demo, start_workers=not no_workers,
                   threads=WAITRESS_THREADS, share=share_options)
    except (AlreadyRunning, DatabaseDamaged, ShareRefused) as exc:
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:
        click.echo("Stopped.", err=True)
        sys.exit(0)


def _share_options(host: str | None, port: int, names: tuple[str, ...], cert: Path | None, key: Path | None):
    """What --share serves: HTTPS only, under the names given (or this machine's own)."""
    from app.server import ShareOptions

    if (cert is None) != (key is None):
        raise click.ClickException("give both --tls-cert and --tls-key (or neither, for a self-signed certificate)")
    bind = host or "0.0.0.0"
    chosen = [n.strip().lower() for n in names if n.strip()]
    if not chosen:
        chosen = [bind] if bind not in ("0.0.0.0", "::", "[::]") else _machine_names()
    for name in chosen:
        if not _NAME_RE.fullmatch(name):
            raise click.ClickException(f"--name {name!r} is not a host name or an IP address")
    return ShareOptions(host=bind, port=port, names=tuple(dict.fromkeys(chosen)), cert_path=cert, key_path=key)


_NAME_RE = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*|\[?[0-9a-f:.]+\]?")


def _machine_names() -> list[str]:
    """This machine's host names and the addresses they resolve to (not loopback)."""
    names = [socket.gethostname().lower(), socket.getfqdn().lower()]
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None):
            address = info[4][0]
            if not ipaddress.ip_address(address).is_loopback:
                names.append(address)
    except (OSError, ValueError):
        pass
    return [n for n in dict.fromkeys(names) if n and n != "localhost"]


commands = [serve]
