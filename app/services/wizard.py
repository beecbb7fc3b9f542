"""The setup wizard's rules, shared by ``/setup`` and ``maider wizard``.

Steps: cloud (those with credentials, Linode, and the demo) → capability tier → region (only regions with a plan
that runs the tier's models) → GPU plan (the region's plans, cheapest first, the cheapest that fits recommended) → model and context (sized on that plan) → credentials → review
(``validate_launch`` on the would-be settings) → save. Saving merges into ``.env`` and ``.env.secrets``: keys the
wizard does not manage, comments and blank lines are kept; both files end up 0600. Secrets are never returned by any
function here, only where they were found.
"""
from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from app.config import ENV_FILE, PROVIDER_NAMES, SECRETS_FILE, Secret, Settings, load_settings
from app.domain.cost import format_money
from app.domain.models_catalog import CATALOG, CatalogModel
from app.domain.sizing import CONTEXT_STEP, ModelFacts, best_tp, estimate_fit, format_context, recommend
from app.errors import ConfigError, UserError
from app.providers import get_provider
from app.providers.base import GpuPlan, Provider, ProviderError, Region
from app.services import catalog as catalog_service
from app.services import providers as providers_service
from app.services.env_files import FILE_MODE, merge_env_file
from app.services.model_info import ModelLookupError, lookup_model, validate_model_id
from app.services.validation import ValidationReport, cheapest_fit_hint, validate_launch

ModelLookup = Callable[..., ModelFacts]

CUSTOM_TIER = "custom"
MIN_USEFUL_CONTEXT = 4096  # below this a coding assistant cannot hold a file and a question
DEFAULT_CONTEXT = 32768  # proposed for a model outside maider's catalog (capped at what fits)
DEFAULT_IDLE_MINUTES = 60  # autostop for new configurations: an idle VM is destroyed after this long
ENV_KEYS = ("PROVIDER", "REGION", "TYPE", "MODEL_ID", "SERVED_MODEL_NAME", "VLLM_MAX_MODEL_LEN",
            "VLLM_TENSOR_PARALLEL_SIZE")
SECRET_KEYS = {"linode": "LINODE_TOKEN", "hf": "HUGGING_FACE_HUB_TOKEN"}
_OP_REFERENCE = re.compile(r"^op://[^/\r\n]+/[^/\r\n]+(/[^/\r\n]+)+$")  # names may hold spaces
_TOKEN = re.compile(r"^[\x21-\x7e]{8,512}$")  # printable ASCII, no spaces

# Region id -> standard UTC offset (hours) of its city. A rough latency hint from the laptop's time zone, no probing.
REGION_UTC_OFFSETS: dict[str, float] = {
    "us-ord": -6, "us-central": -6, "us-sea": -8, "us-west": -8, "us-lax": -8, "us-east": -5, "us-iad": -5,
    "us-mia": -5, "us-southeast": -5, "ca-central": -5, "br-gru": -3, "gb-lon": 0, "eu-west": 0, "fr-par": 1,
    "de-fra-2": 1, "eu-central": 1, "nl-ams": 1, "se-sto": 1, "it-mil": 1, "es-mad": 1, "ap-west": 5.5,
    "in-maa": 5.5, "in-bom-2": 5.5, "id-cgk": 7, "sg-sin-2": 8, "ap-south": 8, "jp-osa": 9, "jp-tyo-3": 9,
    "ap-northeast": 9, "au-mel": 10, "ap-southeast": 10,
}


class WizardError(UserError):
    """A choice the wizard cannot accept; ``field`` names the form field it belongs next to (None: the step)."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class TierOption:
    key: str  # "small" | "medium" | "large" | "custom"
    label: str  # e.g. "Small · 7–14B"
    summary: str  # one sentence on what it buys
    examples: str  # model families of the tier in maider's catalog


TIER_OPTIONS: tuple[TierOption, ...] = (
    TierOption("small", "Small · 7–14B", "Quick answers and edits on one GPU; the cheapest way to start.",
               "Qwen2.5-Coder 7B and 14B, DeepSeek-Coder-V2-Lite"),
    TierOption("medium", "Medium · 30–32B", "Stronger reasoning over bigger changes; usually two GPUs.",
               "Qwen2.5-Coder 32B, Qwen3-Coder 30B-A3B"),
    TierOption("large", "Large · 70B+", "The most capable open models; four GPUs, several dollars an hour.",
               "Llama 3.1 70B (4-bit AWQ)"),
    TierOption(CUSTOM_TIER, "Custom", "Any Hugging Face model: every GPU region and plan, sized when you pick it.",
               "any org/name on Hugging Face"),
)
TIER_KEYS = tuple(t.key for t in TIER_OPTIONS)


@dataclass(frozen=True)
class LatencyHint:
    hours: float  # time-zone distance between the laptop and the region
    level: str  # "near" | "mid" | "far"
    text: str  # e.g. "near you", "6 time zones away"


@dataclass(frozen=True)
class RegionOption:
    region: Region
    fitting_plans: int  # plans offered there that run the tier's models
    from_price: float  # cheapest such plan, base price (0.0 = unknown)
    latency: LatencyHint | None
    recommended: bool = False


@dataclass(frozen=True)
class PlanOption:
    plan: GpuPlan
    fitting_models: tuple[str, ...]  # tier models that run on it at their proposed context
    recommended: bool = False

    @property
    def fits(self) -> bool:
        return bool(self.fitting_models)


@dataclass(frozen=True)
class ModelOption:
    entry: CatalogModel
    max_context: int  # largest context that fits on the plan (0: not at all)
    context: int  # what the wizard proposes: the model's default, capped at what fits
    tp: int
    recommended: bool = False


@dataclass(frozen=True)
class ModelSizing:
    """The chosen model on the chosen plan."""

    model_id: str
    context: int
    tp: int | None  # None when the model could not be sized (vLLM then uses every GPU)
    max_context: int | None  # None when the model could not be sized
    note: str | None = None  # e.g. "could not be sized offline"
    facts: ModelFacts | None = None


@dataclass(frozen=True)
class Choices:
    """Everything picked before the credentials step; travels between steps in hidden fields."""

    provider: str | None = None  # None: the project's PROVIDER (the demo's simulated cloud in demo mode)
    tier: str | None = None
    region: str | None = None
    plan: str | None = None
    model_id: str | None = None
    max_model_len: int | None = None
    tensor_parallel_size: int | None = None


@dataclass(frozen=True)
class CredentialInfo:
    variable: str  # e.g. "LINODE_TOKEN"
    found: bool
    source: str | None  # where it was found: ".env.secrets", "environment", linode-cli config path
    is_reference: bool  # an op:// 1Password reference
    overridden_by_environment: bool  # the environment wins over anything saved to .env.secrets

    @property
    def description(self) -> str:
        if not self.found:
            return "not set"
        kind = "1Password reference" if self.is_reference else "token"
        where = "the environment" if self.source == "environment" else self.source
        return f"{kind} found in {where}"


@dataclass
class Review:
    settings: Settings  # the would-be settings (secrets wrapped, never shown)
    report: ValidationReport
    warnings: list[str] = field(default_factory=list)  # e.g. an environment variable that overrides .env

    @property
    def ok(self) -> bool:
        return self.report.ok

    def outside_wizard(self, variable: str) -> str | None:
        """Where to fix a problem the wizard cannot (e.g. ``VLLM_DTYPE`` from .env), or None when it can."""
        if variable in ENV_KEYS or variable in SECRET_KEYS.values():
            return None
        return self.settings.sources.get(variable) or ENV_FILE


@dataclass(frozen=True)
class SavedFiles:
    env: Path
    secrets: Path | None  # None when no secret changed
    updated: tuple[str, ...]  # variables written


@dataclass
class Context:
    """Where the wizard works: the project dir, maider's data dir, demo or not, and the current settings."""

    workdir: Path
    home: Path
    demo: bool
    settings: Settings
    provider_factory: Callable[[str, Settings, Path], Provider] = get_provider
    chosen_provider: str | None = None  # the provider step's answer; None: the project's PROVIDER
    _provider: Provider | None = None

    @property
    def provider_name(self) -> str:
        return "simulated" if self.demo else (self.chosen_provider or self.settings.provider)

    def provider(self) -> Provider:
        if self._provider is None:
            try:
                self._provider = self.provider_factory(self.provider_name, self.settings, self.home)
            except ConfigError as exc:
                raise WizardError(str(exc)) from None
        return self._provider


def open_context(workdir: Path | str, home: Path | str, demo: bool = False,
                 environ: Mapping[str, str] | None = None, provider: str | None = None) -> Context:
    """Read the current settings of ``workdir``; the provider (``provider``, else PROVIDER) is built when first
    needed. An unknown provider name is ignored: the provider step refuses it with a message."""
    workdir = Path(workdir)
    chosen = provider if provider in PROVIDER_NAMES else None
    return Context(workdir=workdir, home=Path(home), demo=demo, settings=load_settings(workdir, environ),
                   chosen_provider=chosen)


@dataclass(frozen=True)
class ProviderOption:
    name: str  # e.g. "digitalocean"
    label: str  # e.g. "DigitalOcean"
    enabled: bool  # credentials found (Linode: its token can be pasted at the last step; the demo: always)
    detail: str  # one line: where the credentials were found, or how to add them
    recommended: bool = False


def provider_options(ctx: Context) -> list[ProviderOption]:
    """Every cloud maider knows, those with credentials enabled, then the demo; the current one recommended.

    Linode stays enabled without a token, since the wizard's last step saves one; in demo mode only the simulated
    cloud is (the panel then launches nowhere else)."""
    options = []
    configured = set(providers_service.configured_providers(ctx.settings, ctx.home))
    for name in providers_service.CLOUD_ORDER:
        if ctx.demo:
            enabled = False
            detail = "demo mode: restart 'maider serve' with this provider's credentials to use it"
        elif name in configured:
            enabled, detail = True, "credentials found"
        elif name == "linode":
            enabled = True
            detail = ("no token yet: paste one at the last step (a cloud.linode.com token with Linodes "
                      "read/write), or log in with linode-cli")
        else:
            enabled, detail = False, "no credentials: " + providers_service.HOW_TO_CONFIGURE[name]
        options.append(ProviderOption(name, providers_service.LABELS[name], enabled, detail))
    options.append(ProviderOption(providers_service.DEMO, providers_service.LABELS[providers_service.DEMO], True,
                                  "try every step offline: nothing is created in a cloud"))
    best = _recommended(options, ctx.provider_name, configured)
    options[best] = replace(options[best], recommended=True)
    return options


def _recommended(options: list[ProviderOption], current: str, configured: set[str]) -> int:
    """PROVIDER when it can launch; else the first cloud with credentials; else PROVIDER when it is enabled (Linode:
    its token comes at the last step); else the demo."""
    def ready(o: ProviderOption) -> bool:
        return o.enabled and (o.name == providers_service.DEMO or o.name in configured)

    rules = (lambda o: o.name == current and ready(o), lambda o: ready(o) and o.name != providers_service.DEMO,
             lambda o: o.name == current and o.enabled, lambda o: o.enabled)
    return next(i for rule in rules for i, o in enumerate(options) if rule(o))


def choose_provider(ctx: Context, choices: Choices, name: str | None) -> tuple[Choices, Context]:
    """Accept an enabled provider; another provider starts over (regions and plans are the provider's own)."""
    option = next((o for o in provider_options(ctx) if o.name == name), None)
    if option is None:
        raise WizardError(f"unknown provider '{name}': pick one of {', '.join(PROVIDER_NAMES)}", "provider")
    if not option.enabled:
        raise WizardError(f"{option.label} cannot be used yet: {option.detail}", "provider")
    chosen = keep_or_start(choices, "provider", name) or Choices(provider=name)
    return chosen, replace(ctx, chosen_provider=name, _provider=None)


def _provider_error(exc: Exception, what: str, provider: str) -> WizardError:
    """A provider failure as one sentence for the step (never a traceback, never a token)."""
    return WizardError(f"could not {what} from {provider}: {' '.join(str(exc).split())}")


def tier_models(tier: str | None) -> list[CatalogModel]:
    """Catalog models of a tier (custom: the whole catalog)."""
    if tier not in TIER_KEYS:
        raise WizardError(f"unknown capability tier '{tier}': pick one of {', '.join(TIER_KEYS)}", "tier")
    return list(CATALOG) if tier == CUSTOM_TIER else [m for m in CATALOG if m.tier == tier]


def _model_fit(entry_facts: ModelFacts, plan: GpuPlan, context: int) -> tuple[bool, int, int]:
    """(runs at ``context``, largest context that fits, tensor parallel size) for one model on one plan."""
    if plan.gpu is None or plan.gpus < 1:
        return False, 0, 1
    tp = best_tp(entry_facts, plan.gpus)
    report = estimate_fit(entry_facts, plan.gpu, plan.gpus, tp, context)
    non_memory = [p for p in report.problems if not p.memory and p.setting != "max_model_len"]
    return report.fits, (0 if non_memory else report.max_context), tp


def _fitting_models(tier: str, plan: GpuPlan) -> tuple[str, ...]:
    if tier == CUSTOM_TIER:
        return ("any",) if plan.gpu is not None else ()
    return tuple(m.model_id for m in tier_models(tier) if _model_fit(m.facts, plan, m.default_context)[0])


def latency_hint(region_id: str, utc_offset_hours: float | None = None) -> LatencyHint | None:
    """How far the region is from this laptop in time zones: a rough stand-in for network latency."""
    offset = REGION_UTC_OFFSETS.get(region_id)
    if offset is None:
        return None
    here = time.localtime().tm_gmtoff / 3600 if utc_offset_hours is None else utc_offset_hours
    hours = abs(offset - here)
    hours = min(hours, 24 - hours)
    if hours <= 1.5:
        return LatencyHint(hours, "near", "near you")
    level = "mid" if hours <= 4 else "far"
    return LatencyHint(hours, level, f"{hours:g} time zones away")


def region_options(ctx: Context, tier: str, *, refresh: bool = False,
                   utc_offset_hours: float | None = None) -> list[RegionOption]:
    """GPU regions with at least one plan that runs the tier's models; the nearest (then cheapest) recommended."""
    tier_models(tier)
    provider = ctx.provider()
    try:
        regions = catalog_service.list_regions(provider, ctx.home, refresh=refresh)
        plans = catalog_service.list_plans(provider, ctx.home, refresh=refresh)
    except ProviderError as exc:
        raise _provider_error(exc, "list regions", provider.name) from None
    except ConfigError as exc:  # e.g. an op:// token that 1Password could not resolve
        raise WizardError(str(exc)) from None
    fitting = [(p, p.hourly_price) for p in plans if _fitting_models(tier, p)]
    options = []
    for region in regions:
        if not region.has_gpus or not region.has_metadata:  # no Metadata: cloud-init gets no user data
            continue
        here = [price for plan, price in fitting if not plan.regions or region.id in plan.regions]
        if not here:
            continue
        known = [p for p in here if p > 0]
        options.append(RegionOption(region, len(here), min(known) if known else 0.0,
                                    latency_hint(region.id, utc_offset_hours)))
    options.sort(key=lambda o: (o.latency.hours if o.latency else 99, o.from_price or float("inf"), o.region.id))
    if options:
        options[0] = replace(options[0], recommended=True)
    return options


def plan_options(ctx: Context, tier: str, region: str) -> list[PlanOption]:
    """The region's GPU plans, cheapest first; the cheapest that runs the tier's models is recommended."""
    tier_models(tier)
    provider = ctx.provider()
    try:
        known_regions = {r.id for r in catalog_service.list_regions(provider, ctx.home)
                         if r.has_gpus and r.has_metadata}
        if region not in known_regions:
            raise WizardError(f"'{region}' is not a GPU region of {provider.name}: pick one from the list", "region")
        plans = catalog_service.list_plans(provider, ctx.home, region=region)
    except ProviderError as exc:
        raise _provider_error(exc, "list GPU plans", provider.name) from None
    except ConfigError as exc:
        raise WizardError(str(exc)) from None
    plans = [p for p in plans if not p.regions or region in p.regions]
    plans.sort(key=lambda p: (p.hourly_price <= 0, p.hourly_price, p.gpus, p.id))
    options = [PlanOption(p, _fitting_models(tier, p)) for p in plans]
    best = next((i for i, o in enumerate(options) if o.fits), None)
    if best is not None:
        options[best] = replace(options[best], recommended=True)
    return options


def region_name(ctx: Context, region_id: str | None) -> str:
    """``Chicago, IL (us-ord)`` from the cached region list; the bare id when it is not known."""
    try:
        regions = catalog_service.list_regions(ctx.provider(), ctx.home)
    except (ProviderError, ConfigError):
        return region_id or ""
    label = next((r.label for r in regions if r.id == region_id), None)
    return f"{label} ({region_id})" if label else (region_id or "")


def find_plan(ctx: Context, tier: str, region: str, plan_id: str | None) -> GpuPlan:
    """The chosen plan as offered in the region, or a WizardError for the plan field."""
    for option in plan_options(ctx, tier, region):
        if option.plan.id == plan_id:
            return option.plan
    raise WizardError(f"plan '{plan_id}' is not offered in {region}: pick one from the list", "plan")


def _proposed_context(default: int, max_context: int) -> int:
    return min(default, max_context) // CONTEXT_STEP * CONTEXT_STEP if max_context >= CONTEXT_STEP else max_context


def model_options(tier: str, plan: GpuPlan) -> list[ModelOption]:
    """Catalog models that run on the plan (tier's own first), with the context each can have there."""
    own = tier_models(tier)
    others = [m for m in CATALOG if m not in own] if tier != CUSTOM_TIER else []
    options = []
    for entry in own + others:
        _fits, max_context, tp = _model_fit(entry.facts, plan, entry.default_context)
        if max_context < MIN_USEFUL_CONTEXT:
            continue
        options.append(ModelOption(entry, max_context, _proposed_context(entry.default_context, max_context), tp))
    best = next((i for i, o in enumerate(options) if o.context >= o.entry.default_context), 0 if options else None)
    if best is not None:
        options[best] = replace(options[best], recommended=True)
    return options


def _hf_token(settings: Settings) -> str | None:
    try:
        return settings.hf_token.reveal() if settings.hf_token else None
    except ConfigError:
        return None  # the review step reports the unresolvable reference


def size_model(ctx: Context, tier: str, region: str, plan: GpuPlan, model_id: str, context: int | None, *,
               model_lookup: ModelLookup = lookup_model) -> ModelSizing:
    """Size ``model_id`` on ``plan``; refuse a context that does not fit, naming the largest that does and the
    cheapest plan in the region that runs the model at the asked context."""
    try:
        model_id = validate_model_id(model_id)
    except ModelLookupError as exc:
        raise WizardError(str(exc), "model_id") from None
    try:
        facts = model_lookup(model_id, _hf_token(ctx.settings), ctx.home)
    except ModelLookupError as exc:
        if not exc.failure.is_network:
            raise WizardError(str(exc), "model_id") from None
        why = "offline" if exc.failure.value == "offline" else "Hugging Face unreachable"
        note = f"maider could not size {model_id} ({why}): it can still be launched, but nothing checks that it fits"
        if context is None:
            raise WizardError("this model could not be sized, so maider cannot propose a context: type one "
                              "(8192 is a safe start)", "max_model_len") from None
        return ModelSizing(model_id, context, None, None, note)
    if plan.gpu is None:
        if context is None:
            raise WizardError(f"maider does not know the GPU of {plan.id}: type a context length", "max_model_len")
        return ModelSizing(model_id, context, None, None, f"maider does not know the GPU of {plan.id}: "
                                                          "the VRAM fit is not checked", facts)
    tp = best_tp(facts, plan.gpus)
    default = next((m.default_context for m in CATALOG if m.model_id == facts.model_id), DEFAULT_CONTEXT)
    probe = estimate_fit(facts, plan.gpu, plan.gpus, tp, min(default, facts.max_position_embeddings))
    blocking = [p for p in probe.problems if not p.memory and p.setting != "max_model_len"]
    if blocking:
        raise WizardError(f"{facts.model_id} cannot run on {plan.id}: {blocking[0].message}", "model_id")
    max_context = probe.max_context
    wanted = context if context is not None else _proposed_context(default, max_context)
    if max_context < min(MIN_USEFUL_CONTEXT, wanted) or max_context == 0:
        why = probe.problems[0].message if probe.problems else f"room for only {max_context:,} tokens"
        raise WizardError(f"{facts.model_id} does not fit on {plan.id}: {why}; "
                          + _alternative(ctx, tier, region, facts, min(default, facts.max_position_embeddings)),
                          "model_id")
    if wanted > facts.max_position_embeddings:
        raise WizardError(f"{facts.model_id} reads at most {facts.max_position_embeddings:,} tokens: use that or less",
                          "max_model_len")
    if wanted > max_context:
        fit = estimate_fit(facts, plan.gpu, plan.gpus, tp, wanted)
        raise WizardError(f"won't fit: {format_context(wanted)} needs {fit.needed_gb:.1f} GB per GPU, {plan.id} has "
                          f"{plan.gpu.vram_gb:g} GB; largest context that fits: {max_context:,} tokens; "
                          + _alternative(ctx, tier, region, facts, wanted), "max_model_len")
    return ModelSizing(facts.model_id, wanted, tp, max_context, None, facts)


def _alternative(ctx: Context, tier: str, region: str, facts: ModelFacts, context: int) -> str:
    plans = [o.plan for o in plan_options(ctx, tier, region)]
    return cheapest_fit_hint(recommend(facts, context, plans), context, region)


def credential_info(settings: Settings, provider: str | None = None) -> dict[str, CredentialInfo]:
    """Where each credential was found ("linode", "hf"), never its value; a provider other than Linode (or the
    demo) brings its own credentials, so the Linode token is left out for it."""
    info = {}
    for key, variable in SECRET_KEYS.items():
        if key == "linode" and provider not in (None, "linode", "simulated"):
            continue
        secret = settings.linode_token if key == "linode" else settings.hf_token
        info[key] = CredentialInfo(
            variable=variable, found=secret is not None, source=secret.source if secret else None,
            is_reference=bool(secret and secret.is_reference),
            overridden_by_environment=bool(secret and secret.source == "environment"),
        )
    return info


def check_token(value: str, variable: str) -> str | None:
    """The typed token stripped, None when left empty; raise WizardError when it cannot be a token or reference."""
    value = (value or "").strip()
    if not value:
        return None
    if value.startswith("op://"):
        if not _OP_REFERENCE.match(value):
            raise WizardError("a 1Password reference looks like op://vault/item/field", variable)
        return value
    if not _TOKEN.match(value):
        raise WizardError("a token is 8–512 printable characters without spaces; paste it again", variable)
    return value


def would_be_settings(ctx: Context, choices: Choices, tokens: Mapping[str, str | None]) -> Settings:
    """The settings a launch would use after saving (tokens: "linode"/"hf" -> typed value or None to keep)."""
    overrides: dict[str, object] = {
        "region": choices.region, "plan": choices.plan, "model_id": choices.model_id,
        "tensor_parallel_size": choices.tensor_parallel_size,
    }
    if choices.max_model_len is not None:
        overrides["max_model_len"] = choices.max_model_len
    if "WATCHDOG_ENABLED" not in ctx.settings.sources:  # what saving writes (see env_updates)
        overrides["watchdog_enabled"] = True
        if "WATCHDOG_TIMEOUT_MINUTES" not in ctx.settings.sources:
            overrides["watchdog_timeout_minutes"] = DEFAULT_IDLE_MINUTES
    overrides["provider"] = ctx.provider_name
    if tokens.get("linode"):
        overrides["linode_token"] = Secret(tokens["linode"], "LINODE_TOKEN", "the wizard")
    if tokens.get("hf"):
        overrides["hf_token"] = Secret(tokens["hf"], "HUGGING_FACE_HUB_TOKEN", "the wizard")
    return replace(ctx.settings, **overrides)


def review(ctx: Context, choices: Choices, tokens: Mapping[str, str | None] | None = None, *,
           model_lookup: ModelLookup = lookup_model) -> Review:
    """Run every launch check on the would-be settings; problems block saving."""
    tokens = tokens or {}
    settings = would_be_settings(ctx, choices, tokens)
    try:
        provider = ctx.provider() if not any(tokens.values()) else ctx.provider_factory(ctx.provider_name, settings,
                                                                                        ctx.home)
    except ConfigError as exc:
        raise WizardError(str(exc)) from None
    report = validate_launch(settings, provider, ctx.home, model_lookup=model_lookup)
    warnings = [f"{variable} is set in the environment, which overrides what is saved to {ENV_FILE}"
                for variable in ("PROVIDER", "MAIDER_PROVIDER", "REGION", "TYPE", "MODEL_ID", "VLLM_MAX_MODEL_LEN",
                                 "VLLM_TENSOR_PARALLEL_SIZE")
                if ctx.settings.sources.get(variable) == "environment"]
    for key, info in credential_info(ctx.settings, ctx.provider_name).items():
        if tokens.get(key) and info.overridden_by_environment:
            warnings.append(f"{info.variable} is set in the environment, which overrides the token saved to "
                            f"{SECRETS_FILE}")
    return Review(settings, report, warnings)


def env_updates(ctx: Context, choices: Choices) -> dict[str, str | None]:
    """The managed ``.env`` variables and their new values (None: remove, so the default applies).

    A configuration that never chose about autostop gets it on: idle VMs stop after ``DEFAULT_IDLE_MINUTES``.
    """
    updates = {
        "REGION": choices.region,
        "TYPE": choices.plan,
        "MODEL_ID": choices.model_id,
        "SERVED_MODEL_NAME": ctx.settings.served_model_name or "coder",
        "VLLM_MAX_MODEL_LEN": str(choices.max_model_len) if choices.max_model_len else None,
        "VLLM_TENSOR_PARALLEL_SIZE": str(choices.tensor_parallel_size) if choices.tensor_parallel_size else None,
    }
    if not ctx.demo:  # a demo run leaves PROVIDER alone: the configuration is for the cloud used later
        updates = {"PROVIDER": ctx.provider_name, **updates}
    if "WATCHDOG_ENABLED" not in ctx.settings.sources:
        updates["WATCHDOG_ENABLED"] = "true"
        if "WATCHDOG_TIMEOUT_MINUTES" not in ctx.settings.sources:
            updates["WATCHDOG_TIMEOUT_MINUTES"] = str(DEFAULT_IDLE_MINUTES)
    return updates


def save(ctx: Context, choices: Choices, tokens: Mapping[str, str | None] | None = None, *,
         model_lookup: ModelLookup = lookup_model) -> tuple[Review, SavedFiles | None]:
    """Validate, then merge the choices into ``.env`` and typed tokens into ``.env.secrets`` (nothing on problems)."""
    tokens = {k: check_token(v or "", SECRET_KEYS[k]) for k, v in (tokens or {}).items() if k in SECRET_KEYS}
    result = review(ctx, choices, tokens, model_lookup=model_lookup)
    if not result.ok:
        return result, None
    updates = env_updates(ctx, choices)
    env_path = ctx.workdir / ENV_FILE
    merge_env_file(env_path, updates)
    secret_updates = {SECRET_KEYS[k]: v for k, v in tokens.items() if v}
    secrets_path = None
    if secret_updates:
        secrets_path = ctx.workdir / SECRETS_FILE
        merge_env_file(secrets_path, secret_updates)
    elif (ctx.workdir / SECRETS_FILE).exists():
        os.chmod(ctx.workdir / SECRETS_FILE, FILE_MODE)
    return result, SavedFiles(env_path, secrets_path, tuple(updates) + tuple(secret_updates))


def describe_plan(plan: GpuPlan) -> str:
    """``2 × RTX 4000 Ada · 20 GB each, 40 GB total · $1.05/h``"""
    gpu = plan.gpu.name if plan.gpu else "unknown GPU"
    vram = (f"{plan.vram_gb_per_gpu:g} GB each, {plan.vram_gb_total:g} GB total" if plan.gpus > 1
            else f"{plan.vram_gb_per_gpu:g} GB") if plan.gpu else "VRAM unknown"
    price = f"{format_money(plan.hourly_price)}/h" if plan.hourly_price > 0 else "price unknown"
    return f"{plan.gpus} × {gpu} · {vram} · {price}"



def choose_tier(choices: Choices, tier: str | None) -> Choices:
    """Set the tier; another tier starts over, since every later choice depends on it."""
    tier_models(tier)
    return keep_or_start(choices, "tier", tier) or Choices(provider=choices.provider, tier=tier)


def keep_or_start(choices: Choices, attr: str, value: str | None) -> Choices | None:
    """The same answer as before keeps the later choices (Back, then Next); None when it changed."""
    return choices if getattr(choices, attr) == value and value else None


def choose_region(ctx: Context, choices: Choices, region: str | None) -> Choices:
    """Accept a region only when it offers a plan for the tier."""
    kept = keep_or_start(choices, "region", region)
    options = region_options(ctx, choices.tier or "")
    if region not in {o.region.id for o in options}:
        raise WizardError(f"'{region}' offers no GPU plan for this tier: pick a region from the list", "region")
    return kept or Choices(provider=choices.provider, tier=choices.tier, region=region)


def choose_plan(ctx: Context, choices: Choices, plan_id: str | None) -> Choices:
    """Accept a plan offered in the chosen region."""
    plan = find_plan(ctx, choices.tier or "", choices.region or "", plan_id)
    return keep_or_start(choices, "plan", plan.id) or Choices(provider=choices.provider, tier=choices.tier,
                                                              region=choices.region, plan=plan.id)


def choose_model(ctx: Context, choices: Choices, model_id: str, context: int | None, *,
                 model_lookup: ModelLookup = lookup_model) -> tuple[Choices, ModelSizing]:
    """Size the model on the chosen plan and fix the context and tensor parallel size (oversize is refused)."""
    plan = find_plan(ctx, choices.tier or "", choices.region or "", choices.plan)
    sizing = size_model(ctx, choices.tier or "", choices.region or "", plan, model_id, context,
                        model_lookup=model_lookup)
    return replace(choices, model_id=sizing.model_id, max_model_len=sizing.context,
                   tensor_parallel_size=sizing.tp), sizing
