"""Provider registry: maps a provider name to a constructor, so new clouds plug in without touching the engine."""
from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

from app.config import Settings
from app.errors import ConfigError
from app.providers.base import Provider

ProviderFactory = Callable[[Settings, Path], Provider]


def _linode(settings: Settings, home: Path) -> Provider:
    from app.providers.linode import LinodeProvider

    return LinodeProvider(token=settings.linode_token, base_url=settings.linode_api_url)


def _digitalocean(settings: Settings, home: Path) -> Provider:
    from app.providers.digitalocean import DigitalOceanProvider

    return DigitalOceanProvider(token=settings.digitalocean_token, base_url=settings.digitalocean_api_url)


# us-east-1, eu-central-2, ap-southeast-4, us-gov-west-1 (Linode's de-fra-2 is not one)
_AWS_REGION = re.compile(r"^[a-z]{2}(-gov|-iso[a-z]*)?-(north|south|east|west|central)(east|west)?-\d+$")


def _aws(settings: Settings, home: Path) -> Provider:
    from app.providers.aws import AwsProvider

    # REGION names another cloud's region when PROVIDER is not aws (us-ord is Linode's): then AWS's own default.
    region = settings.region if settings.region and _AWS_REGION.match(settings.region) else None
    return AwsProvider(region=region, price_cache=home / "aws-prices.json")


def _ssh(settings: Settings, home: Path) -> Provider:
    from app.providers.ssh_host import SshHostProvider

    return SshHostProvider(home)


DEMO_SPEED_VARIABLE = "MAIDER_DEMO_SPEED"  # >1 compresses the demo's simulated timings further


def _simulated(settings: Settings, home: Path) -> Provider:
    from dataclasses import replace

    from app.providers.simulated import SimulatedProvider, demo_behaviour

    try:
        speed = max(float(os.environ.get(DEMO_SPEED_VARIABLE, "1")), 0.01)
    except ValueError:
        raise ConfigError(f"{DEMO_SPEED_VARIABLE} must be a number", DEMO_SPEED_VARIABLE) from None
    if speed == 1:
        return SimulatedProvider(home)

    def scaled(spec):
        behaviour = demo_behaviour(spec)
        return replace(behaviour, **{name: getattr(behaviour, name) / speed
                                     for name in ("boot_s", "configure_s", "reboot_s", "pull_s", "load_s")})

    return SimulatedProvider(home, behaviour_for=scaled)


PROVIDERS: dict[str, ProviderFactory] = {"linode": _linode, "digitalocean": _digitalocean, "aws": _aws, "ssh": _ssh,
                                         "simulated": _simulated}


def get_provider(name: str, settings: Settings, home: Path) -> Provider:
    """Build the named provider; raise ConfigError for a name maider does not know."""
    try:
        factory = PROVIDERS[name]
    except KeyError:
        raise ConfigError(f"unknown provider '{name}' (known: {', '.join(sorted(PROVIDERS))})",
                          "MAIDER_PROVIDER") from None
    return factory(settings, home)
