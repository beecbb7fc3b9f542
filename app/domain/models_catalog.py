"""maider's built-in offline catalog of coding models, with what sizing needs to know about each.

The architecture fields (layers, heads, KV heads, head_dim, context, dtype, quantization) come from each model's
published config.json on Hugging Face. Weight sizes are the totals of the published ``.safetensors`` shards as the
model pages list them, rounded to 0.01 GB (``weight_source="safetensors"``; Qwen2.5-Coder-32B-Instruct-AWQ's
19.33 GB is the figure in reference/vllm.md); where maider has no shard total the size is estimated from the
parameter count (``weight_source="estimate"``). A total off by 300 MB moves the largest context that fits by about
1,100 tokens for a 32B model (256 KiB of KV cache per token). Any other id is sized live from the Hub by
``app.services.model_info``.
"""
from __future__ import annotations

from dataclasses import dataclass

from app.domain.sizing import ModelFacts, weights_fit_anywhere

TIERS = ("small", "medium", "large")  # 7–14B, 30–32B, 70B+


@dataclass(frozen=True)
class CatalogModel:
    facts: ModelFacts  # sizing facts
    tier: str  # "small" | "medium" | "large"
    description: str  # one line for the wizard
    default_context: int  # the context maider proposes (tokens)

    @property
    def model_id(self) -> str:
        return self.facts.model_id


def _qwen25_coder(size: str, layers: int, heads: int, kv_heads: int, hidden: int, weight_gb: float, params: int,
                  awq: bool) -> ModelFacts:
    """Qwen2.5-Coder configs: head_dim 128, 32,768 positions without YaRN; AWQ repos are float16 checkpoints."""
    return ModelFacts(
        model_id=f"Qwen/Qwen2.5-Coder-{size}-Instruct{'-AWQ' if awq else ''}", num_layers=layers,
        num_attention_heads=heads, num_kv_heads=kv_heads, head_dim=hidden // heads, hidden_size=hidden,
        max_position_embeddings=32768, torch_dtype="float16" if awq else "bfloat16",
        quantization="awq" if awq else None, weight_bytes=round(weight_gb * 1e9), weight_source="safetensors",
        params=params, architectures=("Qwen2ForCausalLM",),
    )


_QWEN3_CODER_30B = ModelFacts(
    model_id="Qwen/Qwen3-Coder-30B-A3B-Instruct", num_layers=48, num_attention_heads=32, num_kv_heads=4, head_dim=128,
    hidden_size=2048, max_position_embeddings=262144, torch_dtype="bfloat16", quantization=None,
    weight_bytes=round(61.07e9), weight_source="estimate", params=30_532_122_624,
    architectures=("Qwen3MoeForCausalLM",),
)

CATALOG: tuple[CatalogModel, ...] = (
    CatalogModel(_qwen25_coder("7B", 28, 28, 4, 3584, 5.58, 7_615_616_512, awq=True), "small",
                 "Qwen2.5-Coder 7B, 4-bit AWQ: fast and cheap, fits one 20 GB GPU with room for 32K context", 32768),
    CatalogModel(_qwen25_coder("7B", 28, 28, 4, 3584, 15.23, 7_615_616_512, awq=False), "small",
                 "Qwen2.5-Coder 7B at full 16-bit precision", 32768),
    CatalogModel(_qwen25_coder("14B", 48, 40, 8, 5120, 9.99, 14_770_033_664, awq=True), "small",
                 "Qwen2.5-Coder 14B, 4-bit AWQ: noticeably stronger than 7B, still one GPU", 16384),
    CatalogModel(_qwen25_coder("14B", 48, 40, 8, 5120, 29.54, 14_770_033_664, awq=False), "small",
                 "Qwen2.5-Coder 14B at full 16-bit precision (two or more GPUs)", 32768),
    CatalogModel(
        ModelFacts(
            model_id="deepseek-ai/DeepSeek-Coder-V2-Lite-Instruct", num_layers=27, num_attention_heads=16,
            num_kv_heads=16, head_dim=128, hidden_size=2048, max_position_embeddings=163840,
            torch_dtype="bfloat16", quantization=None, weight_bytes=round(31.42e9), weight_source="safetensors",
            params=15_706_484_224, architectures=("DeepseekV2ForCausalLM",), mla_latent_dim=512 + 64,
        ),
        "small", "DeepSeek-Coder-V2-Lite: 16B mixture of experts (2.4B active), tiny KV cache, long context", 32768),
    CatalogModel(_qwen25_coder("32B", 64, 40, 8, 5120, 19.33, 32_763_876_352, awq=True), "medium",
                 "Qwen2.5-Coder 32B, 4-bit AWQ: the strongest Qwen2.5 coder; two 20 GB GPUs for 32K", 32768),
    CatalogModel(_qwen25_coder("32B", 64, 40, 8, 5120, 65.53, 32_763_876_352, awq=False), "medium",
                 "Qwen2.5-Coder 32B at full 16-bit precision (four GPUs)", 32768),
    CatalogModel(_QWEN3_CODER_30B, "medium",
                 "Qwen3-Coder 30B-A3B: mixture of experts (3.3B active), fast decode, built for agentic coding",
                 32768),
    CatalogModel(
        ModelFacts(
            model_id="hugging-quants/Meta-Llama-3.1-70B-Instruct-AWQ-INT4", num_layers=80, num_attention_heads=64,
            num_kv_heads=8, head_dim=128, hidden_size=8192, max_position_embeddings=131072, torch_dtype="float16",
            quantization="awq", weight_bytes=round(39.52e9), weight_source="safetensors", params=70_553_706_496,
            architectures=("LlamaForCausalLM",),
        ),
        "large", "Llama 3.1 70B Instruct, 4-bit AWQ: large general model, four 20 GB GPUs", 32768),
)

_BY_ID = {entry.model_id.lower(): entry for entry in CATALOG}


def catalog_entry(model_id: str) -> CatalogModel | None:
    """The catalog entry for a Hugging Face id (case-insensitive, as the Hub resolves ids)."""
    return _BY_ID.get(model_id.strip().lower())


def catalog_facts(model_id: str) -> ModelFacts | None:
    """Sizing facts for a catalog model, or None when maider must look the id up."""
    entry = catalog_entry(model_id)
    return entry.facts if entry else None


def suggestions(tier: str | None = None, vram_gb_total: float | None = None) -> list[CatalogModel]:
    """Catalog models of a tier whose weights fit in ``vram_gb_total`` (all GPUs together), curated order."""
    if tier is not None and tier not in TIERS:
        raise ValueError(f"unknown tier '{tier}' (known: {', '.join(TIERS)})")
    return [entry for entry in CATALOG
            if (tier is None or entry.tier == tier)
            and (vram_gb_total is None or weights_fit_anywhere(entry.facts, vram_gb_total))]
