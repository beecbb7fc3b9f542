"""Verdicts of ``maider check`` and ``maider validate-perf``: pure functions over what the VM reported.

Each check gives one line a person can act on: what was found and, when something is off, the fix that works.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

MEMORY_SPREAD_MAX = 0.10  # tensor-parallel ranks hold equal shards: more spread than this means a rank is wrong
HEADROOM_MIN = 0.02  # below 2 % free VRAM, CUDA graphs or a longer prompt can run out of memory
UTILIZATION_MIN = 50  # % busy while requests run; less means the GPU waits on something else
LATENCY_GROWTH_MAX = 20.0  # TTFT at the longest prompt over the shortest: prefill should scale, not explode
# Matched case-sensitively on vLLM's and NCCL's own texts (reference/vllm.md), never loose words like "OOM".
LOG_WARNINGS: tuple[tuple[str, re.Pattern[str], str], ...] = (
    ("NCCL error", re.compile(r"NCCL error|ncclSystemError|ncclInternalError"),
     "set NCCL_P2P_DISABLE=1 (and ipc: host); debug with NCCL_DEBUG=WARN"),
    ("shared memory", re.compile(r"Error while creating shared memory segment"),
     "run the container with ipc: host or a larger shm_size"),
    ("CUDA out of memory", re.compile(r"CUDA out of memory|torch\.OutOfMemoryError"),
     "lower --gpu-memory-utilization or --max-num-seqs, or use a bigger GPU / more GPUs"),
    ("preemption", re.compile(r"is preempted by PreemptionMode|Sequence group .* is preempted"),
     "the KV cache is too small for this load: lower --max-num-seqs or use more VRAM"),
)


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    message: str
    fix: str = ""

    def line(self) -> str:
        mark = "✓" if self.ok else "✗"
        return f"{mark} {self.name}: {self.message}" + (f" -- fix: {self.fix}" if self.fix else "")

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "ok": self.ok, "message": self.message, "fix": self.fix}


def gpus_visible(expected: int, rows: Sequence[dict], query_error: str = "") -> CheckResult:
    """Every GPU of the plan answers nvidia-smi; the missing ones are named by index."""
    if query_error:
        return CheckResult("GPUs visible", False, f"nvidia-smi failed: {query_error[:200]}",
                           "reboot the VM so the NVIDIA driver loads, or destroy it and launch again")
    seen = sorted(int(row["index"]) for row in rows)
    missing = [i for i in range(expected) if i not in seen]
    if missing:
        names = ", ".join(f"GPU {i}" for i in missing)
        return CheckResult("GPUs visible", False,
                           f"{names} not visible: nvidia-smi lists {len(seen)} of the plan's {expected} GPUs",
                           "a GPU fell off the bus or its driver failed: destroy this VM and launch a new one")
    names = sorted({str(row.get("name", "")) for row in rows})
    answer = "the GPU answers" if expected == 1 else f"all {expected} GPUs answer"
    return CheckResult("GPUs visible", True, f"{answer} ({', '.join(names)})")


def memory_balanced(rows: Sequence[dict], tensor_parallel: int) -> CheckResult:
    """Tensor-parallel ranks hold equal shards, so their memory use should match."""
    ranks = sorted(rows, key=lambda r: int(r["index"]))[:max(1, tensor_parallel)]
    if len(ranks) < 2:
        return CheckResult("memory balanced", True, "one rank: nothing to balance")
    used = [int(r["memory_used_mb"]) for r in ranks]
    total = max(int(r["memory_total_mb"]) for r in ranks) or 1
    spread = (max(used) - min(used)) / total
    detail = ", ".join(f"GPU {r['index']} {int(r['memory_used_mb']) * 2**20 / 1e9:.1f} GB" for r in ranks)
    if spread > MEMORY_SPREAD_MAX:
        return CheckResult("memory balanced", False, f"ranks differ by {spread:.0%} of a GPU ({detail})",
                           "a tensor-parallel rank did not load: recreate vLLM (docker compose up -d "
                           "--force-recreate vllm)")
    return CheckResult("memory balanced", True, f"{len(ranks)} ranks within {spread:.0%} ({detail})")


def completion_returns(status: int | None, completion_tokens: int | None, error: str = "") -> CheckResult:
    if status == 200 and completion_tokens:
        return CheckResult("completion", True, f"a 1-token completion returned ({completion_tokens} token)")
    reason = error or (f"HTTP {status}" if status else "no answer")
    return CheckResult("completion", False, f"a 1-token completion failed: {reason[:200]}",
                       "check the vLLM log on the session page; reconnect the tunnel if it is down")


def utilization_under_load(busy_percents: Sequence[int]) -> CheckResult:
    if not busy_percents:
        return CheckResult("utilization", False, "no GPU reading while requests ran",
                           "nvidia-smi did not answer during the load: reboot or relaunch the VM")
    peak = max(busy_percents)
    if peak < UTILIZATION_MIN:
        return CheckResult("utilization", False, f"GPUs at most {peak}% busy under load",
                           "the GPU waits on something else: check the CPU, --enforce-eager and the tunnel")
    return CheckResult("utilization", True, f"GPUs up to {peak}% busy under load")


def memory_headroom(rows: Sequence[dict]) -> CheckResult:
    if not rows:
        return CheckResult("memory headroom", False, "no GPU reading", "reboot or relaunch the VM")
    free = min(1 - int(r["memory_used_mb"]) / max(1, int(r["memory_total_mb"])) for r in rows)
    if free < HEADROOM_MIN:
        return CheckResult("memory headroom", False, f"only {free:.1%} of VRAM free on the fullest GPU",
                           "lower VLLM_GPU_MEMORY_UTILIZATION (e.g. 0.88) and recreate vLLM")
    return CheckResult("memory headroom", True, f"{free:.0%} of VRAM free on the fullest GPU")


def log_warnings(log_text: str) -> CheckResult:
    found = [(name, fix) for name, pattern, fix in LOG_WARNINGS if pattern.search(log_text)]
    if found:
        return CheckResult("vLLM log", False, "found " + ", ".join(name for name, _ in found),
                           "; ".join(fix for _, fix in found))
    return CheckResult("vLLM log", True, "no NCCL, shared-memory, out-of-memory or preemption warnings")


def latency_by_prompt_length(ttft_ms_by_len: dict[int, float], failures: int = 0) -> CheckResult:
    """TTFT at several prompt lengths: it should grow with the prompt, not explode or fail."""
    shown = ", ".join(f"{n} tokens {ms:,.0f} ms" for n, ms in sorted(ttft_ms_by_len.items()))
    if failures:
        return CheckResult("latency", False, f"{failures} requests failed ({shown})",
                           "read the vLLM log: a request longer than the context or an engine error")
    lengths = sorted(ttft_ms_by_len)
    shortest = max(ttft_ms_by_len[lengths[0]], 1e-3)
    growth = ttft_ms_by_len[lengths[-1]] / shortest
    if growth > LATENCY_GROWTH_MAX:
        return CheckResult("latency", False, f"TTFT grows {growth:.0f}x from the shortest to the longest prompt "
                                             f"({shown})",
                           "prefill is starved: enable chunked prefill or lower --max-num-seqs")
    return CheckResult("latency", True, f"TTFT by prompt length: {shown}")
