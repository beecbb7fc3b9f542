"""Which cloud a local CLI command (validate) asks: the same rule as ``maider serve``.

When no cloud has credentials the panel runs in demo mode, so these commands check against the simulated cloud too,
rather than stopping at the missing token."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import click

from app.config import Settings, default_home
from app.providers import get_provider
from app.providers.base import Provider


def is_demo(settings: Settings) -> bool:
    """Demo when maider would serve in demo mode: the simulated cloud chosen, or no cloud has credentials here."""
    from app.services.providers import configured_providers

    return settings.provider == "simulated" or not configured_providers(settings, default_home())


def local_cloud(settings: Settings) -> tuple[Settings, Provider, Path]:
    """The settings, provider and data dir a local check uses; says so on stderr when it is the demo cloud."""
    home = default_home()
    if not is_demo(settings):
        return settings, get_provider(settings.provider, settings, home), home
    if settings.provider != "simulated":
        click.echo("No Linode token found (LINODE_TOKEN, .env.secrets or linode-cli), nor any other cloud's "
                   "credentials: demo mode, checking against the simulated cloud.", err=True)
    settings = replace(settings, provider="simulated")
    return settings, get_provider("simulated", settings, home / "demo"), home / "demo"
