"""A run as files: JSON (one object per level, ``vllm bench serve --save-result`` keys plus maider's) and CSV.

The JSON can be read by the same scripts people use for vLLM's own result files; maider's keys say what was
measured and what it cost, so runs on different plans and providers compare by price as well as by speed.
"""
from __future__ import annotations

import csv
import io
from typing import Any

from app.benchmark_models import BenchmarkLevel, BenchmarkRun
from app.domain.benchmark_stats import cost_per_million

BACKEND = "openai"  # vLLM's name for the /v1/completions client


def level_json(run: BenchmarkRun, level: BenchmarkLevel, with_requests: bool = True) -> dict[str, Any]:
    """One level in the shape of a ``--save-result`` file, plus maider's own keys."""
    results = dict(level.results)
    settings = run.settings or {}
    item: dict[str, Any] = {
        "date": (run.started_at or run.created_at).strftime("%Y%m%d-%H%M%S"),
        "backend": BACKEND,
        "endpoint_type": BACKEND,
        "label": run.title,
        "model_id": run.model_id,
        "tokenizer_id": run.model_id,
        "num_prompts": settings.get("num_prompts"),
        "request_rate": "inf" if level.request_rate is None else level.request_rate,
        "burstiness": 1.0,
        "max_concurrency": level.max_concurrency,
        **results,
    }
    if with_requests:
        item.update(level.requests)
    item.update({
        "served_model_name": run.served_name,
        "plan": run.plan,
        "region": run.region,
        "provider": run.provider,
        "gpu": run.gpu,
        "gpus": run.gpus,
        "hourly_price": run.hourly_price,
        "cost_per_1m_output_tokens": cost_per_million(run.hourly_price, float(results.get("output_throughput") or 0)),
        "cost_per_1m_total_tokens": cost_per_million(run.hourly_price,
                                                     float(results.get("total_token_throughput") or 0)),
        "max_model_len": run.max_model_len,
        "vllm_version": run.vllm_version,
        "where": run.where,
        "session": run.session_name,
        "base_url": run.base_url,
        "input_len": settings.get("input_len"),
        "output_len": settings.get("output_len"),
        "dataset": settings.get("dataset"),
        "maider_run_id": run.id,
    })
    return item


def run_json(run: BenchmarkRun, with_requests: bool = True) -> list[dict[str, Any]]:
    return [level_json(run, level, with_requests) for level in run.levels]


def run_csv(run: BenchmarkRun) -> str:
    """One row per level: every scalar of the JSON object (the per-request lists stay in the JSON)."""
    rows = run_json(run, with_requests=False)
    out = io.StringIO()
    if not rows:
        return ""
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return out.getvalue()


def chart_data(run: BenchmarkRun) -> dict[str, Any]:
    """What the run page's charts plot: one point per level."""
    levels = run_json(run, with_requests=False)
    x = [lv["max_concurrency"] if lv["max_concurrency"] is not None else lv["request_rate"] for lv in levels]
    pick = lambda key: [lv.get(key) for lv in levels]  # noqa: E731
    return {
        "id": run.id, "title": run.title, "status": run.status, "x": x,
        "x_label": "concurrency" if any(lv["max_concurrency"] for lv in levels) else "request rate (req/s)",
        "output_throughput": pick("output_throughput"), "request_throughput": pick("request_throughput"),
        "p50_ttft_ms": pick("p50_ttft_ms"), "p99_ttft_ms": pick("p99_ttft_ms"),
        "p50_itl_ms": pick("p50_itl_ms"), "p99_itl_ms": pick("p99_itl_ms"),
        "p50_tpot_ms": pick("p50_tpot_ms"), "p99_tpot_ms": pick("p99_tpot_ms"),
        "cost_per_1m_output_tokens": pick("cost_per_1m_output_tokens"),
    }
