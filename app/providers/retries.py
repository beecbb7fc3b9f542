"""maider's one retry loop for every cloud API.

Every SDK's own retries are switched off (each provider says how): an SDK that re-sends a create after a 5xx or a
timeout can make a second billable VM when the first had in fact been made. Here a failure is first translated into
a typed ``ProviderError``; a retryable one runs ``recover`` (did the create take effect after all?) before waiting
with jittered exponential backoff (or the provider's own Retry-After) and trying again, within a total wait budget.
"""
from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import TypeVar

from app.providers.base import ProviderError, RateLimited, TransientError

T = TypeVar("T")

JITTER = 0.25  # up to +25% so parallel workers do not retry in lockstep


def backoff_delay(error: ProviderError, attempt: int, rng: random.Random, base_s: float, max_s: float) -> float:
    """The provider's Retry-After when it gave one, else ``base_s`` doubling per attempt (to ``max_s``), jittered."""
    if isinstance(error, RateLimited) and error.retry_after is not None:
        return error.retry_after
    base = min(base_s * 2 ** (attempt - 1), max_s)
    return base + rng.uniform(0, base * JITTER)


def exhausted(error: ProviderError, attempts: int, waited: float) -> ProviderError:
    """The error to raise once retries ran out: what the cloud said, and how long maider kept trying."""
    tried = f"after {attempts} attempt{'s' if attempts > 1 else ''} over {waited:.0f}s"
    if isinstance(error, RateLimited):
        return RateLimited(f"{error} ({tried}); wait a minute and try again", retry_after=error.retry_after)
    return TransientError(f"{error} ({tried})")


def call(log: logging.Logger, cloud: str, what: str, fn: Callable[[], T],
         translate: Callable[[Exception], ProviderError], *, attempts: int, max_wait_s: float,
         sleep: Callable[[float], None], rng: random.Random, base_s: float, max_s: float,
         recover: Callable[[], T | None] | None = None) -> T:
    """Run ``fn`` with retries; every failure leaves as the typed error ``translate`` made of it."""
    waited = 0.0
    attempt = 0
    while True:
        attempt += 1
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - every exit goes through translate
            error = translate(exc)
            cause = exc
        if recover is not None and error.retryable:
            found = recover()
            if found is not None:
                log.warning("%s: %s answered %s, but it had taken effect; using the result", cloud, what, error)
                return found
        delay = backoff_delay(error, attempt, rng, base_s, max_s)
        if not error.retryable or attempt >= attempts or waited + delay > max_wait_s:
            if error.retryable and attempts > 1:
                raise exhausted(error, attempt, waited) from cause
            if error is cause:
                raise error
            raise error from cause
        # info, not warning: the caller reports the outcome in one line (the server's log shows these too)
        log.info("%s: %s failed (%s); retry %d of %d in %.1fs", cloud, what, error, attempt, attempts - 1, delay)
        sleep(delay)
        waited += delay
