"""Settings report for the panel: what maider found and where, never a secret's value."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from app.config import FIELDS, SECRET_FIELDS, SECRET_VARIABLES, Settings, load_settings
from app.services import catalog as catalog_service


@dataclass(frozen=True)
class CredentialStatus:
    variable: str  # e.g. "LINODE_TOKEN"
    purpose: str  # what it is for
    found: bool
    source: str | None  # where it was found, e.g. ".env.secrets" or "linode-cli config"
    is_reference: bool  # an op:// reference (resolved at use time)


@dataclass(frozen=True)
class SettingsReport:
    workdir: str
    settings: Settings
    credentials: tuple[CredentialStatus, ...]
    values: tuple[tuple[str, str, str], ...]  # (variable, value, source) for non-secret settings


_PURPOSES = {
    "LINODE_TOKEN": "creates and destroys Linode GPU VMs",
    "HUGGING_FACE_HUB_TOKEN": "downloads gated models (e.g. Llama) on the VM",
    "DIGITALOCEAN_TOKEN": "creates and destroys DigitalOcean GPU Droplets",
}


def settings_report(workdir: str | Path) -> SettingsReport:
    """Collect the settings page's facts."""
    settings = load_settings(workdir)
    credentials = []
    for variable in SECRET_VARIABLES:
        secret = getattr(settings, SECRET_FIELDS[variable])
        credentials.append(CredentialStatus(
            variable=variable, purpose=_PURPOSES[variable], found=secret is not None,
            source=secret.source if secret else None, is_reference=bool(secret and secret.is_reference),
        ))
    values = []
    for variable, (attr, _parse) in FIELDS.items():
        if variable in settings.sources:
            values.append((variable, str(getattr(settings, attr)), settings.sources[variable]))
    return SettingsReport(str(workdir), settings, tuple(credentials), tuple(values))


def clear_plan_cache(home: str | Path) -> bool:
    """Delete the on-disk GPU plan cache; True if there was one."""
    return catalog_service.clear_cache(Path(home))
