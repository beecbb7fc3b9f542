"""maider's engine against a real vLLM: readiness, the API key, the log, and the /metrics names it reads."""
from __future__ import annotations

import logging

import httpx
import pytest
from real_vllm_server import RealVllm

from app.domain.diagnosis import diagnose
from app.domain.prometheus import parse_metrics
from app.engine.health import probe_ready, scrape_metrics
from app.redaction import redact

# Every name app.engine.health.scrape_metrics reads (the monitor's figures and the idle watchdog's activity).
METRICS_MAIDER_READS = ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:request_success_total",
                        "vllm:prompt_tokens_total", "vllm:generation_tokens_total", "vllm:kv_cache_usage_perc")


def _base(server: RealVllm) -> str:
    return f"http://127.0.0.1:{server.port}"


def _auth(server: RealVllm) -> dict[str, str]:
    return {"Authorization": f"Bearer {server.api_key}"}


def test_ready_as_the_engine_decides_it(real_vllm: RealVllm) -> None:
    """The served name is listed and a 1-token completion succeeds; max_model_len is the .env's."""
    readiness = probe_ready(real_vllm.port, real_vllm.api_key, real_vllm.served_name, timeout=30)
    assert readiness.ready, readiness.detail
    assert readiness.max_model_len == 32768


def test_not_ready_for_a_name_it_does_not_serve_or_a_wrong_key(real_vllm: RealVllm) -> None:
    other = probe_ready(real_vllm.port, real_vllm.api_key, "some-other-model", timeout=30)
    assert not other.ready and other.detail == "'some-other-model' is not served yet"
    wrong_key = probe_ready(real_vllm.port, "sk-maider-not-the-key-0000", real_vllm.served_name, timeout=30)
    assert not wrong_key.ready and wrong_key.detail == "/v1/models answered 401"


@pytest.mark.parametrize("method, path", [("GET", "/v1/models"), ("POST", "/v1/completions"),
                                          ("POST", "/v1/chat/completions")])
def test_the_key_is_required(real_vllm: RealVllm, method: str, path: str) -> None:
    body = {"model": real_vllm.served_name, "prompt": "def", "max_tokens": 1,
            "messages": [{"role": "user", "content": "hi"}]}
    kwargs = {"json": body} if method == "POST" else {}
    assert httpx.request(method, _base(real_vllm) + path, timeout=30, **kwargs).status_code == 401
    assert httpx.request(method, _base(real_vllm) + path, timeout=30, headers={"Authorization": "Bearer nope"},
                         **kwargs).status_code == 401
    assert httpx.request(method, _base(real_vllm) + path, timeout=30, headers=_auth(real_vllm),
                         **kwargs).status_code == 200


def test_the_key_is_in_no_log(real_vllm: RealVllm, caplog: pytest.LogCaptureFixture) -> None:
    """Not in what the launcher and vLLM print (what ``docker logs`` shows and maider tails), nor in maider's own
    log records while it probes and scrapes the server."""
    caplog.set_level(logging.DEBUG)
    probe_ready(real_vllm.port, real_vllm.api_key, real_vllm.served_name, timeout=30)
    scrape_metrics(real_vllm.port, timeout=30)
    server_log = real_vllm.log_text()
    assert "maider: starting vLLM:" in server_log and "Application startup complete" in server_log
    assert real_vllm.api_key not in server_log
    assert real_vllm.api_key not in redact(server_log)
    assert real_vllm.api_key not in caplog.text


def test_a_clean_start_has_no_diagnosis(real_vllm: RealVllm) -> None:
    assert diagnose(real_vllm.log_text()) is None


def test_metrics_carry_every_name_maider_reads(real_vllm: RealVllm) -> None:
    """/metrics is open without the key (the monitor scrapes it so) and has each name, none by a fallback."""
    response = httpx.get(_base(real_vllm) + "/metrics", timeout=30)
    assert response.status_code == 200
    metrics = parse_metrics(response.text)
    assert [name for name in METRICS_MAIDER_READS if name not in metrics] == []


def test_a_request_moves_the_counters_maider_uses_for_activity(real_vllm: RealVllm) -> None:
    before = scrape_metrics(real_vllm.port, timeout=30)
    assert before is not None
    response = httpx.post(_base(real_vllm) + "/v1/completions", headers=_auth(real_vllm), timeout=120, json={
        "model": real_vllm.served_name, "prompt": "def add(a, b):", "max_tokens": 7, "ignore_eos": True})
    assert response.status_code == 200
    usage = response.json()["usage"]
    after = scrape_metrics(real_vllm.port, timeout=30)
    assert after is not None
    assert after.requests_done == before.requests_done + 1
    assert after.prompt_tokens == before.prompt_tokens + usage["prompt_tokens"]
    assert after.generation_tokens == before.generation_tokens + usage["completion_tokens"] == \
        before.generation_tokens + 7
    assert after.activity_counter > before.activity_counter  # what the watchdog reads as "in use"
    assert after.requests_running == 0 and after.requests_waiting == 0
