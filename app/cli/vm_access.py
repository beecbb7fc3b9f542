"""``maider logs`` and ``maider ssh``: the VM's vLLM log and a shell on it, with the host key maider pinned.

Both read the session's SSH key and pinned host key where the server keeps them on this laptop; nothing secret
travels over the panel's API."""
from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import click

from app.cli.client import MaiderClient, connect, resolve_name
from app.config import default_home
from app.domain.vm_contract import CMD_VLLM_LOGS
from app.engine.identity import identity_dir, load_identity
from app.redaction import redact
from app.remote import RemoteError, RemoteHost, load_private_key, load_public_key

FOLLOW_EVERY_S = 2.0
TAIL_LINES = 400


def _reachable(client: MaiderClient, name: str) -> tuple[dict[str, Any], Path, Path]:
    """The session, the server's data dir and the folder holding the session's keys; a clear error when it has no
    VM to reach."""
    session = client.get(f"/sessions/{name}")
    if not session.get("vm_alive") or not session.get("ssh_host"):
        raise click.ClickException(f"{name} has no VM to reach ({session['status_label'].lower()})")
    home = default_home() / "demo" if client.demo else default_home()
    folder = identity_dir(home, session["uid"])
    if not (folder / "client_key").exists():
        raise click.ClickException(f"the SSH key of {name} is not on this laptop ({folder})")
    return session, home, folder


def _read_log(remote: RemoteHost, lines: int) -> list[str]:
    """The last ``lines`` lines, read with the very command maider's monitor uses (it also shows why vLLM stopped)."""
    result = remote.run(CMD_VLLM_LOGS, timeout=30)
    return redact(result.stdout).splitlines()[-lines:]  # vLLM echoes its arguments, the API key among them


def _new_lines(seen: list[str], now: list[str]) -> list[str]:
    """The lines of ``now`` after the last line already printed (the tail moves as the log grows)."""
    if not seen:
        return now
    for start in range(len(now), 0, -1):
        if now[:start] == seen[-start:]:
            return now[start:]
    return now


@click.command()
@click.argument("name", required=False)
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines until Ctrl+C.")
@click.option("-n", "--lines", type=click.IntRange(1, TAIL_LINES), default=100, show_default=True,
              help="How many of the last lines to print first.")
def logs(name: str | None, follow: bool, lines: int) -> None:
    """Print the vLLM log of a session's VM (API keys masked)."""
    client = connect()
    name = resolve_name(name)
    session, home, _ = _reachable(client, name)
    identity = load_identity(home, session["uid"])
    remote = RemoteHost(session["ssh_host"], session["ssh_port"], load_public_key(identity.host_public),
                        load_private_key(identity.client_private))
    try:
        shown = _read_log(remote, lines)
        for line in shown:
            click.echo(line)
        while follow:
            time.sleep(FOLLOW_EVERY_S)
            now = _read_log(remote, TAIL_LINES)
            for line in _new_lines(shown, now):
                click.echo(line)
            shown = now
    except KeyboardInterrupt:
        pass
    except RemoteError as exc:
        raise click.ClickException(f"could not read the log of {name}: {exc}") from None
    finally:
        remote.close()


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("name", required=False)
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def ssh(name: str | None, command: tuple[str, ...]) -> None:
    """Open a shell on a session's VM (or run COMMAND there) with the host key maider pinned at creation."""
    ssh_binary = shutil.which("ssh")
    if ssh_binary is None:
        raise click.ClickException("the OpenSSH client is not installed (apt install openssh-client)")
    client = connect()
    name = resolve_name(name)
    session, _, folder = _reachable(client, name)
    host, port = session["ssh_host"], session["ssh_port"]
    host_key = (folder / "host_key.pub").read_text().split()
    with tempfile.TemporaryDirectory(prefix="maider-ssh-") as tmp:
        known_hosts = Path(tmp) / "known_hosts"
        known_hosts.write_text(f"[{host}]:{port} {host_key[0]} {host_key[1]}\n")
        argv = [ssh_binary, "-i", str(folder / "client_key"), "-o", "IdentitiesOnly=yes",
                "-o", f"UserKnownHostsFile={known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
                "-o", "StrictHostKeyChecking=yes", "-o", "LogLevel=ERROR", "-p", str(port), f"root@{host}",
                *command]
        raise SystemExit(subprocess.call(argv))


commands = [logs, ssh]
