"""``maider open`` (a sign-in link for this laptop's browser) and ``maider user ...`` (teammates) -- API clients."""
from __future__ import annotations

import html
import shutil
import webbrowser
from pathlib import Path

import click

from app.cli.client import connect
from app.config import default_home
from app.files import write_private

ROLES = click.Choice(["viewer", "operator", "admin"])


@click.command("open")
@click.option("--no-browser", is_flag=True, help="Only print the link.")
def open_panel(no_browser: bool) -> None:
    """Print a one-time sign-in link for the panel (and open it in a browser where one exists)."""
    url = connect().post("/login-link")["url"]
    click.echo(f"Sign in to the maider panel (this link works once): {url}")
    if not no_browser and _has_browser():
        webbrowser.open(_redirect_page(url).as_uri())


def _redirect_page(url: str) -> Path:
    """A 0600 page in MAIDER_HOME that sends the browser on to ``url``: the browser's command line then names only
    this file, never the token (any local user can read another's command lines in /proc)."""
    home = default_home()
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    page = home / "open-panel.html"
    write_private(page, f'<!doctype html><meta charset="utf-8"><meta http-equiv="refresh" content="0; url='
                        f'{html.escape(url, quote=True)}"><title>maider</title><p>Opening the maider panel…</p>\n')
    return page


def _has_browser() -> bool:
    try:
        webbrowser.get()
    except webbrowser.Error:
        return False
    return bool(shutil.which("xdg-open") or shutil.which("open") or shutil.which("chromium")
                or shutil.which("firefox") or shutil.which("google-chrome"))


@click.group("user")
def user() -> None:
    """Teammates who may sign in to the panel: add, list, remove, roles, invite links and proxy API keys."""


@user.command("add")
@click.argument("name")
@click.option("--role", type=ROLES, default="viewer", show_default=True,
              help="viewer: sees sessions and cost; operator: also launches and destroys; admin: also users and "
                   "settings.")
def add(name: str, role: str) -> None:
    """Add NAME and print their one-time invite link (valid 24 hours)."""
    answer = connect().post("/users", {"name": name, "role": role})
    click.echo(f"Added {answer['user']['name']} as {answer['user']['role']}.")
    click.echo(f"Send them this invite link (it works once, for 24 hours): {answer['invite_url']}")


@user.command("list")
def list_users() -> None:
    """Everyone who may sign in, with role and state."""
    users = connect().get("/users")["users"]
    width = max([len(u["name"]) for u in users] + [4])
    click.echo(f"{'NAME':<{width}}  {'ROLE':<8}  {'STATE':<7}  PROXY KEY")
    for u in users:
        key = f"{u['api_key_prefix']}…" if u["api_key_prefix"] else "-"
        click.echo(f"{u['name']:<{width}}  {u['role']:<8}  {u['state']:<7}  {key}")


@user.command("remove")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask.")
def remove(name: str, yes: bool) -> None:
    """Remove NAME: their sign-ins and proxy key stop working at once."""
    if not yes:
        click.confirm(f"Remove {name}? Their sign-ins and API key stop working at once.", abort=True)
    connect().delete(f"/users/{name}")
    click.echo(f"Removed {name}.")


@user.command("role")
@click.argument("name")
@click.argument("role", type=ROLES)
def role(name: str, role: str) -> None:
    """Give NAME another role."""
    answer = connect().post(f"/users/{name}/role", {"role": role})
    click.echo(f"{answer['user']['name']} is now {answer['user']['role']}.")


@user.command("invite")
@click.argument("name")
def invite(name: str) -> None:
    """A new invite link for NAME (to set a new password; earlier links stop working)."""
    answer = connect().post(f"/users/{name}/invite")
    click.echo(f"Invite link for {name} (works once, for 24 hours): {answer['invite_url']}")


@user.command("key")
@click.argument("name")
def key(name: str) -> None:
    """Print a new proxy API key for NAME (it replaces their old one; shown only now)."""
    answer = connect().post(f"/users/{name}/key")
    click.echo(f"New API key for {name} (shown only now; the old one stopped working):")
    click.echo(answer["key"])
    click.echo("Use it as OPENAI_API_KEY with the session's proxy endpoint, shown on its page under Team access.")


commands = [open_panel, user]
