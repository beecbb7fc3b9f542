"""Which clouds this laptop can use, and their GPU plans side by side.

A provider is *configured* when its credentials are found locally, without asking the cloud: a Linode token, a
DigitalOcean token, AWS credentials that botocore resolves from its local chain, or a host registered with
``maider host add``. The simulated cloud (demo) is always offered. Listing plans asks each configured provider; one
that fails (refused token, unreachable API) is reported on its own and never hides the others' plans.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

from app.config import Settings
from app.domain.cost import format_money
from app.domain.sizing import ModelFacts, Recommendation, format_context, recommend
from app.errors import ConfigError
from app.providers import get_provider
from app.providers.base import GpuPlan, Provider, ProviderError
from app.services import catalog as catalog_service
from app.services.model_info import ModelLookupError, lookup_model

ProviderFactory = Callable[[str, Settings, Path], Provider]

DEMO = "simulated"
CLOUD_ORDER = ("linode", "digitalocean", "aws", "ssh")  # the order every list shows them in, demo last
HOSTS_FILE = "hosts.json"  # written by ``maider host add``
LABELS = {"linode": "Linode (Akamai)", "digitalocean": "DigitalOcean", "aws": "AWS EC2",
          "ssh": "Your own GPU machine (SSH)", DEMO: "Demo (simulated cloud, costs nothing)"}
# One line per provider: how to give maider its credentials.
HOW_TO_CONFIGURE = {
    "linode": "add LINODE_TOKEN to .env.secrets (a token from cloud.linode.com with Linodes read/write), "
              "or log in with linode-cli",
    "digitalocean": "add DIGITALOCEAN_TOKEN to .env.secrets (a token from cloud.digitalocean.com: full access, "
                    "or the droplet, ssh_key and tag scopes)",
    "aws": "run 'aws configure' (or set AWS_PROFILE): maider uses the standard AWS credential chain",
    "ssh": "register your machine with 'maider host add'",
    DEMO: "always available",
}
# botocore credential providers that ask the network (instance metadata, a container's endpoint): never used here.
_NETWORK_CREDENTIAL_PROVIDERS = ("iam-role", "container-role")


@dataclass(frozen=True)
class ProviderPlans:
    """One provider's answer: its plans, or why it could not list them."""

    provider: str
    plans: tuple[GpuPlan, ...] = ()
    error: str | None = None  # one line for the user; None when the plans were listed


@dataclass(frozen=True)
class CheapestFit:
    """The cheapest plan that runs a model at a context, across providers."""

    provider: str
    recommendation: Recommendation

    @property
    def plan(self) -> GpuPlan:
        return self.recommendation.plan

    def sentence(self, model_id: str, context: int) -> str:
        """``Qwen/…-AWQ at 32,768 tokens: cheapest is gpu-l40sx1-48gb on digitalocean at $1.57/h``"""
        price = self.recommendation.hourly_price
        cost = f"{format_money(price)}/h" if price > 0 else "an unknown price"
        short = model_id.split("/")[-1]
        return f"{short} at {context:,} tokens: cheapest is {self.plan.id} on {self.provider} at {cost}"


def aws_credentials_found() -> bool:
    """True when botocore resolves AWS credentials from local sources (environment, files, profiles, SSO cache).

    The instance-metadata and container providers are removed first: they would call the network, and a laptop
    has neither."""
    try:
        import botocore.session
        from botocore.exceptions import BotoCoreError
    except ImportError:
        return False
    try:
        session = botocore.session.Session()
        resolver = session.get_component("credential_provider")
        for method in _NETWORK_CREDENTIAL_PROVIDERS:
            resolver.remove(method)
        return resolver.load_credentials() is not None
    except (BotoCoreError, OSError, ValueError):
        return False  # a broken ~/.aws/config means: not configured (the AWS provider's own error says why)


def registered_hosts(home: Path) -> int:
    """How many hosts ``maider host add`` registered in ``home/hosts.json``; 0 when the file is absent or unreadable."""
    try:
        data = json.loads((Path(home) / HOSTS_FILE).read_text())
    except (OSError, ValueError):
        return 0
    if isinstance(data, dict) and isinstance(data.get("hosts"), (list, dict)):
        data = data["hosts"]
    return len(data) if isinstance(data, (list, dict)) else 0


def is_configured(name: str, settings: Settings, home: Path) -> bool:
    """Whether the named provider's credentials are found locally (the demo always is)."""
    if name == "linode":
        return settings.linode_token is not None
    if name == "digitalocean":
        return settings.digitalocean_token is not None
    if name == "aws":
        return aws_credentials_found()
    if name == "ssh":
        return registered_hosts(home) > 0
    return name == DEMO


def configured_providers(settings: Settings, home: Path, *, include_demo: bool = False) -> list[str]:
    """The clouds with credentials found here, in ``CLOUD_ORDER``; the demo last when ``include_demo``."""
    names = [name for name in CLOUD_ORDER if is_configured(name, settings, home)]
    return names + [DEMO] if include_demo else names


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


def plans_of(name: str, settings: Settings, home: Path, *, factory: ProviderFactory = get_provider,
             region: str | None = None, refresh: bool = False) -> ProviderPlans:
    """One provider's GPU plans (cached catalog), or the one-line reason it could not list them.

    REGION belongs to PROVIDER: another provider is built without it (AWS would otherwise look for us-ord)."""
    if name != settings.provider:
        settings = replace(settings, region=None)
    try:
        provider = factory(name, settings, home)
        plans = catalog_service.list_plans(provider, home, region, refresh)
    except (ProviderError, ConfigError) as exc:
        return ProviderPlans(name, error=_one_line(exc))
    except ImportError as exc:  # the provider's SDK is missing from this install
        return ProviderPlans(name, error=f"its client library is not installed ({exc.name})")
    return ProviderPlans(name, tuple(plans))


def plans_across(names: Iterable[str], settings: Settings, home: Path, *, factory: ProviderFactory = get_provider,
                 region: str | None = None, refresh: bool = False) -> list[ProviderPlans]:
    """Every named provider's plans, each provider's failure kept to itself; asked at once, so an unreachable
    cloud costs its own timeout once, not one after another."""
    names = list(names)
    if len(names) < 2:
        return [plans_of(name, settings, home, factory=factory, region=region, refresh=refresh) for name in names]
    with ThreadPoolExecutor(max_workers=len(names), thread_name_prefix="plans") as pool:
        return list(pool.map(lambda name: plans_of(name, settings, home, factory=factory, region=region,
                                                   refresh=refresh), names))


def cheapest_fit(facts: ModelFacts, context: int, catalogs: Sequence[ProviderPlans], *,
                 region: str | None = None, gpu_memory_utilization: float = 0.90,
                 kv_cache_dtype: str = "auto") -> CheapestFit | None:
    """The cheapest plan of any provider that runs ``facts`` at ``context`` (in ``region`` when given).

    A known price beats an unknown one; on a tie the provider listed first wins."""
    best: CheapestFit | None = None
    for catalog in catalogs:
        plans = [p for p in catalog.plans if region is None or not p.regions or region in p.regions]
        found = recommend(facts, context, plans, gpu_memory_utilization, kv_cache_dtype)
        if not found:
            continue
        candidate = CheapestFit(catalog.provider, found[0])
        if best is None or _price_key(candidate) < _price_key(best):
            best = candidate
    return best


# Providers whose price 0 is a real price, not an unknown one: your own machine costs what you said (0 by default).
_PRICED_AT_ZERO = frozenset({"ssh"})


def _price_key(fit: CheapestFit) -> tuple[bool, float]:
    """Cheapest first; an unknown price (0 from a cloud) after every known one."""
    price = fit.recommendation.hourly_price
    return price <= 0 and fit.provider not in _PRICED_AT_ZERO, price


def no_fit_sentence(model_id: str, context: int, names: Sequence[str]) -> str:
    """What to say when no provider's plan runs the model at the context."""
    return (f"{model_id} at {format_context(context)}: no plan of {', '.join(names) or 'any configured provider'} "
            "fits; try a shorter context or a smaller (quantized) model")


@dataclass(frozen=True)
class ProviderChoice:
    """Where a launch with no plan and no pinned provider goes: the settings to launch with, and why."""

    settings: Settings  # provider, region and plan filled in
    sentence: str  # e.g. "Qwen2.5-Coder-32B-Instruct-AWQ at 32,768 tokens: cheapest is … on … at $…/h"


def cheapest_across_providers(settings: Settings, home: Path, factory: ProviderFactory = get_provider, *,
                              model_lookup: Callable[..., ModelFacts] = lookup_model) -> ProviderChoice | None:
    """The cheapest plan of any configured provider that runs the model at the asked context.

    None leaves the choice to the usual rule (the cheapest plan in REGION of PROVIDER): when only that provider is
    configured, when the model cannot be sized, when nothing fits, or when the winner is PROVIDER itself and
    REGION is set (the region then stands).
    """
    names = configured_providers(settings, home)
    if not names or names == [settings.provider] or not settings.model_id:
        return None
    try:
        hf_token = settings.hf_token.reveal() if settings.hf_token else None
        facts = model_lookup(settings.model_id, hf_token, home)
    except (ModelLookupError, ConfigError):
        return None
    context = min(settings.max_model_len, facts.max_position_embeddings)
    catalogs = plans_across(names, settings, home, factory=factory)
    fit = cheapest_fit(facts, context, catalogs, gpu_memory_utilization=settings.gpu_memory_utilization,
                       kv_cache_dtype=settings.kv_cache_dtype)
    if fit is None or (fit.provider == settings.provider and settings.region):
        return None
    regions = fit.plan.regions
    region = regions[0] if regions else (settings.region if fit.provider == settings.provider else None)
    chosen = replace(settings, provider=fit.provider, plan=fit.plan.id, region=region)
    return ProviderChoice(chosen, fit.sentence(facts.model_id, context))
