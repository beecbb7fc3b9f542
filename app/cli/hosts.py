"""``maider host add|list|remove``: your own GPU machines, for ``PROVIDER=ssh``.

Unlike the session commands these do not go through the server's API: a host is local configuration, like ``.env``
(MAIDER_HOME/hosts.json, 0600), and adding one is an interactive check of a machine (confirm its host key, see its
GPUs) that belongs in the terminal the user typed it in. The server reads the same file for every launch, and the
file is changed under a lock, so the two never overwrite each other.
"""
from __future__ import annotations

import click

from app.config import default_home
from app.services import ssh_hosts


@click.group("host")
def host() -> None:
    """Your own Ubuntu machines with NVIDIA GPUs, to launch on with PROVIDER=ssh (TYPE = the host's name)."""


@host.command("add")
@click.argument("name")
@click.argument("login", metavar="USER@ADDRESS")
@click.option("--port", type=int, default=22, show_default=True, help="SSH port.")
@click.option("--price", type=float, default=0.0, show_default=True, metavar="USD/h",
              help="What an hour of this machine costs you, for maider's spending figures.")
@click.option("--identity", type=click.Path(dir_okay=False), default=None,
              help="Private key file to log in with (default: your SSH agent and ~/.ssh keys).")
@click.option("--yes", is_flag=True, help="Accept the host key shown without asking (scripts).")
def add(name: str, login: str, port: int, price: float, identity: str | None, yes: bool) -> None:
    """Register NAME: confirm its SSH host key, check root access (sudo without a password) and list its GPUs."""
    def confirm(fingerprint: str, key_type: str, where: str) -> bool:
        click.echo(f"{where} presents the {key_type} host key {fingerprint}")
        if yes:
            click.echo("Accepted (--yes).")
            return True
        return click.confirm("Is this the key of your machine? (compare with 'ssh-keygen -lf "
                             "/etc/ssh/ssh_host_*_key.pub' on it)", default=False)

    try:
        added = ssh_hosts.add_host(default_home(), name, login, confirm, port=port, price=price, identity=identity)
    except ssh_hosts.HostError as exc:
        raise click.ClickException(str(exc)) from None
    gpus = ", ".join(f"{g.name} ({g.memory_mb} MiB)" for g in added.gpus)
    click.echo(f"Added host '{added.name}' ({added.login}): {len(added.gpus)} GPU(s): {gpus}; "
               f"{added.price:g} USD/h; host key {added.fingerprint} pinned.")
    click.echo(f"Launch on it with PROVIDER=ssh, REGION=own, TYPE={added.name} in the project's .env.")


@host.command("list")
def list_hosts() -> None:
    """Registered hosts, their GPUs, price and maider sessions."""
    hosts = ssh_hosts.list_hosts(default_home())
    if not hosts:
        click.echo("No hosts yet: add one with 'maider host add NAME user@address'.")
        return
    width = max([len(h.name) for h in hosts] + [4])
    click.echo(f"{'NAME':<{width}}  {'LOGIN':<28}  {'GPUS':<36}  {'USD/H':>6}  SESSIONS")
    for h in hosts:
        names = sorted({g.name for g in h.gpus})
        gpus = f"{len(h.gpus)}x {' + '.join(names)}"
        click.echo(f"{h.name:<{width}}  {h.login:<28}  {gpus:<36}  {h.price:>6.2f}  {', '.join(h.sessions) or '-'}")


@host.command("remove")
@click.argument("name")
def remove(name: str) -> None:
    """Forget NAME (refused while a maider session runs on it)."""
    try:
        gone = ssh_hosts.remove_host(default_home(), name)
    except ssh_hosts.HostError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"Removed host '{gone.name}' ({gone.login}). The machine itself was not touched.")


commands = [host]
