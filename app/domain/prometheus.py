"""A small reader for the Prometheus text format vLLM's /metrics speaks (sums over label sets)."""
from __future__ import annotations

import math
import re

_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^}]*)\})?\s+(?P<value>\S+)")


def parse_metrics(text: str) -> dict[str, float]:
    """Map metric name (with suffix, e.g. ``_total``, ``_sum``) to the sum of its samples over all label sets.

    Histogram ``_bucket`` samples are skipped: maider uses ``_sum``/``_count`` for means.
    """
    totals: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if not match or match["name"].endswith("_bucket"):
            continue
        try:
            value = float(match["value"])
        except ValueError:
            continue
        if math.isnan(value):
            continue
        totals[match["name"]] = totals.get(match["name"], 0.0) + value
    return totals


def first_of(metrics: dict[str, float], *names: str, default: float = 0.0) -> float:
    """The first metric present among ``names`` (new vLLM names first, deprecated ones as fallback)."""
    for name in names:
        if name in metrics:
            return metrics[name]
    return default
