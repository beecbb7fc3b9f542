"""Regions and GPU plans, cached on disk with a TTL so listing plans does not cost an API round trip every time."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path
from typing import Any

from app.domain.gpu_catalog import GPU_MODELS
from app.providers.base import GpuPlan, Provider, Region

CACHE_TTL = timedelta(hours=6)
CACHE_DIR = "cache"


def _cache_path(home: Path, provider: Provider, what: str) -> Path:
    """One cache per provider *and* API endpoint, so a test server or proxy never serves another's catalog."""
    endpoint = str(getattr(provider, "base_url", "") or "")
    suffix = f"-{hashlib.sha1(endpoint.encode()).hexdigest()[:8]}" if endpoint else ""
    return home / CACHE_DIR / f"{provider.name}{suffix}-{what}.json"


def _read_cache(path: Path, now: float) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if now - float(data.get("fetched_at", 0)) > CACHE_TTL.total_seconds():
        return None
    return data


def _write_cache(path: Path, payload: dict[str, Any]) -> None:
    """Atomic, and safe when several threads write at once: each writes its own temporary file, then renames."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w") as handle:
        handle.write(json.dumps(payload))
    os.replace(tmp, path)  # a concurrent reader never sees half a file


def _plan_from_json(raw: dict[str, Any]) -> GpuPlan:
    gpu_key = raw.pop("gpu_key", None)
    raw.pop("gpu", None)
    raw["regions"] = tuple(raw.get("regions") or ())
    return GpuPlan(gpu=GPU_MODELS.get(gpu_key) if gpu_key else None, **raw)


def _plan_to_json(plan: GpuPlan) -> dict[str, Any]:
    data = asdict(plan)
    data.pop("gpu")
    data["gpu_key"] = plan.gpu.key if plan.gpu else None
    return data


def list_plans(provider: Provider, home: Path, region: str | None = None, refresh: bool = False,
               now: float | None = None, cache_only: bool = False) -> list[GpuPlan]:
    """GPU plans (priced for ``region`` when given), sorted by price; from the cache unless stale or ``refresh``.

    ``cache_only`` never calls a remote API (for page renders): it answers [] when nothing is cached, unless the
    provider's catalog is local anyway (``catalog_is_local``).
    """
    now = time.time() if now is None else now
    path = _cache_path(home, provider, "plans")
    cache = None if refresh else _read_cache(path, now)
    key = region or "*"
    if cache is not None and key in cache.get("plans", {}):
        return [_plan_from_json(dict(p)) for p in cache["plans"][key]]
    if cache_only and not getattr(provider, "catalog_is_local", False):
        return []
    plans = sorted(provider.gpu_plans(region), key=lambda p: (p.hourly_price or float("inf"), p.id))
    payload = cache if cache is not None else {"fetched_at": now, "plans": {}}
    payload["plans"][key] = [_plan_to_json(p) for p in plans]
    _write_cache(path, payload)
    return plans


def list_regions(provider: Provider, home: Path, refresh: bool = False, now: float | None = None) -> list[Region]:
    """Regions, from the cache unless stale or ``refresh``."""
    now = time.time() if now is None else now
    path = _cache_path(home, provider, "regions")
    cache = None if refresh else _read_cache(path, now)
    if cache is not None:
        return [Region(**r) for r in cache["regions"]]
    regions = provider.regions()
    _write_cache(path, {"fetched_at": now, "regions": [asdict(r) for r in regions]})
    return regions


def clear_cache(home: Path) -> bool:
    """Remove every cached catalog file; True if any existed."""
    removed = False
    for path in (home / CACHE_DIR).glob("*.json"):
        path.unlink(missing_ok=True)
        removed = True
    return removed


def quoted_price(provider: Provider, home: Path, plan_id: str, region: str | None) -> float | None:
    """The plan's $/h in the region from what is cached (no API call); None when unknown."""
    for plan in list_plans(provider, home, region, cache_only=True):
        if plan.id == plan_id:
            return plan.hourly_price or None
    return None


def warm_cache(app) -> None:
    """Keep the configured provider's regions and plans cached, so a launch or a page never waits on the API.

    Runs in the background (``maider serve``); it only calls the provider when the cache is missing or stale.
    """
    from app.config import load_settings
    from app.engine.runtime import runtime

    workdir = app.config["MAIDER_WORKDIR"]
    settings = load_settings(workdir)
    name = "simulated" if app.config.get("MAIDER_DEMO") else settings.provider
    if not app.config.get("MAIDER_DEMO"):
        _warm_other_providers(app, settings, name)
    if name == "linode" and settings.linode_token is None:
        return  # nothing to ask with; the settings page and the wizard say how to add a token
    engine = runtime(app)
    provider = engine.provider(name, workdir)
    list_regions(provider, engine.home)
    list_plans(provider, engine.home)
    if settings.region:
        list_plans(provider, engine.home, settings.region)


def _warm_other_providers(app, settings, default: str) -> None:
    """The plans of every other configured provider too: a launch without a plan compares them all. A provider
    that fails is skipped (the next round asks again)."""
    from app.engine.runtime import runtime
    from app.providers import get_provider
    from app.services import providers as providers_service

    home = runtime(app).home
    others = [name for name in providers_service.configured_providers(settings, home) if name != default]
    factory = app.config.get("MAIDER_PROVIDER_FACTORY") or get_provider
    providers_service.plans_across(others, settings, home, factory=factory)
