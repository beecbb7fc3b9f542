"""Provider registry: maps a provider name to a constructor, so new clouds plug in without touching the engine."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from app.config import Settings
from app.errors import ConfigError
from app.providers.base import Provider

ProviderFactory = Callable[[Settings, Path], Provider]


def _linode(settings: Settings, home: Path) -> Provider:
    from app.providers.linode import LinodeProvider

    return LinodeProvider(token=settings.linode_token, base_url=settings.linode_api_url)


def _simulated(settings: Settings, home: Path) -> Provider:
    from app.providers.simulated import SimulatedProvider

    return SimulatedProvider(home)


PROVIDERS: dict[str, ProviderFactory] = {"linode": _linode, "simulated": _simulated}


def get_provider(name: str, settings: Settings, home: Path) -> Provider:
    """Build the named provider; raise ConfigError for a name maider does not know."""
    try:
        factory = PROVIDERS[name]
    except KeyError:
        raise ConfigError(f"unknown provider '{name}' (known: {', '.join(sorted(PROVIDERS))})",
                          "MAIDER_PROVIDER") from None
    return factory(settings, home)
