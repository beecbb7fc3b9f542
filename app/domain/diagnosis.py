"""Find why vLLM failed to start, from (an excerpt of) its log.

Patterns are vLLM's own message texts (``reference/vllm.md``), matched case-sensitively: loose words such as
"OOM" match "room" and harmless warnings. Almost every start-up failure ends in "Engine core initialization
failed. See root cause above."; the root cause is the first failure printed before that line (Python prints a
chained exception's root first), so later echoes of the same traceback do not decide. Excerpts that start
mid-traceback or cut the key line short still match wherever the distinctive part survives.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

EVIDENCE_MAX_CHARS = 400
EVIDENCE_CONTEXT_CHARS = 60  # kept before the match on a long line (the log prefix, the exception type)
TOKEN_ROUNDING = 1024
OOM_WARMUP = "warm-up"
OOM_LOAD = "load"


class Cause(str, Enum):
    FREE_MEMORY_STARTUP = "free_memory_startup"
    NO_CACHE_BLOCKS = "no_cache_blocks"
    KV_TOO_SMALL = "kv_too_small"
    MAX_LEN_BEYOND_MODEL = "max_len_beyond_model"
    CUDA_OOM = "cuda_oom"
    TP_HEADS = "tp_heads"
    WORLD_SIZE = "world_size"
    BF16_TURING = "bf16_turing"
    QUANT_UNSUPPORTED = "quant_unsupported"
    GATED_REPO = "gated_repo"
    REPO_NOT_FOUND = "repo_not_found"
    UNSUPPORTED_ARCH = "unsupported_arch"
    NCCL = "nccl"
    REGISTRY_RATE_LIMIT = "registry_rate_limit"
    MODEL_PATH_MISSING = "model_path_missing"
    BAD_FLAG = "bad_flag"


@dataclass(frozen=True)
class Diagnosis:
    cause: Cause
    evidence: str  # the log line that shows it, stripped (long lines cut)
    summary: str  # one sentence for people
    healable: bool  # maider may fix it by changing the VM's .env (healing.plan_heal has the last word)
    fix: str  # what maider would change
    user_action: str  # what the user must do when maider cannot fix it
    numbers: dict[str, float] = field(default_factory=dict)  # facts from the log, e.g. estimated_max_len, heads
    oom_phase: str | None = None  # cuda_oom only: OOM_WARMUP, OOM_LOAD, or None when the excerpt does not say


@dataclass(frozen=True)
class _Pattern:
    cause: Cause
    regex: re.Pattern[str]
    numbers: Callable[[re.Match[str]], dict[str, float]] = lambda _match: {}
    weak: bool = False  # a symptom that often follows another failure: used only when nothing else matched


def _round_down(tokens: float) -> int:
    return int(tokens) // TOKEN_ROUNDING * TOKEN_ROUNDING


def _kv_new(match: re.Match[str]) -> dict[str, float]:
    numbers: dict[str, float] = {"max_model_len": int(match.group(1))}
    if match.group(4):
        numbers["estimated_max_len"] = int(match.group(4))
    elif match.group(2) and match.group(3) and float(match.group(2)) > 0:
        # The estimate was cut off: KV memory grows linearly with tokens, so scale the length by available/needed.
        numbers["estimated_max_len"] = _round_down(int(match.group(1)) * float(match.group(3)) / float(match.group(2)))
    return numbers


def _free_memory(match: re.Match[str]) -> dict[str, float]:
    return {"free_gib": float(match.group(1)), "total_gib": float(match.group(2)),
            "requested_utilization": float(match.group(3))}


_PATTERNS: tuple[_Pattern, ...] = (
    _Pattern(Cause.FREE_MEMORY_STARTUP, re.compile(
        r"Free memory on device (?:\S+ )?\(([\d.]+)/([\d.]+) GiB\) on startup is less than desired GPU memory "
        r"utilization \(([\d.]+)"), _free_memory),
    _Pattern(Cause.NO_CACHE_BLOCKS, re.compile(r"No available memory for the cache blocks")),
    _Pattern(Cause.NO_CACHE_BLOCKS, re.compile(r"Available KV cache memory: -[\d.]+ GiB"), weak=True),
    _Pattern(Cause.KV_TOO_SMALL, re.compile(
        r"To serve at least one request with the models?'s max seq len \((\d+)\)"
        r"(?:, \(([\d.]+) GiB KV cache is needed, which is larger than the available KV cache memory \(([\d.]+) GiB\))?"
        r"(?:[^\n]*?estimated maximum model length is (\d+))?"), _kv_new),
    _Pattern(Cause.KV_TOO_SMALL, re.compile(r"estimated maximum model length is (\d+)"),
             lambda m: {"estimated_max_len": int(m.group(1))}),
    _Pattern(Cause.KV_TOO_SMALL, re.compile(
        r"The model's max seq len \((\d+)\) is larger than the maximum number of tokens that can be stored in KV "
        r"cache \((\d+)\)"),
        lambda m: {"max_model_len": int(m.group(1)), "estimated_max_len": int(m.group(2))}),
    _Pattern(Cause.MAX_LEN_BEYOND_MODEL, re.compile(
        r"User-specified max_model_len \((\d+)\) is greater than the derived max_model_len \((?:\w+=)?(\d+)"),
        lambda m: {"max_model_len": int(m.group(1)), "derived_max_len": int(m.group(2))}),
    _Pattern(Cause.CUDA_OOM, re.compile(
        r"torch\.(?:cuda\.)?OutOfMemoryError|CUDA out of memory\. Tried to allocate|CUDA out of memory occurred")),
    _Pattern(Cause.TP_HEADS, re.compile(
        r"Total number of attention heads \((\d+)\) must be divisible by tensor parallel size \((\d+)\)"),
        lambda m: {"heads": int(m.group(1)), "tp": int(m.group(2))}),
    _Pattern(Cause.WORLD_SIZE, re.compile(
        r"(?:World size|Tensor parallel size) \((\d+)\) (?:is|cannot be) larger than the number of available GPUs "
        r"\((\d+)\)"),
        lambda m: {"tp": int(m.group(1)), "gpus": int(m.group(2))}),
    _Pattern(Cause.BF16_TURING, re.compile(
        r"Bfloat16 is only supported on GPUs with compute capability of at least 8\.0"
        r"(?:\. Your (.+?) GPU has compute capability (\d+)\.(\d+))?"),
        lambda m: {"compute_capability": float(f"{m.group(2)}.{m.group(3)}")} if m.group(2) else {}),
    _Pattern(Cause.QUANT_UNSUPPORTED, re.compile(
        r"(?:The quantization method \S+|Quantization scheme) is not supported for[^\n]*?the current GPU"
        r"(?:[^\n]*?Min(?:imum)? capability: (\d+)[^\n]*?Current capability: (\d+))?"),
        lambda m: {"min_capability": int(m.group(1)), "current_capability": int(m.group(2))} if m.group(1) else {}),
    _Pattern(Cause.GATED_REPO, re.compile(
        r"GatedRepoError|Cannot access gated repo|You are trying to access a gated repo"
        r"|(?:401|403) Client Error: (?:Unauthorized|Forbidden) for url: https://huggingface\.co/"
        r"|Access to model \S+ is restricted")),
    _Pattern(Cause.REPO_NOT_FOUND, re.compile(
        r"Invalid repository ID or local directory specified|Repository Not Found for url|RepositoryNotFoundError")),
    _Pattern(Cause.UNSUPPORTED_ARCH, re.compile(
        r"Model architectures \[[^\n]*?\] (?:are not supported|failed to be inspected)"
        r"|Error in inspecting model architecture '")),
    _Pattern(Cause.NCCL, re.compile(
        r"NCCL error|ncclSystemError|ncclInternalError|ncclUnhandledCudaError|ncclRemoteError"
        r"|Error while creating shared memory segment"), weak=True),
    # Lines the VM's start script writes (cloud_init/start-stack.sh) when waiting longer cannot help.
    _Pattern(Cause.NCCL, re.compile(r"maider: vLLM printed nothing for \d+ minutes while loading")),
    _Pattern(Cause.REGISTRY_RATE_LIMIT, re.compile(r"\btoomanyrequests\b")),
    # A MODEL_ID that is a path to no folder: vLLM falls back to reading it as a Hugging Face repo id, which fails.
    _Pattern(Cause.MODEL_PATH_MISSING, re.compile(
        r"Repo id must be in the form 'repo_name' or 'namespace/repo_name': '/")),
    # argparse's last line; vLLM prints its whole usage first, so only this line names the flag.
    _Pattern(Cause.BAD_FLAG, re.compile(
        r"^\S+: error: (?:unrecognized arguments: |argument \S+: (?:invalid|expected|ambiguous))", re.MULTILINE)),
)

_SOURCE_ECHO = re.compile(r"\braise\s+[\w.]+\(")  # a traceback's echo of the raising source line
_ENGINE_FAILED = re.compile(r"Engine core initialization failed|EngineCore failed to start")
_WEIGHTS_LOADED = re.compile(r"Model loading took|Loading model weights took|Loading weights took")
_LOAD_FRAMES = re.compile(r"\b(?:load_model|load_weights|create_weights)\b|Failed to create \w+ \w+ weights")
_WARMUP_FRAMES = re.compile(
    r"warming up|_dummy_sampler_run|_dummy_run|profile_run|capture_model|determine_num_available_blocks"
    r"|determine_available_memory|logits\.sort|cudagraph|CUDA graph")

_TEXT: dict[Cause, tuple[str, bool, str, str]] = {  # summary, healable, fix, user action
    Cause.FREE_MEMORY_STARTUP: (
        "Less GPU memory was free at start-up than --gpu-memory-utilization asked for.", True,
        "lower VLLM_GPU_MEMORY_UTILIZATION to what is free", "stop whatever else uses the GPU"),
    Cause.NO_CACHE_BLOCKS: (
        "After loading the weights no GPU memory was left for the KV cache.", True,
        "raise VLLM_GPU_MEMORY_UTILIZATION to 0.95 if it is lower",
        "use a quantized (AWQ/GPTQ) variant of the model or a plan with more GPUs"),
    Cause.KV_TOO_SMALL: (
        "The KV cache cannot hold one request of the configured context length.", True,
        "lower VLLM_MAX_MODEL_LEN to vLLM's estimate, rounded down to a multiple of 1024",
        "use a smaller context, a quantized model or a bigger GPU"),
    Cause.MAX_LEN_BEYOND_MODEL: (
        "The configured context length is longer than the model supports.", True,
        "lower VLLM_MAX_MODEL_LEN to the model's own limit", "set MAX_MODEL_LEN to the model's limit"),
    Cause.CUDA_OOM: (
        "The GPU ran out of memory.", True,
        "warm-up: lower VLLM_MAX_NUM_SEQS, then utilisation, then enforce eager; load: raise utilisation to 0.95",
        "use a quantized variant of the model or a plan with more or bigger GPUs"),
    Cause.TP_HEADS: (
        "The tensor-parallel size does not divide the model's attention heads.", True,
        "set VLLM_TENSOR_PARALLEL_SIZE to the largest divisor of the heads that fits the GPUs",
        "choose a tensor-parallel size that divides the number of attention heads"),
    Cause.WORLD_SIZE: (
        "vLLM was asked for more GPUs than the VM has.", True,
        "set VLLM_TENSOR_PARALLEL_SIZE to what the VM's GPUs allow",
        "choose a plan with more GPUs or a smaller tensor-parallel size"),
    Cause.BF16_TURING: (
        "This GPU cannot run bfloat16 (it needs compute capability 8.0).", True,
        "set VLLM_DTYPE=half", "set VLLM_DTYPE=half or use a newer GPU"),
    Cause.QUANT_UNSUPPORTED: (
        "The model's quantization method does not run on this GPU.", False, "",
        "pick another checkpoint (AWQ needs compute capability 7.5, FP8 needs 8.9) or a newer GPU"),
    Cause.GATED_REPO: (
        "The model is gated on Hugging Face and this token may not download it.", False, "",
        "accept the model's licence on huggingface.co and set HUGGING_FACE_HUB_TOKEN to a token of that account"),
    Cause.REPO_NOT_FOUND: (
        "The model id does not name a Hugging Face repository this token can see.", False, "",
        "check MODEL_ID for typos (organisation/name); a private repository also needs HUGGING_FACE_HUB_TOKEN"),
    Cause.UNSUPPORTED_ARCH: (
        "This vLLM version does not support the model's architecture.", False, "",
        "set VLLM_IMAGE to a newer vllm/vllm-openai tag or choose another model"),
    Cause.NCCL: (
        "NCCL, the GPUs' communication library, failed (often shared memory or peer-to-peer).", True,
        "set NCCL_P2P_DISABLE=1", "try a plan with fewer GPUs (tensor parallel size 1)"),
    Cause.REGISTRY_RATE_LIMIT: (
        "Docker Hub refused to send the vLLM image: its pull limit for the VM's address is used up.", False, "",
        "launch again in a few hours or in another region, or set VLLM_IMAGE to a copy of the image on another "
        "registry"),
    Cause.MODEL_PATH_MISSING: (
        "MODEL_ID is a folder path, but no such folder exists on the VM.", False, "",
        "check the path in MODEL_ID, or use a Hugging Face repository id (organisation/name)"),
    Cause.BAD_FLAG: (
        "vLLM refused a command-line flag: a typo, or a flag this vLLM version does not know.", False, "",
        "correct or remove the flag in the extra vLLM arguments, or set VLLM_IMAGE to a vLLM release that has it"),
}


@dataclass(frozen=True)
class _Hit:
    position: int
    pattern: _Pattern
    match: re.Match[str]


def _line_at(text: str, position: int) -> str:
    """The stripped line holding ``position``; a long line is cut to a window that keeps the match's start."""
    start = text.rfind("\n", 0, position) + 1
    end = text.find("\n", position)
    raw = text[start:end if end >= 0 else len(text)]
    line = raw.strip()
    if len(line) <= EVIDENCE_MAX_CHARS:
        return line
    column = max(0, position - start - (len(raw) - len(raw.lstrip())))
    cut_from = max(0, min(column - EVIDENCE_CONTEXT_CHARS, len(line) - EVIDENCE_MAX_CHARS))
    excerpt = line[cut_from:cut_from + EVIDENCE_MAX_CHARS]
    return ("…" if cut_from else "") + excerpt + ("…" if cut_from + EVIDENCE_MAX_CHARS < len(line) else "")


def _oom_phase(text: str, hit: _Hit) -> str | None:
    """Warm-up (sampler, profiling, CUDA graphs: fewer sequences help) or load (the weights do not fit)."""
    line = _line_at(text, hit.position)
    if _WARMUP_FRAMES.search(line):
        return OOM_WARMUP
    if _LOAD_FRAMES.search(line):
        return OOM_LOAD
    if _WEIGHTS_LOADED.search(text, 0, hit.position):
        return OOM_WARMUP
    if _LOAD_FRAMES.search(text):
        return OOM_LOAD
    if _WARMUP_FRAMES.search(text):
        return OOM_WARMUP
    return None


def _root_hit(text: str, hits: list[_Hit]) -> _Hit:
    """The first failure before the first engine-failed line; a weak symptom only when nothing else is there."""
    engine_failed = _ENGINE_FAILED.search(text)
    if engine_failed:
        before = [hit for hit in hits if hit.position < engine_failed.start()]
        hits = before or hits
    strong = [hit for hit in hits if not hit.pattern.weak]
    return min(strong or hits, key=lambda hit: hit.position)


def _evidence(text: str, root: _Hit, hits: list[_Hit]) -> str:
    """The root cause's line; the exception's own message rather than the traceback's echo of ``raise X("...")``."""
    same_cause = sorted((hit for hit in hits if hit.pattern.cause is root.pattern.cause), key=lambda h: h.position)
    for hit in [root, *same_cause]:
        line = _line_at(text, hit.position)
        if not _SOURCE_ECHO.search(line):
            return line
    return _line_at(text, root.position)


def diagnose(log_text: str) -> Diagnosis | None:
    """The cause of a failed vLLM start in ``log_text``, or None when no known failure is in it."""
    hits = [_Hit(match.start(), pattern, match) for pattern in _PATTERNS for match in pattern.regex.finditer(log_text)]
    if not hits:
        return None
    root = _root_hit(log_text, hits)
    cause = root.pattern.cause
    numbers: dict[str, float] = {}
    for hit in sorted(hits, key=lambda h: h.position):  # the same cause's other lines may hold the numbers
        if hit.pattern.cause is cause:
            numbers = {**hit.pattern.numbers(hit.match), **numbers}
    summary, healable, fix, user_action = _TEXT[cause]
    return Diagnosis(
        cause=cause, evidence=_evidence(log_text, root, hits), summary=summary, healable=healable, fix=fix,
        user_action=user_action, numbers=numbers,
        oom_phase=_oom_phase(log_text, root) if cause is Cause.CUDA_OOM else None,
    )
