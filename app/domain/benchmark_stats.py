"""Benchmark statistics, defined exactly as vLLM's ``vllm bench serve`` defines them (``vllm/benchmarks/serve.py``).

So a maider figure and a vLLM figure for the same server mean the same thing:
- TTFT: time from just before the request is sent to the first chunk that carries a token.
- ITL: every gap between two token chunks, pooled over all requests (per chunk, not per token).
- TPOT: (latency - TTFT) / (output tokens - 1), only for requests with more than one output token -- it excludes the
  first token (GuideLLM's "time per output token" includes it, so the two differ).
- E2EL: latency, the time of the last token chunk (the usage-only chunk does not move it).
- Throughputs divide by the wall time of the measured run (the client: from the first request's bytes leaving to the
  last token's arrival, read at the socket); token counts come from the server's ``usage``.
- std is the population standard deviation; percentiles interpolate linearly (numpy's default).
Pure functions: no I/O, no clock.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

PERCENTILES = (50, 90, 95, 99)
METRICS = ("ttft", "tpot", "itl", "e2el")
GOODPUT_METRICS = ("ttft", "tpot", "e2el")
MS_PER_S = 1000.0


@dataclass(frozen=True)
class RequestOutcome:
    """What one benchmark request measured; times in seconds."""

    success: bool
    prompt_len: int = 0  # usage.prompt_tokens
    output_len: int = 0  # usage.completion_tokens
    ttft: float = 0.0
    latency: float = 0.0  # E2EL
    itl: tuple[float, ...] = ()  # gaps between consecutive token chunks
    started_at: float = 0.0  # seconds after the level started (for charts of arrivals)
    error: str = ""

    @property
    def tpot(self) -> float | None:
        """Time per output token after the first; None when there is no second token."""
        if self.output_len <= 1:
            return None
        return (self.latency - self.ttft) / (self.output_len - 1)


@dataclass(frozen=True)
class Distribution:
    """Summary of one metric in milliseconds."""

    mean: float = 0.0
    median: float = 0.0
    std: float = 0.0
    percentiles: dict[int, float] = field(default_factory=dict)


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile with linear interpolation between closest ranks (numpy's ``percentile`` default)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def distribution(values_s: Sequence[float], percentiles: Sequence[int] = PERCENTILES) -> Distribution:
    """mean/median/population std/percentiles of values given in seconds, reported in ms (0 when empty, as vLLM)."""
    if not values_s:
        return Distribution(percentiles={p: 0.0 for p in percentiles})
    values = [v * MS_PER_S for v in values_s]
    mean = math.fsum(values) / len(values)
    variance = math.fsum((v - mean) ** 2 for v in values) / len(values)
    return Distribution(mean=mean, median=percentile(values, 50), std=math.sqrt(variance),
                        percentiles={p: percentile(values, p) for p in percentiles})


def parse_goodput(spec: str) -> dict[str, float]:
    """``ttft:500,tpot:50`` -> {"ttft": 500.0, "tpot": 50.0} (milliseconds); ValueError with a readable reason."""
    slos: dict[str, float] = {}
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        name, sep, value = part.partition(":")
        name = name.strip().lower()
        if not sep or name not in GOODPUT_METRICS:
            raise ValueError(f"goodput takes ttft:MS, tpot:MS and e2el:MS, not {part!r}")
        try:
            slos[name] = float(value)
        except ValueError:
            raise ValueError(f"goodput limit for {name} must be a number of milliseconds, not {value!r}") from None
        if not math.isfinite(slos[name]) or slos[name] <= 0:
            raise ValueError(f"goodput limit for {name} must be a positive number of milliseconds")
    return slos


def is_good(outcome: RequestOutcome, slos_ms: dict[str, float]) -> bool:
    """A successful request within every service-level objective; TPOT counts as 0 for one-token replies (vLLM)."""
    measured = {"ttft": outcome.ttft, "tpot": outcome.tpot or 0.0, "e2el": outcome.latency}
    return all(measured[name] * MS_PER_S <= limit for name, limit in slos_ms.items())


def summarize(outcomes: Sequence[RequestOutcome], duration_s: float, slos_ms: dict[str, float] | None = None,
              percentiles: Sequence[int] = PERCENTILES) -> dict[str, object]:
    """One level's results with ``vllm bench serve --save-result`` key names (metric keys in ms)."""
    good = [o for o in outcomes if o.success]
    input_tokens = sum(o.prompt_len for o in good)
    output_tokens = sum(o.output_len for o in good)
    per_s = (1.0 / duration_s) if duration_s > 0 else 0.0
    result: dict[str, object] = {
        "duration": duration_s,
        "completed": len(good),
        "failed": len(outcomes) - len(good),
        "total_input_tokens": input_tokens,
        "total_output_tokens": output_tokens,
        "request_throughput": len(good) * per_s,
        "request_goodput": (sum(is_good(o, slos_ms) for o in good) * per_s) if slos_ms else None,
        "output_throughput": output_tokens * per_s,
        "total_token_throughput": (input_tokens + output_tokens) * per_s,
    }
    samples = {
        "ttft": [o.ttft for o in good],
        "tpot": [t for t in (o.tpot for o in good) if t is not None],
        "itl": [gap for o in good for gap in o.itl],
        "e2el": [o.latency for o in good],
    }
    for name in METRICS:
        dist = distribution(samples[name], percentiles)
        result[f"mean_{name}_ms"] = dist.mean
        result[f"median_{name}_ms"] = dist.median
        result[f"std_{name}_ms"] = dist.std
        for p, value in dist.percentiles.items():
            result[f"p{p}_{name}_ms"] = value
    return result


def per_request_arrays(outcomes: Sequence[RequestOutcome]) -> dict[str, list]:
    """The per-request lists ``--save-result`` writes (every request, failures included, in order)."""
    return {
        "input_lens": [o.prompt_len for o in outcomes],
        "output_lens": [o.output_len for o in outcomes],
        "ttfts": [o.ttft for o in outcomes],
        "itls": [list(o.itl) for o in outcomes],
        "start_times": [o.started_at for o in outcomes],
        "errors": [o.error for o in outcomes],
    }


def cost_per_million(hourly_price: float, tokens_per_s: float) -> float | None:
    """Dollars per 1M tokens at a throughput: hourly_price / (tokens/s x 3600) x 1e6; None without throughput."""
    if tokens_per_s <= 0 or hourly_price <= 0:
        return None
    return hourly_price / (tokens_per_s * 3600.0) * 1e6
