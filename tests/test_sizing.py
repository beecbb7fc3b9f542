"""Sizing: the numbers from reference/vllm.md, the start-up rules vLLM enforces, and plan recommendations."""
from __future__ import annotations

import pytest

from app.domain.gpu_catalog import QUADRO_RTX6000, RTX4000_ADA
from app.domain.models_catalog import CATALOG, catalog_entry, catalog_facts, suggestions
from app.domain.sizing import (
    CONTEXT_STEP,
    estimate_fit,
    facts_from_config,
    format_context,
    kv_bytes_per_token,
    recommend,
)
from app.providers.simulated import simulated_plans

KIB = 1024
QWEN_32B_AWQ = "Qwen/Qwen2.5-Coder-32B-Instruct-AWQ"

# A trimmed copy of Qwen2.5-Coder-32B-Instruct-AWQ's config.json.
QWEN_32B_AWQ_CONFIG = {
    "architectures": ["Qwen2ForCausalLM"], "hidden_size": 5120, "num_attention_heads": 40, "num_hidden_layers": 64,
    "num_key_value_heads": 8, "max_position_embeddings": 32768, "torch_dtype": "float16", "rope_scaling": None,
    "quantization_config": {"bits": 4, "group_size": 128, "quant_method": "awq", "version": "gemm", "zero_point": True},
}


@pytest.mark.parametrize(("model_id", "kib"), [
    ("Qwen/Qwen2.5-Coder-7B-Instruct", 56),
    ("Qwen/Qwen2.5-Coder-14B-Instruct", 192),
    ("Qwen/Qwen2.5-Coder-32B-Instruct", 256),
    ("hugging-quants/Meta-Llama-3.1-70B-Instruct-AWQ-INT4", 320),
])
def test_kv_bytes_per_token_matches_the_reference_table(model_id: str, kib: int) -> None:
    assert kv_bytes_per_token(catalog_facts(model_id)) == kib * KIB


def test_kv_cache_halves_with_fp8_and_splits_across_tensor_parallel_ranks() -> None:
    facts = catalog_facts(QWEN_32B_AWQ)
    assert kv_bytes_per_token(facts, "fp8") == 128 * KIB
    assert kv_bytes_per_token(facts, tp=2) == 128 * KIB
    # 8 KV heads over 16 ranks: each rank still holds one whole head.
    assert kv_bytes_per_token(facts, tp=16) == kv_bytes_per_token(facts, tp=8)


def test_facts_from_config_uses_shard_sizes_and_derives_head_dim() -> None:
    facts = facts_from_config(QWEN_32B_AWQ, QWEN_32B_AWQ_CONFIG, safetensors_bytes=19_330_000_000)
    assert round(facts.weight_gb, 2) == 19.33
    assert facts.weight_source == "safetensors"
    assert facts.head_dim == 128 and facts.num_kv_heads == 8 and facts.quantization == "awq"
    assert kv_bytes_per_token(facts) == 256 * KIB


def test_facts_from_config_defaults_kv_heads_and_scales_context_by_yarn() -> None:
    config = {"hidden_size": 4096, "num_attention_heads": 32, "num_hidden_layers": 32, "head_dim": 96,
              "max_position_embeddings": 32768, "torch_dtype": "bfloat16",
              "rope_scaling": {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}}
    facts = facts_from_config("org/mha", config, safetensors_bytes=None, params=8_000_000_000)
    assert facts.num_kv_heads == 32  # plain multi-head attention
    assert facts.head_dim == 96  # the config's own head_dim wins over hidden/heads
    assert facts.max_position_embeddings == 131072
    assert facts.weight_source == "estimate" and round(facts.weight_gb) == 16


def test_facts_from_config_reads_multimodal_text_config() -> None:
    config = {"architectures": ["Mistral3ForConditionalGeneration"],
              "text_config": {"hidden_size": 5120, "num_attention_heads": 32, "num_hidden_layers": 40,
                              "num_key_value_heads": 8, "head_dim": 128, "max_position_embeddings": 131072}}
    facts = facts_from_config("org/vision", config, safetensors_bytes=48_000_000_000)
    assert (facts.num_layers, facts.num_kv_heads, facts.max_position_embeddings) == (40, 8, 131072)


def test_facts_from_config_names_what_is_missing() -> None:
    with pytest.raises(ValueError, match="num_hidden_layers"):
        facts_from_config("org/odd", {"model_type": "odd"}, safetensors_bytes=1)


def test_mla_models_cache_one_shared_latent() -> None:
    facts = catalog_facts("deepseek-ai/DeepSeek-Coder-V2-Lite-Instruct")
    assert kv_bytes_per_token(facts) == 27 * 576 * 2
    assert kv_bytes_per_token(facts, tp=2) == kv_bytes_per_token(facts)  # the latent is replicated, not split


def test_32b_awq_does_not_fit_one_rtx4000_ada_at_32k() -> None:
    report = estimate_fit(catalog_facts(QWEN_32B_AWQ), RTX4000_ADA, gpus=1, tp=1, context=32768)
    assert not report.fits
    assert report.max_context == 0
    assert "won't fit" in str(report.problems[0]) and "plan has 20" in str(report.problems[0])
    assert report.problems[0].setting == "plan"
    assert report.needed_gb > report.available_gb == 20


def test_32b_awq_fits_two_rtx4000_ada_with_tp2() -> None:
    report = estimate_fit(catalog_facts(QWEN_32B_AWQ), RTX4000_ADA, gpus=2, tp=2, context=32768)
    assert report.fits, report.problems
    assert report.weights_per_gpu_gb == pytest.approx(19.33 / 2, abs=0.01)
    assert report.kv_bytes_per_token == 128 * KIB
    assert report.max_context == 32768  # capped at the model's own limit
    assert report.needed_gb <= 20


def test_too_long_a_context_reports_the_largest_that_fits() -> None:
    facts = catalog_facts("Qwen/Qwen2.5-Coder-14B-Instruct-AWQ")
    report = estimate_fit(facts, RTX4000_ADA, gpus=1, tp=1, context=32768)
    assert not report.fits
    assert 0 < report.max_context < 32768 and report.max_context % CONTEXT_STEP == 0
    message = str(report.problems[0])
    assert message.startswith("won't fit: 32,768 tokens of context need ")
    assert " GB per GPU, plan has 20 GB; largest context that fits: " in message
    assert message.endswith(f"{report.max_context:,} tokens")
    assert report.problems[0].setting == "max_model_len"
    assert estimate_fit(facts, RTX4000_ADA, gpus=1, tp=1, context=report.max_context).fits
    assert not estimate_fit(facts, RTX4000_ADA, gpus=1, tp=1, context=report.max_context + CONTEXT_STEP).fits


def test_tp3_is_rejected_for_40_heads() -> None:
    report = estimate_fit(catalog_facts(QWEN_32B_AWQ), QUADRO_RTX6000, gpus=3, tp=3, context=8192)
    assert not report.fits
    assert any(p.setting == "tensor_parallel_size" and "40 attention heads" in str(p) and "1, 2" in str(p)
               for p in report.problems)


def test_tp_larger_than_the_gpu_count_is_rejected() -> None:
    report = estimate_fit(catalog_facts(QWEN_32B_AWQ), RTX4000_ADA, gpus=1, tp=2, context=8192)
    assert any("needs 2 GPUs but the plan has 1" in str(p) for p in report.problems)


def test_bf16_checkpoint_on_quadro_rtx6000_runs_in_half() -> None:
    report = estimate_fit(catalog_facts("Qwen/Qwen2.5-Coder-7B-Instruct"), QUADRO_RTX6000, gpus=1, tp=1,
                          context=16384)
    assert report.fits
    assert report.dtype_flag == "half"
    assert any("--dtype half" in note and "Quadro RTX 6000" in note for note in report.notes)
    ada = estimate_fit(catalog_facts("Qwen/Qwen2.5-Coder-7B-Instruct-AWQ"), RTX4000_ADA, gpus=1, tp=1, context=16384)
    assert ada.dtype_flag is None


def test_explicit_bfloat16_on_turing_and_fp8_on_turing_are_problems() -> None:
    bf16 = estimate_fit(catalog_facts("Qwen/Qwen2.5-Coder-7B-Instruct"), QUADRO_RTX6000, 1, 1, 8192,
                        dtype="bfloat16")
    assert any(p.setting == "dtype" for p in bf16.problems)
    fp8_config = {**QWEN_32B_AWQ_CONFIG, "quantization_config": {"quant_method": "fp8"}, "torch_dtype": "bfloat16"}
    fp8 = facts_from_config("org/fp8", fp8_config, safetensors_bytes=8_000_000_000)
    assert any("8.9" in str(p) for p in estimate_fit(fp8, QUADRO_RTX6000, 1, 1, 4096).problems)
    assert estimate_fit(fp8, RTX4000_ADA, 1, 1, 4096).fits


def test_context_beyond_the_model_limit_is_a_problem() -> None:
    report = estimate_fit(catalog_facts(QWEN_32B_AWQ), RTX4000_ADA, gpus=4, tp=4, context=65536)
    assert any(p.setting == "max_model_len" and "limit of 32,768" in str(p) for p in report.problems)


def test_recommend_lists_fitting_plans_cheapest_first_with_their_tp() -> None:
    recommendations = recommend(catalog_facts(QWEN_32B_AWQ), 32768, simulated_plans())
    assert recommendations[0].plan.id == "g2-gpu-rtx4000a2-s"
    assert recommendations[0].tp == 2 and recommendations[0].hourly_price == 1.05
    prices = [r.hourly_price for r in recommendations]
    assert prices == sorted(prices)
    assert all(r.plan.gpus > 1 for r in recommendations)  # no single 20/24 GB GPU holds 19.33 GB + KV
    # the 3-GPU Quadro plan runs 40 heads at TP=2 (3 does not divide 40)
    assert all(r.tp == 2 for r in recommendations if r.plan.id == "g1-gpu-rtx6000-3")


def test_recommend_puts_unknown_prices_last() -> None:
    plans = simulated_plans("us-ord")
    free = plans[0].__class__(**{**plans[0].__dict__, "id": "mystery", "hourly_price": 0.0})
    recommendations = recommend(catalog_facts("Qwen/Qwen2.5-Coder-7B-Instruct-AWQ"), 8192, [free, *plans])
    assert recommendations[-1].plan.id == "mystery"
    assert recommendations[0].plan.id == "g2-gpu-rtx4000a1-s"


def test_catalog_lookup_is_case_insensitive_and_suggestions_respect_vram() -> None:
    assert catalog_facts("qwen/qwen2.5-coder-32b-instruct-awq") is catalog_facts(QWEN_32B_AWQ)
    assert catalog_facts("someone/unknown") is None
    assert catalog_entry(QWEN_32B_AWQ).tier == "medium"
    one_gpu = {entry.model_id for entry in suggestions(vram_gb_total=20)}
    assert "Qwen/Qwen2.5-Coder-7B-Instruct-AWQ" in one_gpu and QWEN_32B_AWQ not in one_gpu
    assert QWEN_32B_AWQ in {entry.model_id for entry in suggestions("medium", vram_gb_total=40)}
    assert [entry.tier for entry in suggestions("large")] == ["large"]
    with pytest.raises(ValueError):
        suggestions("huge")


def test_every_catalog_default_context_fits_some_linode_plan() -> None:
    plans = simulated_plans()
    for entry in CATALOG:
        assert recommend(entry.facts, entry.default_context, plans), entry.model_id


def test_format_context() -> None:
    assert format_context(32768) == "32K"
    assert format_context(12345) == "12,345"


def test_facts_from_a_deepseek_v2_config_match_the_catalog_entry() -> None:
    config = {"architectures": ["DeepseekV2ForCausalLM"], "hidden_size": 2048, "num_attention_heads": 16,
              "num_hidden_layers": 27, "num_key_value_heads": 16, "kv_lora_rank": 512, "qk_rope_head_dim": 64,
              "max_position_embeddings": 163840, "torch_dtype": "bfloat16",
              "rope_scaling": {"type": "yarn", "factor": 40, "original_max_position_embeddings": 4096}}
    facts = facts_from_config("deepseek-ai/DeepSeek-Coder-V2-Lite-Instruct", config, safetensors_bytes=31_420_000_000)
    catalog = catalog_facts("deepseek-ai/DeepSeek-Coder-V2-Lite-Instruct")
    assert facts.max_position_embeddings == catalog.max_position_embeddings == 163840
    assert kv_bytes_per_token(facts) == kv_bytes_per_token(catalog)


def test_linear_rope_scaling_multiplies_the_stated_length() -> None:
    config = {"hidden_size": 4096, "num_attention_heads": 32, "num_hidden_layers": 32,
              "max_position_embeddings": 4096, "rope_scaling": {"type": "linear", "factor": 2.0}}
    assert facts_from_config("org/linear", config, 1).max_position_embeddings == 8192
