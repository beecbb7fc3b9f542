"""Catalog commands: ``list-types``."""
from __future__ import annotations

from collections.abc import Sequence

import click

from app.cli.local_cloud import local_cloud
from app.config import load_settings
from app.domain.cost import format_money
from app.errors import MaiderError
from app.providers.base import GpuPlan
from app.services.catalog import CACHE_TTL, list_plans, list_regions

MAX_REGIONS_SHOWN = 3
HEADERS = ("PLAN", "GPUS", "GPU MODEL", "VRAM/GPU", "VRAM TOTAL", "$/HOUR", "REGIONS")
RIGHT_ALIGNED = {1, 3, 4, 5}  # numeric columns


def _gb(value: float) -> str:
    return f"{value:g} GB" if value else "?"


def _regions_cell(regions: Sequence[str]) -> str:
    if not regions:
        return "unknown"
    shown = ", ".join(regions[:MAX_REGIONS_SHOWN])
    more = len(regions) - MAX_REGIONS_SHOWN
    return f"{shown} +{more} more" if more > 0 else shown


def format_plan_table(plans: Sequence[GpuPlan]) -> str:
    """An aligned text table of GPU plans, one per line under a header."""
    rows = [HEADERS] + [
        (plan.id, str(plan.gpus), plan.gpu.name if plan.gpu else "unknown", _gb(plan.vram_gb_per_gpu),
         _gb(plan.vram_gb_total), format_money(plan.hourly_price) if plan.hourly_price > 0 else "unknown",
         _regions_cell(plan.regions))
        for plan in plans
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADERS))]
    lines = []
    for row in rows:
        cells = [cell.rjust(widths[i]) if i in RIGHT_ALIGNED else cell.ljust(widths[i]) for i, cell in enumerate(row)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


@click.command("list-types")
@click.option("--region", "-r", metavar="REGION",
              help="Show only plans offered in REGION (e.g. us-ord), priced for it.")
@click.option("--refresh", is_flag=True,
              help=f"Ask the provider again instead of using the catalog cached for {int(CACHE_TTL.total_seconds() // 3600)} h.")
def list_types(region: str | None, refresh: bool) -> None:
    """List GPU plans with GPU model, count, VRAM and hourly price."""
    try:
        settings, provider, home = local_cloud(load_settings())
        if region is not None:
            known = sorted(r.id for r in list_regions(provider, home, refresh=refresh))
            if region not in known:
                raise click.ClickException(
                    f"'{region}' is not a {provider.name} region with GPUs; GPU regions: {', '.join(known)}")
        plans = list_plans(provider, home, region, refresh)
    except MaiderError as exc:
        raise click.ClickException(" ".join(str(exc).split())) from None
    if not plans:
        click.echo(f"No GPU plans offered{f' in {region}' if region else ''} right now.")
        return
    where = f"in {region}" if region else "in any region (base prices)"
    click.echo(f"GPU plans on {provider.name} {where}; prices are estimates, billed hourly while the VM exists; GB = 10^9 bytes, as everywhere in maider.\n")
    click.echo(format_plan_table(plans))


commands = [list_types]
