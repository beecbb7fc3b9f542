"""Readiness and metrics, checked through the session's tunnel exactly as the user's tools will reach vLLM.

Ready means what a user can trust: the served name is listed in ``/v1/models`` **and** a 1-token completion
succeeds. Metrics come from ``/metrics`` (open even with ``--api-key``).
"""
from __future__ import annotations

from dataclasses import dataclass

import httpx

from app.domain.prometheus import first_of, parse_metrics


@dataclass(frozen=True)
class Readiness:
    ready: bool
    max_model_len: int | None  # from /v1/models, for aider's metadata
    detail: str  # why not ready, for the progress line


@dataclass(frozen=True)
class MetricsSnapshot:
    requests_running: float
    requests_waiting: float
    requests_done: float  # request_success_total over all finish reasons
    prompt_tokens: float
    generation_tokens: float
    kv_cache_usage: float  # 0..1

    @property
    def activity_counter(self) -> float:
        """Grows whenever vLLM does work: the watchdog's idle signal compares it between scrapes."""
        return self.requests_done + self.prompt_tokens


def _base(port: int) -> str:
    return f"http://127.0.0.1:{port}"


def probe_ready(api_port: int, api_key: str, served_name: str, timeout: float) -> Readiness:
    """Check the served model is listed and answers one token."""
    headers = {"Authorization": f"Bearer {api_key}"}
    try:
        with httpx.Client(base_url=_base(api_port), headers=headers, timeout=timeout) as client:
            models = client.get("/v1/models")
            if models.status_code != 200:
                return Readiness(False, None, f"/v1/models answered {models.status_code}")
            entries = models.json().get("data", [])
            entry = next((m for m in entries if m.get("id") == served_name), None)
            if entry is None:
                return Readiness(False, None, f"'{served_name}' is not served yet")
            completion = client.post("/v1/completions",
                                     json={"model": served_name, "prompt": "def", "max_tokens": 1})
            if completion.status_code != 200:
                return Readiness(False, None, f"test completion answered {completion.status_code}")
            return Readiness(True, entry.get("max_model_len"), "ready")
    except (httpx.HTTPError, ValueError) as exc:
        return Readiness(False, None, f"vLLM not answering yet ({type(exc).__name__})")


def scrape_metrics(api_port: int, timeout: float) -> MetricsSnapshot | None:
    """Read vLLM's counters, or None when it does not answer."""
    try:
        response = httpx.get(f"{_base(api_port)}/metrics", timeout=timeout)
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    metrics = parse_metrics(response.text)
    return MetricsSnapshot(
        requests_running=first_of(metrics, "vllm:num_requests_running"),
        requests_waiting=first_of(metrics, "vllm:num_requests_waiting"),
        requests_done=first_of(metrics, "vllm:request_success_total"),
        prompt_tokens=first_of(metrics, "vllm:prompt_tokens_total"),
        generation_tokens=first_of(metrics, "vllm:generation_tokens_total"),
        kv_cache_usage=first_of(metrics, "vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
    )
