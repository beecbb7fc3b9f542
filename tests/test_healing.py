"""The heal policy: every branch, stronger on each attempt, and a stop when nothing is left."""
from __future__ import annotations

import pytest

from app.domain.diagnosis import OOM_LOAD, OOM_WARMUP, Cause, Diagnosis
from app.domain.healing import MAX_HEAL_ATTEMPTS, HealPlan, plan_heal
from app.domain.vllm_env import Images, VllmSettings, parse_env, render_env, update_env

BASE_ENV = parse_env(render_env(VllmSettings("Qwen/Qwen2.5-Coder-14B-Instruct", "coder", 32768, 0.90, 4, 2),
                                "key", None, "secret", Images()))
UNHEALABLE = (Cause.GATED_REPO, Cause.REPO_NOT_FOUND, Cause.UNSUPPORTED_ARCH, Cause.QUANT_UNSUPPORTED)


def _diagnosis(cause: Cause, healable: bool = True, oom_phase: str | None = None,
               **numbers: float) -> Diagnosis:
    return Diagnosis(cause=cause, evidence="line", summary="summary", healable=healable, fix="fix",
                     user_action="what to do", numbers=dict(numbers), oom_phase=oom_phase)


def _env(**overrides: str) -> dict[str, str]:
    return {**BASE_ENV, **overrides}


def _apply(env: dict[str, str], plan: HealPlan | None) -> dict[str, str]:
    """What the engine does with a plan: rewrite the .env text and read it back."""
    assert plan is not None
    text = "".join(f"{key}='{value}'\n" for key, value in env.items())
    return parse_env(update_env(text, plan.env_updates))


def test_kv_too_small_uses_vllms_estimate_rounded_down() -> None:
    plan = plan_heal(_diagnosis(Cause.KV_TOO_SMALL, estimated_max_len=5632, max_model_len=32768), _env(), 1, 2)
    assert plan is not None
    assert plan.env_updates == {"VLLM_MAX_MODEL_LEN": "5120"}
    assert "32768 → 5120" in plan.description


def test_kv_too_small_recurring_goes_lower_than_the_new_estimate() -> None:
    """Second attempt: vLLM's new estimate (4900 → 4096) is not trusted as is; a quarter off 5120 is stronger."""
    env = _apply(_env(), plan_heal(_diagnosis(Cause.KV_TOO_SMALL, estimated_max_len=5632), _env(), 1, 2))
    second = plan_heal(_diagnosis(Cause.KV_TOO_SMALL, estimated_max_len=4900), env, 2, 2)
    assert second is not None
    assert int(second.env_updates["VLLM_MAX_MODEL_LEN"]) == 3072 < int(env["VLLM_MAX_MODEL_LEN"])


def test_kv_too_small_without_estimate_halves() -> None:
    plan = plan_heal(_diagnosis(Cause.KV_TOO_SMALL), _env(), 1, 2)
    assert plan is not None and plan.env_updates == {"VLLM_MAX_MODEL_LEN": "16384"}


def test_kv_too_small_stops_below_a_useful_context() -> None:
    assert plan_heal(_diagnosis(Cause.KV_TOO_SMALL, estimated_max_len=700), _env(), 1, 2) is None


def test_max_len_beyond_model_takes_the_derived_value_once() -> None:
    diagnosis = _diagnosis(Cause.MAX_LEN_BEYOND_MODEL, max_model_len=65536, derived_max_len=32768)
    plan = plan_heal(diagnosis, _env(VLLM_MAX_MODEL_LEN="65536"), 1, 1)
    assert plan is not None and plan.env_updates == {"VLLM_MAX_MODEL_LEN": "32768"}
    assert plan_heal(diagnosis, _env(VLLM_MAX_MODEL_LEN="32768"), 2, 1) is None


def test_free_memory_lowers_utilization_to_what_is_free() -> None:
    diagnosis = _diagnosis(Cause.FREE_MEMORY_STARTUP, free_gib=18.02, total_gib=23.64, requested_utilization=0.9)
    plan = plan_heal(diagnosis, _env(), 1, 1)
    assert plan is not None and plan.env_updates == {"VLLM_GPU_MEMORY_UTILIZATION": "0.75"}


def test_free_memory_recurring_steps_below_the_current_value() -> None:
    diagnosis = _diagnosis(Cause.FREE_MEMORY_STARTUP, free_gib=22.35, total_gib=23.56)
    plan = plan_heal(diagnosis, _env(VLLM_GPU_MEMORY_UTILIZATION="0.90"), 2, 1)
    assert plan is not None and plan.env_updates == {"VLLM_GPU_MEMORY_UTILIZATION": "0.85"}


def test_free_memory_stops_when_the_gpu_is_mostly_taken() -> None:
    diagnosis = _diagnosis(Cause.FREE_MEMORY_STARTUP, free_gib=4.0, total_gib=24.0)
    assert plan_heal(diagnosis, _env(), 1, 1) is None


def test_warmup_oom_gets_stronger_each_attempt() -> None:
    diagnosis = _diagnosis(Cause.CUDA_OOM, oom_phase=OOM_WARMUP)
    env = _env()
    first = plan_heal(diagnosis, env, 1, 2)
    assert first is not None and first.env_updates == {"VLLM_MAX_NUM_SEQS": "2"}
    env = _apply(env, first)
    second = plan_heal(diagnosis, env, 2, 2)
    assert second is not None and second.env_updates == {"VLLM_GPU_MEMORY_UTILIZATION": "0.85"}
    env = _apply(env, second)
    third = plan_heal(diagnosis, env, 3, 2)
    assert third is not None and third.env_updates == {"VLLM_ENFORCE_EAGER": "true"}
    env = _apply(env, third)
    assert (env["VLLM_MAX_NUM_SEQS"], env["VLLM_GPU_MEMORY_UTILIZATION"], env["VLLM_ENFORCE_EAGER"]) == \
        ("2", "0.85", "true")
    assert plan_heal(diagnosis, env, 4, 2) is None


def test_warmup_oom_with_one_sequence_starts_with_utilization() -> None:
    plan = plan_heal(_diagnosis(Cause.CUDA_OOM, oom_phase=OOM_WARMUP), _env(VLLM_MAX_NUM_SEQS="1"), 1, 1)
    assert plan is not None and plan.env_updates == {"VLLM_GPU_MEMORY_UTILIZATION": "0.85"}


def test_oom_of_unknown_phase_follows_the_warmup_ladder() -> None:
    plan = plan_heal(_diagnosis(Cause.CUDA_OOM), _env(), 1, 1)
    assert plan is not None and plan.env_updates == {"VLLM_MAX_NUM_SEQS": "2"}


@pytest.mark.parametrize("cause, phase", [(Cause.CUDA_OOM, OOM_LOAD), (Cause.NO_CACHE_BLOCKS, None)])
def test_load_oom_and_no_cache_blocks_raise_utilization_once(cause: Cause, phase: str | None) -> None:
    diagnosis = _diagnosis(cause, oom_phase=phase)
    plan = plan_heal(diagnosis, _env(), 1, 1)
    assert plan is not None and plan.env_updates == {"VLLM_GPU_MEMORY_UTILIZATION": "0.95"}
    assert plan_heal(diagnosis, _apply(_env(), plan), 2, 1) is None


def test_bf16_switches_to_half_once() -> None:
    plan = plan_heal(_diagnosis(Cause.BF16_TURING), _env(), 1, 1)
    assert plan is not None and plan.env_updates == {"VLLM_DTYPE": "half"}
    assert plan_heal(_diagnosis(Cause.BF16_TURING), _env(VLLM_DTYPE="half"), 2, 1) is None


@pytest.mark.parametrize("heads, gpus, expected", [(40, 3, "2"), (64, 4, "4"), (28, 4, "4"), (40, 8, "8"),
                                                   (7, 4, "1")])
def test_tp_heads_picks_the_largest_divisor_that_fits(heads: int, gpus: int, expected: str) -> None:
    plan = plan_heal(_diagnosis(Cause.TP_HEADS, heads=heads, tp=3), _env(VLLM_TENSOR_PARALLEL_SIZE="3"), 1, gpus)
    assert plan is not None and plan.env_updates == {"VLLM_TENSOR_PARALLEL_SIZE": expected}


def test_world_size_fits_the_gpus_vllm_actually_sees() -> None:
    plan = plan_heal(_diagnosis(Cause.WORLD_SIZE, tp=4, gpus=2), _env(VLLM_TENSOR_PARALLEL_SIZE="4"), 1, 4)
    assert plan is not None and plan.env_updates == {"VLLM_TENSOR_PARALLEL_SIZE": "2"}


def test_parallel_heal_stops_when_nothing_changes() -> None:
    assert plan_heal(_diagnosis(Cause.WORLD_SIZE, tp=1, gpus=1), _env(VLLM_TENSOR_PARALLEL_SIZE="1"), 1, 1) is None


def test_nccl_disables_p2p_once() -> None:
    plan = plan_heal(_diagnosis(Cause.NCCL), _env(), 1, 2)
    assert plan is not None and plan.env_updates == {"NCCL_P2P_DISABLE": "1"}
    assert plan_heal(_diagnosis(Cause.NCCL), _apply(_env(), plan), 2, 2) is None


@pytest.mark.parametrize("cause", UNHEALABLE)
def test_unhealable_causes_stop_at_once(cause: Cause) -> None:
    assert plan_heal(_diagnosis(cause, healable=False), _env(), 1, 4) is None


def test_no_attempt_beyond_the_limit() -> None:
    diagnosis = _diagnosis(Cause.BF16_TURING)
    assert plan_heal(diagnosis, _env(), MAX_HEAL_ATTEMPTS, 1) is not None
    assert plan_heal(diagnosis, _env(), MAX_HEAL_ATTEMPTS + 1, 1) is None
    assert plan_heal(diagnosis, _env(), 0, 1) is None
