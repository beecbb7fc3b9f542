"""What the simulated VM prints: vLLM container logs and cloud-init output, in the real programs' words.

The failure texts are the ones maider's log diagnosis matches (see reference/vllm.md), so the healer is exercised by
the same lines a real VM would show. No secret (API key, HF token) is ever written into a log line.
"""
from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from app.simulator.vm import VmBehaviour

ENGINE_FAILED = "RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {}"


@dataclass(frozen=True)
class VllmStartFailure:
    stage: Literal["config", "load", "hang"]  # config: before any download; load: after loading weights; hang
    lines: list[str]


def _stamp(source: str) -> str:
    return f"INFO {time.strftime('%m-%d %H:%M:%S')} [{source}]"


def _error_stamp(source: str) -> str:
    return f"ERROR {time.strftime('%m-%d %H:%M:%S')} [{source}]"


def header_lines(env: Mapping[str, str]) -> list[str]:
    """The first lines of a vLLM container (the args line shows the API key redacted, as vLLM does not)."""
    model = env.get("MODEL_ID") or "unknown/model"
    return [
        f"{_stamp('__init__.py:241')} Automatically detected platform cuda.",
        f"{_stamp('api_server.py:1805')} vLLM API server version 0.10.1.1",
        f"{_stamp('utils.py:326')} non-default args: {{'model': '{model}', 'served_model_name': "
        f"['{env.get('SERVED_MODEL_NAME') or model}'], 'max_model_len': {env.get('VLLM_MAX_MODEL_LEN') or 32768}, "
        f"'gpu_memory_utilization': {env.get('VLLM_GPU_MEMORY_UTILIZATION') or 0.9}, 'api_key': '<redacted>'}}",
        f"{_stamp('config.py:1604')} Using max model len {env.get('VLLM_MAX_MODEL_LEN') or 32768}",
        f"{_stamp('core.py:619')} Waiting for init message from front-end.",
        f"{_stamp('core.py:71')} Initializing a V1 LLM engine (v0.10.1.1) with config: model='{model}'",
    ]


def download_lines(model: str) -> list[str]:
    return [f"{_stamp('gpu_model_runner.py:1843')} Starting to load model {model}...",
            f"{_stamp('weight_utils.py:296')} Using model weights format ['*.safetensors']",
            f"{_stamp('weight_utils.py:312')} Time spent downloading weights for {model}: 1.3 seconds"]


def weights_gib(model: str) -> float:
    """A plausible weight size from the model id: 2 bytes per parameter, about 0.55 for 4-bit checkpoints."""
    match = re.search(r"(\d+(?:\.\d+)?)[bB]\b", model)
    params = float(match.group(1)) if match else 7.0
    per_param = 0.55 if re.search(r"awq|gptq|int4|4bit", model, re.I) else 2.0
    return params * per_param * 1e9 / 2**30


def loaded_lines(model: str, load_s: float) -> list[str]:
    return [f"{_stamp('default_loader.py:262')} Loading weights took {load_s * 0.7:.2f} seconds",
            f"{_stamp('gpu_model_runner.py:1892')} Model loading took {weights_gib(model):.4f} GiB and "
            f"{load_s:.6f} seconds"]


def kv_cache_lines(max_len: int) -> list[str]:
    return [f"{_stamp('gpu_worker.py:276')} Available KV cache memory: 2.49 GiB",
            f"{_stamp('kv_cache_utils.py:849')} GPU KV cache size: {max(max_len, 46_608):,} tokens",
            f"{_stamp('core.py:214')} init engine (profile, create kv cache, warmup model) took 3.14 seconds"]


def ready_lines() -> list[str]:
    return [f"{_stamp('api_server.py:1857')} Starting vLLM API server 0 on http://0.0.0.0:8000",
            "INFO:     Started server process [1]",
            "INFO:     Waiting for application startup.",
            "INFO:     Application startup complete."]


def failure_for(behaviour: VmBehaviour, env: Mapping[str, str]) -> VllmStartFailure | None:
    """The failure this start runs into, or None once the configuration has the fix the failure needs."""
    kind = behaviour.vllm_failure
    model = env.get("MODEL_ID") or "unknown/model"
    max_len = int(env.get("VLLM_MAX_MODEL_LEN") or 32768)
    if kind == "kv_too_small" and max_len > behaviour.fitting_len:
        return VllmStartFailure("load", [
            f"{_error_stamp('core.py:700')} EngineCore failed to start.",
            "Traceback (most recent call last):",
            f"ValueError: To serve at least one request with the models's max seq len ({max_len}), "
            f"({max_len * 56 / 2**20:.2f} GiB KV cache is needed, which is larger than the available KV cache "
            f"memory ({behaviour.fitting_len * 56 / 2**20:.2f} GiB). Based on the available memory, the estimated "
            f"maximum model length is {behaviour.fitting_len}. Try increasing `gpu_memory_utilization` or "
            "decreasing `max_model_len` when initializing the engine.",
            ENGINE_FAILED])
    if kind == "warmup_oom":
        eager = (env.get("VLLM_ENFORCE_EAGER") or "").strip().lower() in ("1", "true", "yes", "on")
        utilization = float(env.get("VLLM_GPU_MEMORY_UTILIZATION") or 0.9)
        if not eager and utilization >= behaviour.warmup_oom_max_utilization:
            return VllmStartFailure("load", [
                f"{_error_stamp('core.py:700')} EngineCore failed to start.",
                "Traceback (most recent call last):",
                "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 1.16 GiB. GPU 0 has a total capacity "
                "of 19.70 GiB of which 402.12 MiB is free.",
                "RuntimeError: CUDA out of memory occurred when warming up sampler with 256 dummy requests. Please "
                "try lowering `max_num_seqs` or `gpu_memory_utilization` when initializing the engine.",
                ENGINE_FAILED])
    if kind == "bf16_turing" and (env.get("VLLM_DTYPE") or "auto") not in ("half", "float16"):
        return VllmStartFailure("config", [
            f"{_error_stamp('core.py:700')} EngineCore failed to start.",
            "ValueError: Bfloat16 is only supported on GPUs with compute capability of at least 8.0. Your Quadro "
            "RTX 6000 GPU has compute capability 7.5. You can use float16 instead by explicitly setting the "
            "`dtype` flag in CLI, for example: --dtype=half.",
            ENGINE_FAILED])
    if kind == "gated":
        return VllmStartFailure("config", [
            "huggingface_hub.errors.GatedRepoError: 401 Client Error. (Request ID: Root=1-6746f0a2-4b1c)",
            "",
            f"Cannot access gated repo for url https://huggingface.co/{model}/resolve/main/config.json.",
            f"Access to model {model} is restricted. You must have access to it and be authenticated to access "
            "it. Please log in.",
            ENGINE_FAILED])
    if kind == "never_ready":
        return VllmStartFailure("hang", [])
    return None


_CLOUD_INIT_STEPS = (
    "Cloud-init v. 24.4.1-0ubuntu0~24.04.1 running 'modules:config' at {now}.",
    "Reading package lists...",
    "Setting up nvidia-driver-570-server (570.195.03-0ubuntu0.24.04.1) ...",
    "Setting up docker-ce (5:28.5.1-1~ubuntu.24.04~noble) ...",
    "Setting up nvidia-container-toolkit (1.17.8-1) ...",
    "INFO[0000] Wrote updated config to /etc/docker/daemon.json",
    "Created symlink /etc/systemd/system/multi-user.target.wants/maider-llm.service.",
)


def cloud_init_lines(progress: float, state: str, needs_reboot: bool) -> list[str]:
    """cloud-init-output.log so far (``progress`` 0..1 through the run)."""
    now = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime())
    shown = max(1, int(progress * len(_CLOUD_INIT_STEPS)))
    lines = [step.format(now=now) for step in _CLOUD_INIT_STEPS[:shown]]
    if state == "error":
        lines += ["E: Unable to locate package nvidia-container-toolkit",
                  "2026-11-27 09:02:11,410 - cc_scripts_user.py[WARNING]: Failed to run module scripts_user "
                  "(scripts in /var/lib/cloud/instance/scripts)"]
    if state in ("done", "error"):
        if needs_reboot and state == "done":
            lines.append("*** System restart required ***")
        lines.append(f"Cloud-init v. 24.4.1-0ubuntu0~24.04.1 finished at {now}. Datasource DataSourceLinode. "
                     "Up 94.20 seconds")
    return lines
