"""Benchmark metric definitions against hand-computed examples (vLLM's ``vllm bench serve`` definitions)."""
import math

import pytest

from app.domain.benchmark_stats import (RequestOutcome, cost_per_million, distribution, parse_goodput, percentile,
                                        summarize)

A = RequestOutcome(True, prompt_len=10, output_len=5, ttft=0.1, latency=0.5, itl=(0.1, 0.1, 0.1, 0.1))
B = RequestOutcome(True, prompt_len=20, output_len=1, ttft=0.2, latency=0.2, itl=())
C = RequestOutcome(True, prompt_len=30, output_len=3, ttft=0.3, latency=1.3, itl=(0.5, 0.5))
FAILED = RequestOutcome(False, error="HTTP 500: boom")


def test_counts_and_throughputs_divide_by_the_run_duration_and_skip_failures():
    result = summarize([A, B, C, FAILED], duration_s=2.0)
    assert (result["completed"], result["failed"]) == (3, 1)
    assert (result["total_input_tokens"], result["total_output_tokens"]) == (60, 9)
    assert result["request_throughput"] == pytest.approx(1.5)
    assert result["output_throughput"] == pytest.approx(4.5)
    assert result["total_token_throughput"] == pytest.approx(34.5)
    assert result["request_goodput"] is None  # no SLO given


def test_ttft_is_summarised_in_ms_with_population_std():
    result = summarize([A, B, C], 1.0)
    assert result["mean_ttft_ms"] == pytest.approx(200.0)
    assert result["median_ttft_ms"] == pytest.approx(200.0)
    assert result["std_ttft_ms"] == pytest.approx(math.sqrt(20000 / 3))  # population, not sample (which is 100)
    assert result["p99_ttft_ms"] == pytest.approx(298.0)


def test_tpot_excludes_the_first_token_and_skips_one_token_replies():
    result = summarize([A, B, C], 1.0)
    # A: (500-100)/(5-1) = 100 ms; C: (1300-300)/(3-1) = 500 ms; B has one token: no TPOT.
    # Counting the first token (latency/output) would give 100 and 433.3 instead.
    assert result["mean_tpot_ms"] == pytest.approx(300.0)
    assert result["median_tpot_ms"] == pytest.approx(300.0)
    assert result["p99_tpot_ms"] == pytest.approx(496.0)


def test_itl_pools_every_gap_of_every_request():
    result = summarize([A, B, C], 1.0)
    # gaps 100,100,100,100,500,500: pooled mean 233.3 (a mean of per-request means would be 300)
    assert result["mean_itl_ms"] == pytest.approx(1400 / 6)
    assert result["median_itl_ms"] == pytest.approx(100.0)
    assert result["p90_itl_ms"] == pytest.approx(500.0)


def test_e2el_is_the_latency_to_the_last_token():
    result = summarize([A, B, C], 1.0)
    assert result["mean_e2el_ms"] == pytest.approx(2000 / 3)
    assert result["p50_e2el_ms"] == pytest.approx(500.0)


@pytest.mark.parametrize("spec, expected", [
    ("ttft:250", 2.0),  # A and B; C's 300 ms is over
    ("tpot:200", 2.0),  # A (100) and B (one token counts as 0); C's 500 is over
    ("e2el:400", 1.0),  # only B
    ("ttft:250,e2el:600", 2.0),
    ("ttft:50", 0.0),
])
def test_goodput_counts_requests_within_every_limit(spec, expected):
    result = summarize([A, B, C, FAILED], duration_s=1.0, slos_ms=parse_goodput(spec))
    assert result["request_goodput"] == pytest.approx(expected)


@pytest.mark.parametrize("spec", ["ttft", "speed:4", "ttft:fast", "tpot:-1", "e2el:0", "ttft:nan"])
def test_bad_goodput_specs_say_what_is_wrong(spec):
    with pytest.raises(ValueError, match="goodput"):
        parse_goodput(spec)


def test_percentiles_interpolate_linearly_like_numpy():
    assert percentile([1, 2, 3, 4], 90) == pytest.approx(3.7)
    assert percentile([5], 99) == 5
    assert percentile([], 50) == 0.0


def test_empty_run_reports_zeros_not_errors():
    result = summarize([FAILED], duration_s=1.0)
    assert result["completed"] == 0 and result["mean_ttft_ms"] == 0.0 and result["p99_itl_ms"] == 0.0
    assert distribution([]).mean == 0.0


def test_cost_per_million_output_tokens():
    # $1.50/h at 1000 tok/s = 3.6M tokens/h -> $0.4167 per 1M
    assert cost_per_million(1.5, 1000.0) == pytest.approx(1.5 / 3.6)
    assert cost_per_million(1.5, 0.0) is None
