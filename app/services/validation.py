"""Check a launch configuration before it costs money: settings, region, plan, tensor parallelism, dtype, VRAM fit.

Every problem names the variable to change, so ``maider validate``, the wizard and the panel show the same verdict.
A model that cannot be sized because Hugging Face is unreachable is a note, not a problem: the launch may still work.
So is an unreachable Linode API: the fit is then checked against maider's own table of Linode's GPU plans.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from app.config import ConfigProblem, Settings
from app.domain.cost import format_money
from app.domain.gpu_catalog import LINODE_PLANS
from app.domain.sizing import FitReport, ModelFacts, Recommendation, best_tp, estimate_fit, format_context, recommend
from app.errors import ConfigError
from app.providers.base import AuthError, GpuPlan, Provider, ProviderError, RateLimited, TransientError
from app.services import catalog as catalog_service
from app.services.model_info import ModelLookupError, lookup_model

ModelLookup = Callable[..., ModelFacts]

# FitProblem.setting -> the variable a user edits to fix it
_SETTING_VARIABLES = {
    "tensor_parallel_size": "VLLM_TENSOR_PARALLEL_SIZE",
    "dtype": "VLLM_DTYPE",
    "max_model_len": "VLLM_MAX_MODEL_LEN",
    "plan": "TYPE",
}
_REQUIRED = (
    ("REGION", "region", "not set: pick a GPU region, e.g. us-ord ('maider list-types' lists regions and plans)"),
    ("TYPE", "plan", "not set: pick a GPU plan, e.g. g2-gpu-rtx4000a1-s ('maider list-types' lists them)"),
    ("MODEL_ID", "model_id", "not set: give a Hugging Face model id, e.g. Qwen/Qwen2.5-Coder-7B-Instruct-AWQ"),
)


@dataclass
class ValidationReport:
    """What is wrong (problems), what maider will adjust or could not check (notes), and the sizing verdict."""

    problems: list[ConfigProblem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    fit: FitReport | None = None  # None when the model or the plan's GPU could not be sized
    plan: GpuPlan | None = None  # the chosen plan, when the provider knows it
    recommendations: list[Recommendation] = field(default_factory=list)  # plans in the region that fit, cheapest first
    facts: ModelFacts | None = None  # the model's sizing facts, when known

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, variable: str, message: str) -> None:
        self.problems.append(ConfigProblem(variable, message))


def cheapest_fit_hint(recommendations: list[Recommendation], context: int, region: str | None) -> str:
    """``cheapest plan that fits 32K: g2-gpu-rtx4000a2-s at $1.05/h`` (or that none in the region does)."""
    where = f" in {region}" if region else ""
    if not recommendations:
        return f"no plan{where} fits {format_context(context)}"
    best = recommendations[0]
    price = f"{format_money(best.hourly_price)}/h" if best.hourly_price > 0 else "an unknown price"
    tp = f" (tensor parallel {best.tp})" if best.tp > 1 else ""
    return f"cheapest plan that fits {format_context(context)}: {best.plan.id} at {price}{tp}"


def check_fit(model_id: str, plan: GpuPlan, context: int, tp: int | None, *, hf_token: str | None, home: Path,
              gpu_memory_utilization: float = 0.90, kv_cache_dtype: str = "auto", dtype: str = "auto",
              offline: bool = False, model_lookup: ModelLookup = lookup_model) -> FitReport:
    """Size one model on one plan, for the wizard and switch-model.

    ``tp=None`` picks what maider would: every GPU of the plan when the heads allow, else the largest valid size.
    Raises ModelLookupError when the model cannot be sized and ConfigError when maider does not know the plan's GPU.
    """
    if plan.gpu is None:
        raise ConfigError(f"maider does not know the GPU of plan {plan.id}, so it cannot check the model fits", "TYPE")
    facts = model_lookup(model_id, hf_token, home, offline=offline)
    chosen_tp = best_tp(facts, plan.gpus) if tp is None else tp
    return estimate_fit(facts, plan.gpu, plan.gpus, chosen_tp, context, gpu_memory_utilization, kv_cache_dtype, dtype)


def _built_in_plan(plan_id: str) -> GpuPlan | None:
    """A Linode plan from maider's own table (GPU model and count; price and regions unknown)."""
    known = LINODE_PLANS.get(plan_id)
    if known is None:
        return None
    gpu, gpus = known
    return GpuPlan(id=plan_id, label=plan_id, gpus=gpus, gpu=gpu, hourly_price=0.0, memory_mb=0, vcpus=0)


def _offline(report: ValidationReport, settings: Settings, provider: Provider,
             exc: ProviderError) -> list[GpuPlan]:
    """The cloud did not answer: say so in one line, and size on the built-in plans when maider knows them."""
    reason = str(exc).rstrip(".")
    if provider.name != "linode":
        report.notes.append(f"{reason}: region, plan and price were not checked")
        return []
    plan = _built_in_plan(settings.plan) if settings.plan else None
    if plan is not None:
        report.plan = plan
        report.notes.append(f"{reason}: region and price were not checked; the fit below uses maider's own table "
                            f"of Linode plans ({plan.gpus} × {plan.gpu.name if plan.gpu else '?'})")
    else:
        report.notes.append(f"{reason}: region, plan and price were not checked")
    return [p for p in map(_built_in_plan, LINODE_PLANS) if p is not None]


# What to fix when a provider refuses or cannot be asked: its credential, named as the user sets it.
_CREDENTIAL = {"linode": "LINODE_TOKEN", "digitalocean": "DIGITALOCEAN_TOKEN", "aws": "AWS credentials",
               "ssh": "maider host add", "simulated": "PROVIDER"}


def _catalog(report: ValidationReport, settings: Settings, provider: Provider, home: Path,
             offline_fit: bool = False) -> tuple[list[GpuPlan], bool] | None:
    """Check region and plan against the provider's (cached) catalog; return the region's plans, or None."""
    if settings.provider == "linode" and settings.linode_token is None:
        report.add("LINODE_TOKEN", "not set: create a token at cloud.linode.com (Linodes read/write) and put it in "
                                   ".env.secrets, or log in with linode-cli; region and plan were not checked")
        return None
    credential = _CREDENTIAL.get(provider.name, "PROVIDER")
    try:
        regions = catalog_service.list_regions(provider, home)
        region_ids = {r.id for r in regions}
        gpu_regions = sorted(r.id for r in regions if r.has_gpus)
        region_ok = settings.region in region_ids
        if settings.region and not region_ok:
            report.add("REGION", f"unknown region '{settings.region}': GPU regions are {', '.join(gpu_regions)}")
        elif settings.region and settings.region not in gpu_regions:
            report.add("REGION", f"region '{settings.region}' has no GPU plans: GPU regions are "
                                 f"{', '.join(gpu_regions)}")
            region_ok = False
        elif settings.region and not next(r for r in regions if r.id == settings.region).has_metadata:
            # Without Linode's Metadata service cloud-init gets no user data: no pinned host key, nothing installed.
            usable = sorted(r.id for r in regions if r.has_gpus and r.has_metadata)
            report.add("REGION", f"region '{settings.region}' has no Metadata service, so the VM could not be set "
                                 f"up (cloud-init user data): pick one of {', '.join(usable)}")
            region_ok = False
        plans = catalog_service.list_plans(provider, home, region=settings.region if region_ok else None)
        all_plans = plans if not region_ok else catalog_service.list_plans(provider, home)
    except AuthError as exc:
        report.add(credential, str(exc))  # the provider's message says what to fix
        return None
    except ConfigError as exc:  # e.g. an op:// reference that 1Password could not resolve
        report.add(exc.variable or credential, str(exc))
        return None
    except (TransientError, RateLimited) as exc:
        if offline_fit:
            return _offline(report, settings, provider, exc), False
        report.add(credential, f"could not check the region and plan with {provider.name}: {exc}")
        return None
    except ProviderError as exc:
        report.add(credential, f"could not check the region and plan with {provider.name}: {exc}")
        return None
    region_plans = [p for p in plans if not p.regions or not region_ok or settings.region in p.regions]
    if settings.plan:
        report.plan = next((p for p in region_plans if p.id == settings.plan), None)
        elsewhere = next((p for p in all_plans if p.id == settings.plan), None)
        if report.plan is None and elsewhere is not None and region_ok:
            offered = f": regions that offer it: {', '.join(elsewhere.regions)}" if elsewhere.regions else ""
            report.add("TYPE", f"plan {settings.plan} is not offered in {settings.region}{offered}")
            report.plan = elsewhere  # still size the model on it, so the user learns both things at once
        elif report.plan is None and elsewhere is None:
            known = ", ".join(p.id for p in all_plans[:3])
            more = f" and {len(all_plans) - 3} more ('maider list-types' lists them)" if len(all_plans) > 3 else ""
            report.add("TYPE", f"unknown GPU plan '{settings.plan}': known plans are {known}{more}")
        elif report.plan is not None and not report.plan.regions and region_ok and any(p.regions for p in all_plans):
            report.notes.append(f"{provider.name}'s availability list does not mention {settings.plan}: whether "
                                f"{settings.region} has it now is unknown (the launch will tell)")
    return region_plans, region_ok


def _lookup(report: ValidationReport, settings: Settings, home: Path,
            model_lookup: ModelLookup) -> ModelFacts | None:
    """The model's facts; a network failure becomes a note (sizing skipped), anything else a MODEL_ID problem."""
    try:
        hf_token = settings.hf_token.reveal() if settings.hf_token else None
    except ConfigError as exc:
        report.add(exc.variable or "HUGGING_FACE_HUB_TOKEN", str(exc))
        hf_token = None
    try:
        return model_lookup(settings.model_id, hf_token, home)
    except ModelLookupError as exc:
        if exc.failure.is_network:
            report.notes.append(f"sizing skipped: {exc}")
        else:
            report.add("MODEL_ID", str(exc))
        return None


def _size(report: ValidationReport, settings: Settings, facts: ModelFacts, region_plans: list[GpuPlan],
          region: str | None) -> None:
    """Fit the model on the chosen plan and say which plans in the region would fit."""
    context = settings.max_model_len
    # Beyond the model's own limit no plan fits; suggest plans for the longest context the model allows.
    wanted = min(context, facts.max_position_embeddings)
    report.recommendations = recommend(facts, wanted, region_plans, settings.gpu_memory_utilization,
                                       settings.kv_cache_dtype)
    plan = report.plan
    if plan is None:
        if settings.plan is None:
            report.notes.append(cheapest_fit_hint(report.recommendations, wanted, region))
        return
    if plan.gpu is None:
        report.notes.append(f"maider does not know the GPU of plan {plan.id}: the VRAM fit was not checked")
        return
    tp = settings.tensor_parallel_size or plan.gpus
    fit = estimate_fit(facts, plan.gpu, plan.gpus, tp, context, settings.gpu_memory_utilization,
                       settings.kv_cache_dtype, settings.dtype)
    report.fit = fit
    for problem in fit.problems:
        message = problem.message
        if problem.memory:
            message += "; " + cheapest_fit_hint(report.recommendations, wanted, region)
        if problem.setting == "tensor_parallel_size" and settings.tensor_parallel_size is None:
            message += f" (unset, it defaults to the plan's {plan.gpus} GPUs)"
        report.add(_SETTING_VARIABLES[problem.setting], message)
    report.notes.extend(fit.notes)
    if fit.fits and tp < plan.gpus:
        report.notes.append(f"tensor parallel size {tp} uses {tp} of the plan's {plan.gpus} GPUs; "
                            f"the others are paid for but idle")
    if fit.fits:
        report.notes.append(f"{facts.model_id} fits: {fit.weights_per_gpu_gb:.1f} GB of weights per GPU, "
                            f"room for {fit.max_context:,} tokens of context (asked {context:,})")


def validate_launch(settings: Settings, provider: Provider, home: Path, *,
                    model_lookup: ModelLookup = lookup_model, offline_fit: bool = False) -> ValidationReport:
    """Every check ``maider validate`` runs; never raises for a bad configuration or an unreachable cloud.

    ``offline_fit``: an unreachable cloud is a note and the fit uses maider's own plan table (``maider validate``);
    otherwise it is a problem (a launch must not pick a plan nobody checked).
    """
    home = Path(home)
    report = ValidationReport(problems=list(settings.problems))
    for variable, attr, message in _REQUIRED:
        if not getattr(settings, attr):
            report.add(variable, message)
    catalog = _catalog(report, settings, provider, home, offline_fit)
    region_plans, region_ok = catalog if catalog is not None else ([], False)
    if not settings.model_id:
        return report
    report.facts = _lookup(report, settings, home, model_lookup)
    if report.facts is not None:
        _size(report, settings, report.facts, region_plans, settings.region if region_ok else None)
    return report
