"""A session's vLLM settings: stored as JSON on the row (no secrets), turned into the VM's env settings here."""
from __future__ import annotations

from typing import Any

from app.config import Settings
from app.domain.vllm_env import DEFAULT_OPEN_WEBUI_IMAGE, DEFAULT_VLLM_IMAGE, Images, VllmSettings
from app.models import Session

DEFAULTS: dict[str, Any] = {
    "max_model_len": 32768, "gpu_memory_utilization": 0.90, "max_num_seqs": 1, "tensor_parallel_size": 1,
    "dtype": "auto", "kv_cache_dtype": "auto", "enforce_eager": False, "extra_args": "",
}


def vllm_settings_for(session: Session) -> VllmSettings:
    """The VllmSettings a session's VM should run with."""
    config = {**DEFAULTS, **(session.vllm_config or {})}
    return VllmSettings(
        model_id=session.model_id, served_name=session.served_name,
        max_model_len=int(config["max_model_len"]),
        gpu_memory_utilization=float(config["gpu_memory_utilization"]),
        max_num_seqs=int(config["max_num_seqs"]), tensor_parallel_size=int(config["tensor_parallel_size"]),
        dtype=str(config["dtype"]), kv_cache_dtype=str(config["kv_cache_dtype"]),
        enforce_eager=bool(config["enforce_eager"]), extra_args=str(config["extra_args"]),
        # NCCL peer-to-peer over PCIe passthrough can hang without an error: off unless the session says otherwise
        nccl_p2p_disable=bool(config.get("nccl_p2p_disable", int(config["tensor_parallel_size"]) > 1)),
    )


def images_for(settings: Settings) -> Images:
    """Pinned images unless the user overrides them."""
    return Images(vllm=settings.vllm_image or DEFAULT_VLLM_IMAGE,
                  open_webui=settings.open_webui_image or DEFAULT_OPEN_WEBUI_IMAGE)
