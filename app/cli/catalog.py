"""Catalog commands: ``list-types``."""
from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import click

from app.config import PROVIDER_NAMES, Settings, default_home, load_settings
from app.domain.cost import format_money
from app.errors import MaiderError
from app.providers import get_provider
from app.providers.base import GpuPlan
from app.services import providers as providers_service
from app.services.catalog import CACHE_TTL, list_plans, list_regions

MAX_REGIONS_SHOWN = 3
HEADERS = ("PLAN", "GPUS", "GPU MODEL", "VRAM/GPU", "VRAM TOTAL", "$/HOUR", "REGIONS")
RIGHT_ALIGNED = {1, 3, 4, 5}  # numeric columns
NO_CREDENTIALS = ("No Linode token found (LINODE_TOKEN, .env.secrets or linode-cli), nor any other cloud's "
                  "credentials: demo mode, listing the simulated cloud's plans.")


def _gb(value: float) -> str:
    return f"{value:g} GB" if value else "?"


def _regions_cell(regions: Sequence[str]) -> str:
    if not regions:
        return "unknown"
    shown = ", ".join(regions[:MAX_REGIONS_SHOWN])
    more = len(regions) - MAX_REGIONS_SHOWN
    return f"{shown} +{more} more" if more > 0 else shown


def format_plan_table(plans: Sequence[GpuPlan], providers: Sequence[str] | None = None) -> str:
    """An aligned text table of GPU plans, one per line under a header; a PROVIDER column first when ``providers``
    names each plan's provider."""
    headers = (("PROVIDER",) if providers is not None else ()) + HEADERS
    shift = 1 if providers is not None else 0
    rows = [headers] + [
        ((providers[i],) if providers is not None else ()) + (
            plan.id, str(plan.gpus), plan.gpu.name if plan.gpu else "unknown", _gb(plan.vram_gb_per_gpu),
            _gb(plan.vram_gb_total), format_money(plan.hourly_price) if plan.hourly_price > 0 else "unknown",
            _regions_cell(plan.regions))
        for i, plan in enumerate(plans)
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(headers))]
    right = {i + shift for i in RIGHT_ALIGNED}
    lines = []
    for row in rows:
        cells = [cell.rjust(widths[i]) if i in right else cell.ljust(widths[i]) for i, cell in enumerate(row)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _home_for(name: str, home: Path) -> Path:
    return home / "demo" if name == providers_service.DEMO else home


def _which_providers(settings: Settings, asked: Sequence[str], home: Path) -> list[str]:
    """The providers asked for, else every configured one; the demo when none is (as ``maider serve`` does)."""
    if asked:
        return list(dict.fromkeys(asked))
    names = providers_service.configured_providers(settings, home)
    if settings.provider == providers_service.DEMO or not names:
        if not names:
            click.echo(NO_CREDENTIALS, err=True)
        return [providers_service.DEMO]
    return names


def _plans_in(name: str, settings: Settings, home: Path, region: str | None, refresh: bool,
              several: bool) -> list[GpuPlan] | None:
    """One provider's plans (in ``region``); None when it has no such GPU region and others are being asked."""
    provider = get_provider(name, settings, home)
    if region is not None:
        known = sorted(r.id for r in list_regions(provider, home, refresh=refresh) if r.has_gpus)
        if region not in known:
            if several:
                return None
            raise click.ClickException(
                f"'{region}' is not a {provider.name} region with GPUs; GPU regions: {', '.join(known)}")
    return list_plans(provider, home, region, refresh)


@click.command("list-types")
@click.option("--provider", "-p", "providers", type=click.Choice(PROVIDER_NAMES), metavar="PROVIDER", multiple=True,
              help=f"Only this provider ({', '.join(PROVIDER_NAMES)}); repeat it for several. Default: every "
                   "provider with credentials.")
@click.option("--region", "-r", metavar="REGION",
              help="Show only plans offered in REGION (e.g. us-ord), priced for it.")
@click.option("--refresh", is_flag=True,
              help=f"Ask the provider again instead of using the catalog cached for {int(CACHE_TTL.total_seconds() // 3600)} h.")
def list_types(providers: tuple[str, ...], region: str | None, refresh: bool) -> None:
    """List GPU plans of every configured provider with GPU model, count, VRAM and hourly price."""
    settings, home = load_settings(), default_home()
    names = _which_providers(settings, providers, home)
    several = len(names) > 1

    def ask(name: str) -> list[GpuPlan] | str | None:
        """The provider's plans, None when it lacks the region, or its failure as one line (several providers)."""
        try:
            return _plans_in(name, settings, _home_for(name, home), region, refresh, several)
        except (MaiderError, ImportError) as exc:
            message = " ".join(str(exc).split())
            if not several:
                raise click.ClickException(message) from None
            return message

    with ThreadPoolExecutor(max_workers=len(names), thread_name_prefix="list-types") as pool:
        answers = list(pool.map(ask, names))  # at once: an unreachable cloud delays the table by one timeout
    rows: list[tuple[str, GpuPlan]] = []
    failures: list[str] = []
    answered: list[str] = []
    for name, plans in zip(names, answers):
        if isinstance(plans, str):
            failures.append(f"{name}: {plans}")
        elif plans is not None:
            answered.append(name)
            rows.extend((name, plan) for plan in plans)
    for failure in failures:
        click.secho(f"✗ {failure}", fg="red", err=True)
    if failures and not answered:
        raise click.ClickException("no provider could list its plans (see above)")
    if region is not None and not answered:
        raise click.ClickException(f"'{region}' is not a GPU region of {', '.join(names)}")
    if not rows:
        click.echo(f"No GPU plans offered{f' in {region}' if region else ''} right now.")
        return
    rows.sort(key=lambda row: (row[1].hourly_price <= 0, row[1].hourly_price, row[0], row[1].id))
    where = f"in {region}" if region else "in any region (base prices)"
    click.echo(f"GPU plans on {', '.join(answered)} {where}; prices are estimates, billed while the VM exists; "
               "GB = 10^9 bytes, as everywhere in maider.\n")
    click.echo(format_plan_table([plan for _name, plan in rows], [name for name, _plan in rows] if several else None))


commands = [list_types]
