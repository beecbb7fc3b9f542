"""Will a model fit on a GPU plan at a context length, and which plan is cheapest? Pure arithmetic, no I/O.

vLLM's memory budget per GPU is ``VRAM × gpu_memory_utilization``. From it come the weights (split across tensor
parallel ranks), a headroom for activations and CUDA graphs, and what is left is the KV cache. The context that fits
is that KV budget divided by the KV bytes one token needs on one GPU.

Units: bytes internally; GB means 10^9 bytes, as in maider's GPU table and the shard sizes Hugging Face reports.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from app.domain.gpu_catalog import GpuModel

GB = 1e9
CONTEXT_STEP = 1024  # vLLM's own advice rounds --max-model-len down to a multiple of 1024
MIN_CONTEXT_TOKENS = 256  # the bounds every context field and setting accepts; sizing then checks the model
MAX_CONTEXT_TOKENS = 10_000_000
# Headroom on each GPU besides weights and KV cache. vLLM profiles the activation peak of a dummy forward pass and
# keeps memory for CUDA graphs and non-torch allocations (CUDA context, NCCL buffers); reference/vllm.md advises
# 1–3 GiB. maider keeps a fixed 1.5 GB plus 5 % of the weights on that GPU (activations grow with model width).
HEADROOM_FIXED_GB = 1.5
HEADROOM_WEIGHT_FRACTION = 0.05
DEFAULT_GPU_MEMORY_UTILIZATION = 0.90

# Bytes per parameter used to estimate weights when the checkpoint's file sizes are unknown.
_BYTES_PER_PARAM = {"float32": 2.0, "float16": 2.0, "bfloat16": 2.0, "fp8": 1.0}  # vLLM loads fp32 as 16-bit
_FOUR_BIT_BYTES_PER_PARAM = 0.5 * 1.03 + 0.06  # group scales/zeros (3 %) plus unquantized embeddings, roughly
_FOUR_BIT_METHODS = {"awq", "gptq", "awq_marlin", "gptq_marlin", "bitsandbytes"}
_FP8_KV_DTYPES = {"fp8", "fp8_e4m3", "fp8_e5m2"}


class SizedPlan(Protocol):
    """What sizing reads from a provider's plan (``app.providers.base.GpuPlan`` has these; domain stays below it)."""

    @property
    def id(self) -> str: ...
    @property
    def gpus(self) -> int: ...
    @property
    def gpu(self) -> GpuModel | None: ...
    @property
    def hourly_price(self) -> float: ...


@dataclass(frozen=True)
class ModelFacts:
    """What sizing needs to know about a checkpoint (from its config.json and file listing)."""

    model_id: str  # Hugging Face id, e.g. "Qwen/Qwen2.5-Coder-32B-Instruct-AWQ"
    num_layers: int  # num_hidden_layers
    num_attention_heads: int  # query heads; tensor parallel size must divide this
    num_kv_heads: int  # num_key_value_heads (GQA); equals num_attention_heads for plain MHA
    head_dim: int  # per-head width
    hidden_size: int  # model width
    max_position_embeddings: int  # context limit, after rope_scaling (YaRN factor × original when configured)
    torch_dtype: str  # checkpoint dtype: "bfloat16", "float16", "float32"
    quantization: str | None  # None, "awq", "gptq", "fp8" or another quant_method
    weight_bytes: int  # bytes of weights to load (all GPUs together)
    weight_source: str  # "safetensors" (sum of shard sizes) or "estimate" (params × bytes per param)
    params: int | None = None  # parameter count when known
    architectures: tuple[str, ...] = ()  # config "architectures", e.g. ("Qwen2ForCausalLM",)
    # Multi-head latent attention (DeepSeek-V2/V3): K and V are cached as one compressed latent of this many
    # elements per layer (kv_lora_rank + qk_rope_head_dim), the same on every tensor parallel rank. None = GQA/MHA.
    mla_latent_dim: int | None = None

    @property
    def weight_gb(self) -> float:
        return self.weight_bytes / GB


@dataclass(frozen=True)
class FitProblem:
    """One broken rule; ``setting`` names the knob that fixes it so callers map it to a variable without parsing."""

    setting: str  # "tensor_parallel_size" | "dtype" | "max_model_len" | "plan" (more VRAM or another GPU)
    message: str  # a sentence for the user
    memory: bool = False  # a VRAM shortfall: a plan with more GPU memory (or a shorter context) fixes it

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class FitReport:
    """The verdict for one model on one plan at one context; numbers are per GPU."""

    fits: bool
    problems: tuple[FitProblem, ...]
    notes: tuple[str, ...]  # not failures, e.g. "--dtype half will be used"
    context: int  # the context asked for
    tp: int  # tensor parallel size
    gpus: int  # GPUs in the plan
    weights_per_gpu_gb: float
    kv_bytes_per_token: int  # per GPU
    kv_budget_gb: float  # per GPU, after weights and headroom (may be negative)
    max_context: int  # largest context that fits, multiple of 1024, capped at the model's limit; 0 = weights don't fit
    dtype_flag: str | None  # "--dtype" value maider must pass ("half" on GPUs without bf16), else None
    needed_gb: float  # VRAM one GPU would need for this context at this utilization
    available_gb: float  # VRAM per GPU of the plan


@dataclass(frozen=True)
class Recommendation:
    """A plan that fits, with the tensor parallel size that makes it fit."""

    plan: SizedPlan  # a GpuPlan
    tp: int
    dtype_flag: str | None
    max_context: int
    hourly_price: float  # 0.0 = unknown


def _positive_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _text_config(config: Mapping[str, Any]) -> Mapping[str, Any]:
    """Multimodal configs nest the language model's fields under ``text_config``."""
    nested = config.get("text_config")
    if isinstance(nested, Mapping) and "num_hidden_layers" not in config:
        return nested
    return config


def _context_limit(config: Mapping[str, Any]) -> int:
    """The context vLLM derives from the config: ``max_position_embeddings`` scaled as vLLM scales it.

    YaRN: original_max_position_embeddings × factor; linear/dynamic: max_position_embeddings × factor; llama3 and
    longrope configs already state the extended length in max_position_embeddings.
    """
    limit = _positive_int(config.get("max_position_embeddings")) or 2048
    rope = config.get("rope_scaling")
    if isinstance(rope, Mapping):
        kind = str(rope.get("rope_type") or rope.get("type") or "")
        factor = rope.get("factor")
        if kind in {"yarn", "linear", "dynamic"} and isinstance(factor, (int, float)) and factor > 1:
            base = _positive_int(rope.get("original_max_position_embeddings")) if kind == "yarn" else None
            limit = int((base or limit) * factor)
    return limit


def _quantization(config: Mapping[str, Any]) -> str | None:
    quant = config.get("quantization_config")
    if isinstance(quant, Mapping) and quant.get("quant_method"):
        return str(quant["quant_method"]).lower()
    return None


def estimate_weight_bytes(params: int, torch_dtype: str, quantization: str | None) -> int:
    """Weights from a parameter count when shard sizes are unknown (see reference/vllm.md, "VRAM sizing")."""
    if quantization in _FOUR_BIT_METHODS:
        per_param = _FOUR_BIT_BYTES_PER_PARAM
    elif quantization and quantization.startswith("fp8"):
        per_param = _BYTES_PER_PARAM["fp8"]
    else:
        per_param = _BYTES_PER_PARAM.get(torch_dtype, 2.0)
    return int(params * per_param)


def facts_from_config(model_id: str, config: Mapping[str, Any], safetensors_bytes: int | None,
                      params: int | None = None) -> ModelFacts:
    """Build ``ModelFacts`` from a config.json; raise ValueError naming the field when a needed one is missing."""
    text = _text_config(config)
    layers = _positive_int(text.get("num_hidden_layers"))
    heads = _positive_int(text.get("num_attention_heads"))
    hidden = _positive_int(text.get("hidden_size"))
    if layers is None or heads is None or hidden is None:
        raise ValueError(f"{model_id}'s config.json lacks num_hidden_layers, num_attention_heads or hidden_size: "
                         "maider cannot size it")
    kv_heads = _positive_int(text.get("num_key_value_heads")) or heads
    head_dim = _positive_int(text.get("head_dim")) or hidden // heads
    torch_dtype = str(text.get("torch_dtype") or config.get("torch_dtype") or text.get("dtype") or "bfloat16")
    quantization = _quantization(config) or _quantization(text)
    architectures = tuple(str(a) for a in (config.get("architectures") or text.get("architectures") or ()))
    kv_lora_rank = _positive_int(text.get("kv_lora_rank"))
    mla_latent_dim = kv_lora_rank + (_positive_int(text.get("qk_rope_head_dim")) or 0) if kv_lora_rank else None
    if safetensors_bytes:
        weight_bytes, source = safetensors_bytes, "safetensors"
        if torch_dtype == "float32" and quantization is None:
            weight_bytes //= 2  # vLLM's "auto" dtype loads fp32 checkpoints as 16-bit
    elif params:
        weight_bytes, source = estimate_weight_bytes(params, torch_dtype, quantization), "estimate"
    else:
        raise ValueError(f"{model_id}: neither .safetensors sizes nor a parameter count are known: "
                         "maider cannot size its weights")
    return ModelFacts(
        model_id=model_id, num_layers=layers, num_attention_heads=heads, num_kv_heads=kv_heads, head_dim=head_dim,
        hidden_size=hidden, max_position_embeddings=_context_limit(text), torch_dtype=torch_dtype,
        quantization=quantization, weight_bytes=int(weight_bytes), weight_source=source, params=params,
        architectures=architectures, mla_latent_dim=mla_latent_dim,
    )


def kv_bytes_per_token(facts: ModelFacts, kv_cache_dtype: str = "auto", tp: int = 1) -> int:
    """KV cache bytes one token takes on one GPU: 2 (K and V) × layers × KV heads on that GPU × head_dim × bytes."""
    element = 1 if kv_cache_dtype in _FP8_KV_DTYPES else 2
    if facts.mla_latent_dim:
        return facts.num_layers * facts.mla_latent_dim * element
    heads_per_gpu = max(1, facts.num_kv_heads // max(1, tp))
    return 2 * facts.num_layers * heads_per_gpu * facts.head_dim * element


def headroom_bytes(weights_per_gpu: float) -> float:
    """Memory per GPU for activations, CUDA graphs and non-torch allocations (see the constants above)."""
    return HEADROOM_FIXED_GB * GB + HEADROOM_WEIGHT_FRACTION * weights_per_gpu


def _gb(value: float) -> str:
    """``20`` for 20.0, ``26.1`` otherwise: how VRAM is written in messages."""
    return f"{value:.1f}".removesuffix(".0")


def format_context(tokens: int) -> str:
    """``32K`` for multiples of 1024, else ``12,345``."""
    return f"{tokens // 1024}K" if tokens >= 1024 and tokens % 1024 == 0 else f"{tokens:,}"


def tp_problems(facts: ModelFacts, gpus: int, tp: int) -> list[FitProblem]:
    """Tensor parallel rules vLLM enforces at start-up."""
    problems = []
    if tp < 1:
        problems.append(FitProblem("tensor_parallel_size", f"tensor parallel size must be at least 1, not {tp}"))
        return problems
    if tp > gpus:
        problems.append(FitProblem(
            "tensor_parallel_size",
            f"tensor parallel size {tp} needs {tp} GPUs but the plan has {gpus}: use at most {gpus}"))
    if facts.num_attention_heads % tp:
        choices = ", ".join(str(t) for t in valid_tp_sizes(facts, max(gpus, tp)))
        problems.append(FitProblem(
            "tensor_parallel_size",
            f"tensor parallel size {tp} does not divide {facts.model_id}'s {facts.num_attention_heads} attention "
            f"heads: use one of {choices}"))
    elif facts.num_kv_heads % tp and tp % facts.num_kv_heads:
        problems.append(FitProblem(
            "tensor_parallel_size",
            f"tensor parallel size {tp} must divide {facts.model_id}'s {facts.num_kv_heads} KV heads "
            "or be a multiple of them"))
    return problems


def valid_tp_sizes(facts: ModelFacts, gpus: int) -> list[int]:
    """Tensor parallel sizes vLLM accepts for this model on up to ``gpus`` GPUs, smallest first."""
    return [t for t in range(1, gpus + 1)
            if facts.num_attention_heads % t == 0 and (facts.num_kv_heads % t == 0 or t % facts.num_kv_heads == 0)]


def _dtype_rules(facts: ModelFacts, gpu: GpuModel, dtype: str) -> tuple[list[FitProblem], list[str], str | None]:
    """Problems, notes and the ``--dtype`` flag for this checkpoint on this GPU generation."""
    problems: list[FitProblem] = []
    notes: list[str] = []
    flag: str | None = None
    wants_bf16 = dtype == "bfloat16" or (dtype == "auto" and facts.torch_dtype == "bfloat16")
    if wants_bf16 and not gpu.supports_bf16:
        if dtype == "auto":
            flag = "half"
            notes.append(f"--dtype half will be used: {gpu.name} ({gpu.sm}) has no bf16 and {facts.model_id} "
                         "is a bf16 checkpoint")
        else:
            problems.append(FitProblem("dtype", f"VLLM_DTYPE=bfloat16 needs compute capability 8.0; {gpu.name} is "
                                                f"{gpu.sm}: use 'half' or 'auto'"))
    quant = facts.quantization or ""
    if quant.startswith(("awq", "gptq")) and not gpu.supports_awq:
        problems.append(FitProblem("plan", f"{quant.upper()} checkpoints need compute capability 7.5; "
                                           f"{gpu.name} is {gpu.sm}"))
    if quant.startswith("fp8") and not gpu.supports_fp8:
        problems.append(FitProblem("plan", f"FP8 checkpoints need compute capability 8.9 (Ada or newer); "
                                           f"{gpu.name} is {gpu.sm}: pick an AWQ/GPTQ or 16-bit checkpoint"))
    return problems, notes, flag


def estimate_fit(facts: ModelFacts, gpu: GpuModel, gpus: int, tp: int, context: int,
                 gpu_memory_utilization: float = DEFAULT_GPU_MEMORY_UTILIZATION, kv_cache_dtype: str = "auto",
                 dtype: str = "auto") -> FitReport:
    """Check every start-up rule vLLM would hit and size weights + KV cache + headroom on one GPU."""
    problems = tp_problems(facts, gpus, tp)
    dtype_problems, notes, flag = _dtype_rules(facts, gpu, dtype)
    problems += dtype_problems
    ranks = max(1, min(tp, gpus))  # with TP > GPUs vLLM will not start; size what the plan's GPUs could hold
    weights_per_gpu = facts.weight_bytes / ranks
    kv_per_token = kv_bytes_per_token(facts, kv_cache_dtype, ranks)
    budget = gpu.vram_gb * GB * gpu_memory_utilization
    kv_budget = budget - weights_per_gpu - headroom_bytes(weights_per_gpu)
    limit = facts.max_position_embeddings
    max_context = 0
    if kv_budget > 0:
        max_context = min(int(kv_budget // kv_per_token) // CONTEXT_STEP * CONTEXT_STEP, limit)
    needed = (weights_per_gpu + headroom_bytes(weights_per_gpu) + kv_per_token * context) / gpu_memory_utilization
    if context > limit:
        problems.append(FitProblem(
            "max_model_len",
            f"context {context:,} is beyond {facts.model_id}'s limit of {limit:,} tokens: use {limit:,} or less"))
    if kv_budget <= 0:
        weights_need = (weights_per_gpu + headroom_bytes(weights_per_gpu)) / gpu_memory_utilization
        problems.append(FitProblem(
            "plan",
            f"won't fit: the {facts.weight_gb:.2f} GB of weights over {ranks} GPU{'s' if ranks > 1 else ''} need "
            f"{_gb(weights_need / GB)} GB per GPU before any context, plan has {_gb(gpu.vram_gb)} GB", memory=True))
    elif context <= limit and kv_per_token * context > kv_budget:
        problems.append(FitProblem(
            "max_model_len",
            f"won't fit: {context:,} tokens of context need {_gb(needed / GB)} GB per GPU, plan has "
            f"{_gb(gpu.vram_gb)} GB; largest context that fits: {max_context:,} tokens", memory=True))
    return FitReport(
        fits=not problems, problems=tuple(problems), notes=tuple(notes), context=context, tp=tp, gpus=gpus,
        weights_per_gpu_gb=weights_per_gpu / GB, kv_bytes_per_token=kv_per_token, kv_budget_gb=kv_budget / GB,
        max_context=max_context, dtype_flag=flag, needed_gb=needed / GB, available_gb=gpu.vram_gb,
    )


def best_tp(facts: ModelFacts, gpus: int) -> int:
    """The tensor parallel size maider uses on a plan: every GPU when the heads allow it, else the largest valid."""
    sizes = valid_tp_sizes(facts, gpus)
    return sizes[-1] if sizes else 1


def recommend(facts: ModelFacts, context: int, plans: Sequence[SizedPlan],
              gpu_memory_utilization: float = DEFAULT_GPU_MEMORY_UTILIZATION,
              kv_cache_dtype: str = "auto") -> list[Recommendation]:
    """Every plan that runs ``facts`` at ``context``, cheapest first (unknown price last).

    Each plan uses the largest tensor parallel size that divides the heads and fits its GPU count: a paid-for GPU
    left idle buys nothing, while splitting across it leaves more room for the KV cache.
    """
    found = []
    for plan in plans:
        if plan.gpu is None or plan.gpus < 1:
            continue
        tp = best_tp(facts, plan.gpus)
        report = estimate_fit(facts, plan.gpu, plan.gpus, tp, context, gpu_memory_utilization, kv_cache_dtype)
        if report.fits:
            found.append(Recommendation(plan=plan, tp=tp, dtype_flag=report.dtype_flag,
                                        max_context=report.max_context, hourly_price=plan.hourly_price))
    return sorted(found, key=lambda r: (r.hourly_price <= 0, r.hourly_price, r.plan.gpus, r.plan.id))


def weights_fit_anywhere(facts: ModelFacts, vram_gb_total: float,
                         gpu_memory_utilization: float = DEFAULT_GPU_MEMORY_UTILIZATION) -> bool:
    """Rough filter for suggestions: weights plus headroom fit in the plan's VRAM altogether."""
    needed = facts.weight_bytes * (1 + HEADROOM_WEIGHT_FRACTION) + HEADROOM_FIXED_GB * GB
    return vram_gb_total > 0 and needed <= vram_gb_total * GB * gpu_memory_utilization
