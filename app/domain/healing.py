"""The heal policy: from a diagnosis and the VM's current .env, the next change to try (pure).

The engine writes ``env_updates`` into /opt/llm/.env with ``vllm_env.update_env`` and recreates the vLLM container.
``env`` is the file as it is now, so earlier heals are already in it; each attempt goes one step further than the
last, and ``None`` means stop: the cause is not healable, or nothing stronger is left to try.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from app.domain.diagnosis import OOM_LOAD, TOKEN_ROUNDING, Cause, Diagnosis

MAX_HEAL_ATTEMPTS = 3
MAX_UTILIZATION = 0.95  # above this vLLM leaves no headroom for CUDA graphs and the driver
MIN_UTILIZATION = 0.30  # below this the GPU is busy with something else: lowering further hides the real problem
UTILIZATION_STEP = 0.05
MIN_MAX_MODEL_LEN = 1024  # a shorter context is useless for coding; stop and tell the user instead
RECURRING_LEN_FACTOR = 0.75  # the estimate was not enough: take a quarter off what was tried
HALF_DTYPES = frozenset({"half", "float16"})


@dataclass(frozen=True)
class HealPlan:
    env_updates: dict[str, str]  # .env keys to set, values as written to the file
    description: str  # what changes and why, for the activity log


def _round_len(tokens: float) -> int:
    return int(tokens) // TOKEN_ROUNDING * TOKEN_ROUNDING


def _int(env: Mapping[str, str], key: str, default: int) -> int:
    try:
        return int(env.get(key, ""))
    except ValueError:
        return default


def _float(env: Mapping[str, str], key: str, default: float) -> float:
    try:
        return float(env.get(key, ""))
    except ValueError:
        return default


def _utilization_text(value: float) -> str:
    return f"{value:.2f}"


def _heal_kv_too_small(diagnosis: Diagnosis, env: Mapping[str, str], attempt: int, _gpus: int) -> HealPlan | None:
    current = _int(env, "VLLM_MAX_MODEL_LEN", int(diagnosis.numbers.get("max_model_len", 0)))
    estimate = diagnosis.numbers.get("estimated_max_len")
    target = _round_len(estimate) if estimate else _round_len(current / 2)
    if attempt > 1 or (current and target >= current):
        target = min(target, _round_len(current * RECURRING_LEN_FACTOR))
    if target < MIN_MAX_MODEL_LEN:
        return None
    why = f"vLLM estimated {int(estimate)} tokens fit in the KV cache" if estimate else "the KV cache is too small"
    return HealPlan({"VLLM_MAX_MODEL_LEN": str(target)}, f"lower VLLM_MAX_MODEL_LEN {current} → {target} ({why})")


def _heal_max_len(diagnosis: Diagnosis, env: Mapping[str, str], _attempt: int, _gpus: int) -> HealPlan | None:
    derived = diagnosis.numbers.get("derived_max_len")
    current = _int(env, "VLLM_MAX_MODEL_LEN", int(diagnosis.numbers.get("max_model_len", 0)))
    if not derived or int(derived) >= current:
        return None
    return HealPlan({"VLLM_MAX_MODEL_LEN": str(int(derived))},
                    f"lower VLLM_MAX_MODEL_LEN {current} → {int(derived)} (the model's own limit)")


def _heal_free_memory(diagnosis: Diagnosis, env: Mapping[str, str], _attempt: int, _gpus: int) -> HealPlan | None:
    current = _float(env, "VLLM_GPU_MEMORY_UTILIZATION", diagnosis.numbers.get("requested_utilization", 0.9))
    free, total = diagnosis.numbers.get("free_gib"), diagnosis.numbers.get("total_gib")
    target = current - UTILIZATION_STEP
    if free and total:
        target = math.floor(free / total * 100) / 100 - 0.01  # just under what is free
        if target >= current:
            target = current - UTILIZATION_STEP
    target = round(target, 2)
    if target < MIN_UTILIZATION:
        return None
    return HealPlan({"VLLM_GPU_MEMORY_UTILIZATION": _utilization_text(target)},
                    f"lower VLLM_GPU_MEMORY_UTILIZATION {current:.2f} → {target:.2f} (less memory was free)")


def _raise_utilization(_diagnosis: Diagnosis, env: Mapping[str, str], _attempt: int, _gpus: int) -> HealPlan | None:
    current = _float(env, "VLLM_GPU_MEMORY_UTILIZATION", MAX_UTILIZATION)
    if current >= MAX_UTILIZATION:
        return None
    return HealPlan({"VLLM_GPU_MEMORY_UTILIZATION": _utilization_text(MAX_UTILIZATION)},
                    f"raise VLLM_GPU_MEMORY_UTILIZATION {current:.2f} → {MAX_UTILIZATION:.2f} "
                    "(more room after the weights)")


def _warmup_levers(env: Mapping[str, str]) -> list[HealPlan | None]:
    """Fewer sequences, then less memory for vLLM (more for activations), then no CUDA graphs."""
    seqs = _int(env, "VLLM_MAX_NUM_SEQS", 1)
    utilization = _float(env, "VLLM_GPU_MEMORY_UTILIZATION", 0.9)
    lower = round(utilization - UTILIZATION_STEP, 2)
    eager = env.get("VLLM_ENFORCE_EAGER", "").strip().lower() in {"1", "true", "yes", "on"}
    return [
        HealPlan({"VLLM_MAX_NUM_SEQS": str(max(1, seqs // 2))},
                 f"lower VLLM_MAX_NUM_SEQS {seqs} → {max(1, seqs // 2)} (the warm-up allocates per sequence)")
        if seqs > 1 else None,
        HealPlan({"VLLM_GPU_MEMORY_UTILIZATION": _utilization_text(lower)},
                 f"lower VLLM_GPU_MEMORY_UTILIZATION {utilization:.2f} → {lower:.2f} (headroom for the warm-up)")
        if lower >= MIN_UTILIZATION else None,
        HealPlan({"VLLM_ENFORCE_EAGER": "true"}, "set VLLM_ENFORCE_EAGER=true (no CUDA graphs: less memory)")
        if not eager else None,
    ]


def _heal_cuda_oom(diagnosis: Diagnosis, env: Mapping[str, str], attempt: int, gpus: int) -> HealPlan | None:
    if diagnosis.oom_phase == OOM_LOAD:
        return _raise_utilization(diagnosis, env, attempt, gpus)
    # Warm-up, or an excerpt that does not say: attempt n starts at the n-th lever, then takes any left.
    levers = _warmup_levers(env)
    start = min(attempt, len(levers)) - 1
    for plan in levers[start:] + levers[:start]:
        if plan is not None:
            return plan
    return None


def _largest_divisor(heads: int, limit: int) -> int:
    return max(size for size in range(1, max(limit, 1) + 1) if heads % size == 0)


def _heal_parallel(diagnosis: Diagnosis, env: Mapping[str, str], _attempt: int, gpus: int) -> HealPlan | None:
    current = _int(env, "VLLM_TENSOR_PARALLEL_SIZE", int(diagnosis.numbers.get("tp", 1)))
    limit = min(gpus, int(diagnosis.numbers.get("gpus", gpus)))
    heads = int(diagnosis.numbers.get("heads", 0))
    # Attention head counts are powers of two times a small factor: the largest power of two is the safe guess.
    target = _largest_divisor(heads, limit) if heads else 2 ** int(math.log2(max(limit, 1)))
    if target == current or target < 1:
        return None
    facts = f"{heads} attention heads, {limit} GPUs" if heads else f"{limit} GPUs available"
    return HealPlan({"VLLM_TENSOR_PARALLEL_SIZE": str(target)},
                    f"set VLLM_TENSOR_PARALLEL_SIZE {current} → {target} ({facts})")


def _heal_bf16(_diagnosis: Diagnosis, env: Mapping[str, str], _attempt: int, _gpus: int) -> HealPlan | None:
    if env.get("VLLM_DTYPE", "auto") in HALF_DTYPES:
        return None
    return HealPlan({"VLLM_DTYPE": "half"}, "set VLLM_DTYPE=half (this GPU has no bfloat16)")


def _heal_nccl(_diagnosis: Diagnosis, env: Mapping[str, str], _attempt: int, _gpus: int) -> HealPlan | None:
    if env.get("NCCL_P2P_DISABLE", "0").strip() == "1":
        return None
    return HealPlan({"NCCL_P2P_DISABLE": "1"}, "set NCCL_P2P_DISABLE=1 (GPU peer-to-peer off)")


_POLICIES: dict[Cause, Callable[[Diagnosis, Mapping[str, str], int, int], HealPlan | None]] = {
    Cause.KV_TOO_SMALL: _heal_kv_too_small,
    Cause.MAX_LEN_BEYOND_MODEL: _heal_max_len,
    Cause.FREE_MEMORY_STARTUP: _heal_free_memory,
    Cause.NO_CACHE_BLOCKS: _raise_utilization,
    Cause.CUDA_OOM: _heal_cuda_oom,
    Cause.TP_HEADS: _heal_parallel,
    Cause.WORLD_SIZE: _heal_parallel,
    Cause.BF16_TURING: _heal_bf16,
    Cause.NCCL: _heal_nccl,
}


def plan_heal(diagnosis: Diagnosis, env: Mapping[str, str], attempt: int, gpu_count: int) -> HealPlan | None:
    """The change for heal ``attempt`` (1-based), or None to stop and show ``diagnosis.user_action``."""
    if not diagnosis.healable or not 1 <= attempt <= MAX_HEAL_ATTEMPTS:
        return None
    policy = _POLICIES.get(diagnosis.cause)
    return policy(diagnosis, env, attempt, gpu_count) if policy else None
