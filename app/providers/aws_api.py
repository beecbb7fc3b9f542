"""One AWS account in one region as maider talks to it: boto3 clients that send each request once, and ``call``,
which retries with backoff and turns every failure into a typed ``ProviderError``.

botocore's own retries are off (``total_max_attempts`` 1): it would re-send a RunInstances after a 5xx, and if the
first one had in fact started the VM, the re-send could start a second billable one. Every request has connect and
read timeouts, so a slow API ends in ``TransientError``, never a hang.
"""
from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any, TypeVar

import boto3
from botocore.config import Config

from app.domain.clock_offset import ClockOffset, parse_http_date
from app.providers.aws_errors import translate
from app.providers import retries

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_ATTEMPTS = 5  # per call, first try included
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 30.0
BACKOFF_BASE_S = 1.0  # first wait after a 5xx/throttle/timeout; doubles each attempt
BACKOFF_MAX_S = 20.0


class AwsApi:
    """boto3 clients per (service, region), built at first use, and maider's retry loop around every request."""

    def __init__(self, session: boto3.Session, region: str, *, endpoint_url: str | None = None,
                 sleep: Callable[[float], None] = time.sleep, max_wait_s: float = 60.0,
                 request_timeout_s: float | None = None) -> None:
        self.session = session
        self.region = region
        self.endpoint_url = endpoint_url
        self.sleep = sleep  # injectable so tests of backoff run instantly
        self.max_wait_s = max_wait_s  # total time one call may spend waiting between retries
        read_timeout = request_timeout_s or READ_TIMEOUT_S
        self._config = Config(retries={"total_max_attempts": 1, "mode": "standard"}, user_agent_extra="maider",
                              connect_timeout=min(CONNECT_TIMEOUT_S, read_timeout), read_timeout=read_timeout)
        self._clients: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()
        self._random = random.Random()
        self.clock = ClockOffset()  # AWS's clock vs this laptop's: instance times are moved onto the laptop's

    def client(self, service: str, region: str | None = None) -> Any:
        """The client for a service in a region (default: the provider's); boto3 sessions are not thread-safe,
        clients are."""
        key = (service, region or self.region)
        with self._lock:
            if key not in self._clients:
                kwargs: dict[str, Any] = {"region_name": key[1], "config": self._config}
                if self.endpoint_url:
                    kwargs["endpoint_url"] = self.endpoint_url
                client = self.session.client(service, **kwargs)
                client.meta.events.register("after-call", self._note_date)
                self._clients[key] = client
            return self._clients[key]

    def call(self, what: str, fn: Callable[[], T], *, recover: Callable[[], T | None] | None = None,
             region: str | None = None, plan: str | None = None, thing: str = "object",
             attempts: int = MAX_ATTEMPTS) -> T:
        """Run one API operation with maider's retries (``app.providers.retries``); ``recover`` finds an instance
        that was made despite an ambiguous failure (timeout, throttling, 5xx), so RunInstances is never sent twice."""
        return retries.call(log, "aws", what, fn, lambda exc: translate(
            exc, what, region=region or self.region, plan=plan, thing=thing), attempts=attempts,
            max_wait_s=self.max_wait_s, sleep=self.sleep, rng=self._random, base_s=BACKOFF_BASE_S,
            max_s=BACKOFF_MAX_S, recover=recover)

    def _note_date(self, http_response: Any = None, **_kwargs: Any) -> None:
        """Every answer's ``Date`` feeds the clock-offset estimate (app.domain.clock_offset)."""
        provider_time = parse_http_date(getattr(http_response, "headers", {}).get("Date"))
        if provider_time is not None:
            self.clock.observe(provider_time, datetime.now(timezone.utc).replace(tzinfo=None))
