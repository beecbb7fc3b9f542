"""DigitalOcean GPU Droplets, through the official ``pydo`` SDK (see the Provider contract in ``app.providers.base``).

pydo sits on azure-core, whose default pipeline retries a POST after a 429/5xx or a read timeout: if the first POST had
in fact created the Droplet, that retry makes a second billable one. The SDK's retry policy is therefore
``no_retries()``; maider retries in ``_call``, which also turns every failure into a typed ``ProviderError``, and
``create`` looks the label up before any retry. Every request carries a connect and a read timeout.

DigitalOcean takes SSH keys by id or fingerprint, not as text: ``create`` registers the session's public key under the
session's label and ``delete`` removes it again (a key left on the account is a leftover). GPU Droplets are billed per
second while they exist, which is exactly how ``app.domain.cost`` accrues ``hourly_price``.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import logging
import random
import re
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any, TypeVar
from urllib.parse import urlsplit

from azure.core.exceptions import AzureError, HttpResponseError
from azure.core.pipeline.policies import HttpLoggingPolicy, RetryPolicy

from app.config import Secret
from app.domain.clock_offset import ClockOffset, parse_http_date, parse_iso_utc
from app.domain.gpu_catalog import gpu_by_name, gpu_for_plan
from app.providers import retries
from app.providers.base import (
    OWNER_TAG, AuthError, CapacityError, FailsafeUnavailable, GpuPlan, Instance, InstanceSpec, InstanceStatus,
    InvalidRequest, NotFound,
    ProviderError, RateLimited, Region, SessionToken, TransientError,
)

log = logging.getLogger(__name__)
# azure-core logs every request and answer at INFO (headers redacted, still one screen per call): kept out of maider's
# log unless someone lowers this logger's level to look.
_HTTP_TRACE = logging.getLogger(f"{__name__}.http")
_HTTP_TRACE.setLevel(logging.WARNING)

T = TypeVar("T")

DEFAULT_API_URL = "https://api.digitalocean.com"
# DigitalOcean's "AI/ML-ready" NVIDIA image for GPU Droplets (Ubuntu with the NVIDIA driver, CUDA and the container
# toolkit), named in DigitalOcean's GPU Droplet documentation; despite the name it serves every single-GPU NVIDIA size.
# Its 8-GPU sibling is for the x8 sizes.
GPU_IMAGE = "gpu-h100x1-base"
GPU_IMAGE_8X = "gpu-h100x8-base"
USER_DATA_MAX_BYTES = 64 * 1024  # DigitalOcean's documented user_data limit
MAX_ATTEMPTS = 5  # per call, first try included
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 30.0
BACKOFF_BASE_S = 1.0  # first wait after a 5xx/timeout; doubles each attempt
BACKOFF_MAX_S = 20.0
PER_PAGE = 200  # DigitalOcean's maximum
MAX_PAGES = 500  # a paging loop that never ends is a broken answer, not a big account
METADATA_FEATURE = "metadata"  # cloud-init user data needs it
_KEY_TYPES = ("ssh-rsa", "ssh-dss", "ssh-ed25519", "ecdsa-sha2-nistp")
_LOOPBACK_NAMES = ("localhost",)

TOKEN_HELP = ("create a token at https://cloud.digitalocean.com/account/api/tokens with full access, or with the "
              "custom scopes droplet (create, read, delete), ssh_key (create, read, delete), tag (create, read), "
              "regions:read, sizes:read and image:read, and set DIGITALOCEAN_TOKEN")
NO_TOKEN_MESSAGE = f"no DigitalOcean token: {TOKEN_HELP} (in the environment or .env.secrets)"
TOKEN_REFUSED_MESSAGE = "DigitalOcean refused the token ({status}{reason}): " + TOKEN_HELP
DROPLET_LIMIT_MESSAGE = ("DigitalOcean refused the Droplet: the account is at its Droplet limit (DigitalOcean: "
                         "{reason}); delete a Droplet you no longer need or ask for a higher limit at "
                         "https://cloud.digitalocean.com/account/team/droplet_limit_increase")
NO_SESSION_TOKENS_MESSAGE = ("DigitalOcean's API cannot mint a token limited to one Droplet, and maider will not put "
                             "your account token on the VM")

_STATUS_MAP: dict[str, InstanceStatus] = {
    "new": InstanceStatus.PROVISIONING,
    "active": InstanceStatus.RUNNING,
    "off": InstanceStatus.STOPPED,
    "archive": InstanceStatus.OTHER,
}
# DigitalOcean's 422 for a size a region cannot give now: "Size is not available in this region." (older answers
# say "size is unavailable"). No dedicated error id exists, so the words decide.
_CAPACITY_WORDS = ("not available in this region", "size is unavailable", "is currently unavailable", "capacity",
                   "sold out", "out of stock")
_LIMIT_WORDS = ("droplet limit", "gpu limit")
_COUNTRY_BY_PREFIX = {"nyc": "us", "sfo": "us", "atl": "us", "ric": "us", "tor": "ca", "lon": "gb", "ams": "nl",
                      "fra": "de", "sgp": "sg", "blr": "in", "syd": "au"}


class DropletLimitReached(InvalidRequest):
    """The account may not have more Droplets: no retry or other region helps until one is deleted or the limit
    raised."""


class _RefusedAnswer(Exception):
    """A 4xx that pydo returns as a documented answer (a 404 on get or delete) instead of raising it."""

    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.body = body if isinstance(body, dict) else {}


def _status_and_body(pipeline_response: Any, deserialized: Any, _headers: Any) -> tuple[int, Any]:
    """pydo's ``cls`` hook: keep the HTTP status next to the body, so a documented 404 cannot pass for data."""
    return pipeline_response.http_response.status_code, deserialized


class SessionTokensUnsupported(FailsafeUnavailable):
    """DigitalOcean cannot narrow a token to one Droplet, so the on-VM failsafe gets none."""


def key_fingerprint(public_key: str) -> str:
    """DigitalOcean's SSH key fingerprint (MD5 of the key blob, colon-separated hex); InvalidRequest when the key is
    not an OpenSSH public key."""
    parts = public_key.split()
    if len(parts) < 2 or not parts[0].startswith(_KEY_TYPES):
        raise InvalidRequest("an SSH public key for the VM is not in OpenSSH format", field="authorized_keys")
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest("an SSH public key for the VM is not valid base64", field="authorized_keys") from None
    digest = hashlib.md5(blob, usedforsecurity=False).hexdigest()  # DigitalOcean's fingerprint format
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


def _public_ipv4(raw: dict[str, Any]) -> str | None:
    for network in (raw.get("networks") or {}).get("v4") or ():
        if network.get("type") == "public" and network.get("ip_address"):
            return str(network["ip_address"])
    return None


def _gpu_count(size: dict[str, Any]) -> int:
    return int((size.get("gpu_info") or {}).get("count") or 0)


def _image_for(plan: str) -> str:
    return GPU_IMAGE_8X if re.search(r"x8-", plan) else GPU_IMAGE


def _error_body(exc: HttpResponseError) -> tuple[str, str]:
    """DigitalOcean's ``{"id", "message"}`` from an error answer; empty strings when the body is not that."""
    try:
        body = exc.response.json() if exc.response is not None else None
    except Exception:  # noqa: BLE001 - an HTML error page from a proxy is still an error with a status
        body = None
    if not isinstance(body, dict):
        return "", ""
    return str(body.get("id") or ""), str(body.get("message") or "")


def _retry_after_seconds(exc: HttpResponseError) -> float | None:
    """``Retry-After`` (seconds), else ``ratelimit-reset`` (epoch seconds) as seconds from now; None when absent."""
    headers = exc.response.headers if exc.response is not None else {}
    value = headers.get("Retry-After")
    if value:
        try:
            return max(float(value), 0.0)
        except ValueError:
            pass
    reset = headers.get("ratelimit-reset")
    if reset:
        try:
            return max(float(reset) - time.time(), 0.0)
        except ValueError:
            return None
    return None


class DigitalOceanProvider:
    """GPU Droplets on DigitalOcean. Creation is idempotent by label; only a real 404 is ``NotFound``."""

    name = "digitalocean"

    def __init__(self, token: Secret | str | None, base_url: str | None = None, *, ssh_port: int = 22,
                 sleep: Callable[[float], None] = time.sleep, max_wait_s: float = 60.0,
                 request_timeout_s: float | None = None) -> None:
        """``token`` is revealed at first API use; ``request_timeout_s`` (default 30 s) bounds each HTTP read."""
        self._token = token
        self.base_url = base_url
        self.ssh_port = ssh_port  # Droplets listen on 22; tests point it at a simulated VM
        self._sleep = sleep  # injectable so tests of Retry-After/backoff run instantly
        self.max_wait_s = max_wait_s  # total time one call may spend waiting between retries
        self._read_timeout = request_timeout_s or READ_TIMEOUT_S
        self._connect_timeout = min(CONNECT_TIMEOUT_S, self._read_timeout)
        self._random = random.Random()
        self._sdk: Any = None
        self._sdk_lock = threading.Lock()
        self._options: dict[str, Any] = {}
        self._revealed: str | None = None
        self._sizes: dict[str, dict[str, Any]] | None = None  # slug -> raw size, for prices and regions
        self._labels: dict[str, str] = {}  # Droplet id -> label, so a key can be removed after its Droplet is gone
        self._stale_keys: set[str] = set()  # labels whose key removal failed; retried at the next delete
        self.clock = ClockOffset()  # DigitalOcean's clock vs this laptop's

    def __repr__(self) -> str:
        return f"<DigitalOceanProvider {self.base_url or 'api.digitalocean.com'}>"

    # the contract

    def regions(self) -> list[Region]:
        """Available regions that offer at least one GPU size."""
        sizes = self._fetch_sizes()
        gpu_regions = {r for s in sizes.values() if _gpu_count(s) > 0 for r in s.get("regions") or ()}
        raws = self._list_all("list regions", "regions", lambda page: self._api(
            lambda client: client.regions.list, per_page=PER_PAGE, page=page))
        return [
            Region(id=r["slug"], label=r.get("name") or r["slug"],
                   country=_COUNTRY_BY_PREFIX.get(re.sub(r"\d+$", "", r["slug"]), ""), has_gpus=True,
                   has_metadata=METADATA_FEATURE in (r.get("features") or ()))
            for r in raws if r.get("slug") in gpu_regions and r.get("available", True)
        ]

    def gpu_plans(self, region: str | None = None) -> list[GpuPlan]:
        """Available GPU sizes with DigitalOcean's price; when ``region`` is given, only sizes offered there.

        The GPU is matched from ``gpu_info.model`` (or the slug); a model maider has no facts for stays None.
        """
        plans = []
        for slug, size in self._fetch_sizes().items():
            gpus = _gpu_count(size)
            regions = tuple(sorted(size.get("regions") or ()))
            if gpus < 1 or not size.get("available", True) or (region is not None and region not in regions):
                continue
            model = str((size.get("gpu_info") or {}).get("model") or "")
            plans.append(GpuPlan(
                id=slug, label=size.get("description") or slug, gpus=gpus,
                gpu=(gpu_by_name(model) if model else None) or gpu_for_plan(slug),
                hourly_price=float(size.get("price_hourly") or 0.0), memory_mb=int(size.get("memory") or 0),
                vcpus=int(size.get("vcpus") or 0), regions=regions,
            ))
        return plans

    def create(self, spec: InstanceSpec) -> Instance:
        """Create the Droplet, or return the one that already carries ``spec.label`` (never two for one label)."""
        existing = self._find_by_label(spec.label)
        if existing is not None:
            log.info("digitalocean: Droplet %s already exists for label %s; not creating another",
                     existing.get("id"), spec.label)
            return self._to_instance(existing)
        body = self._create_body(spec)
        body["ssh_keys"] = self._register_keys(spec)

        def post() -> dict[str, Any]:
            answer = self._api(lambda client: client.droplets.create, body=body)
            droplet = (answer or {}).get("droplet")
            if not isinstance(droplet, dict) or droplet.get("id") is None:
                raise TransientError(f"unexpected answer from the DigitalOcean API to create {spec.label}")
            return droplet

        log.info("digitalocean: creating %s (%s in %s)", spec.label, spec.plan, spec.region)
        try:
            raw = self._call(f"create Droplet {spec.label}", post, recover=lambda: self._find_by_label(spec.label),
                             region=spec.region, plan=spec.plan, creating=True)
        except ProviderError as exc:
            self._forget_keys_if_no_droplet(spec.label)
            if isinstance(exc, CapacityError):
                raise self._with_other_regions(exc, spec.plan, spec.region) from exc
            raise
        log.info("digitalocean: Droplet %s is %s", raw.get("id"), spec.label)
        return self._to_instance(raw)

    def get(self, instance_id: str) -> Instance:
        """The Droplet as DigitalOcean sees it now (never a cached copy)."""
        numeric_id = self._numeric_id(instance_id)
        answer = self._call(f"get Droplet {instance_id}", lambda: self._api(
            lambda client: client.droplets.get, droplet_id=numeric_id), thing="Droplet")
        raw = (answer or {}).get("droplet")
        if not isinstance(raw, dict):
            raise TransientError(f"unexpected answer from the DigitalOcean API to get Droplet {instance_id}")
        return self._to_instance(raw)

    def delete(self, instance_id: str) -> None:
        """Delete the Droplet, then the SSH key registered for it; a Droplet already gone counts as deleted."""
        numeric_id = self._numeric_id(instance_id)
        try:
            label: str | None = self.get(instance_id).label
        except NotFound:
            label = None
            log.info("digitalocean: Droplet %s was already gone", instance_id)
        else:
            try:
                self._call(f"delete Droplet {instance_id}", lambda: self._api(
                    lambda client: client.droplets.destroy, droplet_id=numeric_id), thing="Droplet")
                log.info("digitalocean: deleted Droplet %s", instance_id)
            except NotFound:
                log.info("digitalocean: Droplet %s was already gone", instance_id)
        label = label or self._labels.get(instance_id)
        for stale in sorted(self._stale_keys - ({label} if label else set())):
            self._remove_keys_quietly(stale)
        if label:
            self._remove_own_key(label)

    def release_label(self, label: str) -> None:
        """Remove the SSH key registered for the session once its Droplet is gone (or was never made)."""
        self._remove_own_key(label)

    def list_owned(self) -> list[Instance]:
        """Every Droplet tagged ``maider``: the GPU list (DigitalOcean lists GPU Droplets only when asked) and the
        tag's list, merged."""
        raws = {r["id"]: r for r in self._list_droplets("list GPU Droplets", type="gpus")}
        raws.update({r["id"]: r for r in self._list_droplets("list maider's Droplets", tag_name=OWNER_TAG)})
        return [self._to_instance(r) for r in raws.values() if OWNER_TAG in (r.get("tags") or ())]

    def mint_session_token(self, label: str, expires_at: datetime) -> SessionToken:
        """Not possible on DigitalOcean: its tokens cannot be limited to one Droplet."""
        raise SessionTokensUnsupported(NO_SESSION_TOKENS_MESSAGE)

    def revoke_session_token(self, token_id: str) -> None:
        """Nothing to revoke: no session token is ever minted here."""

    def deleted_at(self, instance_id: str) -> datetime | None:
        """DigitalOcean keeps no record maider reads of when a Droplet was deleted."""
        return None

    # the SDK and maider's retries

    def _client(self) -> Any:
        """The pydo client, built at first use (so a missing token only matters when DigitalOcean is really used)."""
        with self._sdk_lock:
            if self._sdk is None:
                token = self._token.reveal() if isinstance(self._token, Secret) else self._token
                if not token:
                    raise AuthError(NO_TOKEN_MESSAGE)
                endpoint = re.sub(r"/v2/?$", "", (self.base_url or DEFAULT_API_URL).rstrip("/"))
                parts = urlsplit(endpoint)
                if parts.scheme != "https":
                    if parts.scheme != "http" or not self._is_loopback(parts.hostname or ""):
                        raise InvalidRequest(f"MAIDER_DIGITALOCEAN_API_URL must be an https URL (plain http only to "
                                             f"this machine), not '{endpoint}'", field="MAIDER_DIGITALOCEAN_API_URL")
                    self._options = {"enforce_https": False}  # a fake API on loopback: the token never leaves
                from pydo import Client

                self._sdk = Client(token=token, endpoint=endpoint, retry_policy=RetryPolicy.no_retries(),
                                   connection_timeout=self._connect_timeout, read_timeout=self._read_timeout,
                                   user_agent="maider", raw_response_hook=self._note_date,
                                   http_logging_policy=HttpLoggingPolicy(logger=_HTTP_TRACE))
                self._revealed = token
            return self._sdk

    @staticmethod
    def _is_loopback(host: str) -> bool:
        if host in _LOOPBACK_NAMES:
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False

    def _note_date(self, response: Any) -> None:
        """Every answer's ``Date`` feeds the clock-offset estimate (app.domain.clock_offset)."""
        provider_time = parse_http_date(response.http_response.headers.get("Date"))
        if provider_time is not None:
            self.clock.observe(provider_time, datetime.now(timezone.utc).replace(tzinfo=None))

    def _call(self, what: str, fn: Callable[[], T], *, recover: Callable[[], T | None] | None = None,
              region: str | None = None, plan: str | None = None, thing: str = "object",
              creating: bool = False) -> T:
        """Run one API operation with maider's retries (``app.providers.retries``); ``recover`` finds a Droplet
        that was made despite an ambiguous failure, so the create is never sent twice."""
        return retries.call(log, "digitalocean", what, fn, lambda exc: self._translate(
            exc, what, region=region, plan=plan, thing=thing, creating=creating), attempts=MAX_ATTEMPTS,
            max_wait_s=self.max_wait_s, sleep=self._sleep, rng=self._random, base_s=BACKOFF_BASE_S,
            max_s=BACKOFF_MAX_S, recover=recover)

    def _translate(self, exc: Exception, what: str, *, region: str | None, plan: str | None, thing: str,
                   creating: bool) -> ProviderError:
        """The one place HTTP/SDK failures become maider errors (messages never contain the token)."""
        if isinstance(exc, ProviderError):
            return exc
        if isinstance(exc, _RefusedAnswer):
            return self._refusal(exc.status, str(exc.body.get("id") or ""), str(exc.body.get("message") or ""),
                                 what, region=region, plan=plan, thing=thing, creating=creating)
        if isinstance(exc, HttpResponseError) and exc.status_code is not None:
            error_id, message = _error_body(exc)
            return self._refusal(exc.status_code, error_id, message, what, region=region, plan=plan, thing=thing,
                                 creating=creating, retry_after=_retry_after_seconds(exc))
        if isinstance(exc, AzureError):  # connect failures, read timeouts, a connection cut mid-answer
            return TransientError(f"could not reach the DigitalOcean API for {what} ({type(exc).__name__}; "
                                  f"each request waits at most {self._read_timeout:g}s)")
        if isinstance(exc, ValueError):  # an answer that is not JSON
            return TransientError(f"unexpected answer from the DigitalOcean API to {what}")
        raise exc

    def _refusal(self, status: int, error_id: str, message: str, what: str, *, region: str | None,
                 plan: str | None, thing: str, creating: bool, retry_after: float | None = None) -> ProviderError:
        """An HTTP refusal as a maider error: the status decides, and DigitalOcean's words where it reuses one."""
        reason = self._scrub(message or error_id or f"HTTP {status}")
        lowered = reason.lower()
        if status == 401:
            return AuthError(TOKEN_REFUSED_MESSAGE.format(status=status, reason=f": {reason}"))
        if status == 404:
            return NotFound(f"DigitalOcean has no such {thing} ({what}: {reason})")
        if status == 429:
            return RateLimited(f"DigitalOcean rate-limited {what}", retry_after=retry_after)
        if status == 408 or status >= 500:
            return TransientError(f"DigitalOcean API error {status} on {what}: {reason}")
        if any(word in lowered for word in _LIMIT_WORDS):
            return DropletLimitReached(DROPLET_LIMIT_MESSAGE.format(reason=reason))
        if creating and any(word in lowered for word in _CAPACITY_WORDS):
            return CapacityError(f"DigitalOcean has no {plan or 'such size'} in {region or 'this region'} right "
                                 f"now (DigitalOcean: {reason})", region=region, plan=plan)
        if status == 403:
            return AuthError(TOKEN_REFUSED_MESSAGE.format(status=status, reason=f" on {what}: {reason}"))
        return InvalidRequest(f"DigitalOcean rejected {what} ({status}): {reason}")

    def _scrub(self, text: str) -> str:
        """Belt and braces: an API message that echoes the token must not carry it into a message."""
        return text.replace(self._revealed, "***") if self._revealed else text

    def _api(self, pick: Callable[[Any], Callable[..., Any]], **kwargs: Any) -> Any:
        """One SDK request (``pick`` chooses the pydo method); any refusal raises, even one pydo would return."""
        method = pick(self._client())
        status, body = method(**kwargs, cls=_status_and_body, **self._options)
        if status >= 400:
            raise _RefusedAnswer(status, body)
        return body

    def _list_all(self, what: str, key: str, fetch: Callable[[int], Any]) -> list[dict[str, Any]]:
        """Every item of a paged list (``links.pages.next`` says whether another page follows)."""
        items: list[dict[str, Any]] = []
        for page in range(1, MAX_PAGES + 1):
            answer = self._call(f"{what} (page {page})", lambda: fetch(page))
            if not isinstance(answer, dict) or not isinstance(answer.get(key), list):
                raise TransientError(f"unexpected answer from the DigitalOcean API to {what}")
            items += [item for item in answer[key] if isinstance(item, dict)]
            if not ((answer.get("links") or {}).get("pages") or {}).get("next"):
                return items
        raise TransientError(f"the DigitalOcean API kept paging {what} past {MAX_PAGES} pages")

    # helpers

    @staticmethod
    def _numeric_id(instance_id: str) -> int:
        try:
            return int(instance_id)
        except (TypeError, ValueError):
            raise InvalidRequest(f"'{instance_id}' is not a DigitalOcean Droplet id", field="instance_id") from None

    def _fetch_sizes(self) -> dict[str, dict[str, Any]]:
        raws = self._list_all("list sizes", "sizes", lambda page: self._api(
            lambda client: client.sizes.list, per_page=PER_PAGE, page=page))
        self._sizes = {s["slug"]: s for s in raws if s.get("slug")}
        return self._sizes

    def _list_droplets(self, what: str, **filters: str) -> list[dict[str, Any]]:
        return [d for d in self._list_all(what, "droplets", lambda page: self._api(
            lambda client: client.droplets.list, per_page=PER_PAGE, page=page, **filters))
            if d.get("id") is not None]

    def _find_by_label(self, label: str) -> dict[str, Any] | None:
        """maider's Droplet named ``label``, GPU or not (DigitalOcean lists GPU Droplets only when asked)."""
        raws = (self._list_droplets(f"look up GPU Droplet {label}", name=label, type="gpus")
                + self._list_droplets(f"look up Droplet {label}", name=label))
        return next((r for r in raws if r.get("name") == label and OWNER_TAG in (r.get("tags") or ())), None)

    def _create_body(self, spec: InstanceSpec) -> dict[str, Any]:
        """The POST /v2/droplets body, less the key ids (registered only once the spec is known to be valid)."""
        if spec.firewall_id:
            raise InvalidRequest("FIREWALL_ID names a Linode firewall; maider does not attach DigitalOcean Cloud "
                                 "Firewalls (the VM's own ufw admits SSH only): unset FIREWALL_ID",
                                 field="firewall_id")
        for key in spec.authorized_keys:
            key_fingerprint(key)
        size = len(spec.user_data.encode())
        if size > USER_DATA_MAX_BYTES:
            raise InvalidRequest(f"the VM's cloud-init user data is {size} bytes; DigitalOcean takes at most "
                                 f"{USER_DATA_MAX_BYTES}", field="user_data")
        return {
            "name": spec.label, "region": spec.region, "size": spec.plan, "image": spec.image or _image_for(spec.plan),
            "user_data": spec.user_data, "tags": list(dict.fromkeys((*spec.tags, OWNER_TAG))),
            "monitoring": False, "backups": False, "ipv6": False,
        }

    def _register_keys(self, spec: InstanceSpec) -> list[int]:
        """Key ids for the Droplet: each public key registered under the label, or the one already registered."""
        ids = []
        for public_key in spec.authorized_keys:
            fingerprint = key_fingerprint(public_key)
            found = self._key_by_fingerprint(fingerprint)
            if found is None:
                try:
                    answer = self._call(f"register the SSH key of {spec.label}", lambda: self._api(
                        lambda client: client.ssh_keys.create, body={"name": spec.label, "public_key": public_key}),
                        recover=lambda: self._key_wrapped(fingerprint))
                except InvalidRequest:  # "already in use": an earlier attempt whose answer was lost made it
                    answer = self._key_wrapped(fingerprint)
                    if answer is None:
                        raise
                found = (answer or {}).get("ssh_key")
            if not isinstance(found, dict) or found.get("id") is None:
                raise TransientError(f"unexpected answer from the DigitalOcean API to register the key of "
                                     f"{spec.label}")
            ids.append(int(found["id"]))
        return ids

    def _key_wrapped(self, fingerprint: str) -> dict[str, Any] | None:
        found = self._key_by_fingerprint(fingerprint)
        return {"ssh_key": found} if found is not None else None

    def _key_by_fingerprint(self, fingerprint: str) -> dict[str, Any] | None:
        try:
            answer = self._call("look up an SSH key", lambda: self._api(
                lambda client: client.ssh_keys.get, ssh_key_identifier=fingerprint), thing="SSH key")
        except NotFound:
            return None
        found = (answer or {}).get("ssh_key")
        return found if isinstance(found, dict) else None

    def _remove_keys(self, label: str) -> int:
        """Remove every key registered under ``label`` (a key gone already counts as removed)."""
        keys = self._list_all("list SSH keys", "ssh_keys", lambda page: self._api(
            lambda client: client.ssh_keys.list, per_page=PER_PAGE, page=page))
        removed = 0
        for key in keys:
            if key.get("name") != label or key.get("id") is None:
                continue
            try:
                self._call(f"remove the SSH key of {label}", lambda key_id=key["id"]: self._api(
                    lambda client: client.ssh_keys.delete, ssh_key_identifier=key_id), thing="SSH key")
            except NotFound:
                pass
            removed += 1
        return removed

    def _remove_own_key(self, label: str) -> None:
        """Remove this Droplet's key or fail the delete as transient: the engine then retries the delete (the
        Droplet is already gone, so only the key is tried again) before it calls the session destroyed."""
        try:
            self._remove_keys(label)
        except ProviderError as exc:
            self._stale_keys.add(label)
            raise TransientError(f"the Droplet is deleted but its SSH key {label} is not yet ({exc}); "
                                 "maider tries again") from exc
        self._stale_keys.discard(label)

    def _remove_keys_quietly(self, label: str) -> None:
        """Key removal never fails a delete: the Droplet (what bills) is gone; a failed removal is retried later."""
        try:
            if self._remove_keys(label):
                log.info("digitalocean: removed the SSH key of %s", label)
        except ProviderError as exc:
            self._stale_keys.add(label)
            log.warning("digitalocean: could not remove the SSH key of %s (%s); will retry at the next delete",
                        label, exc)
            return
        self._stale_keys.discard(label)

    def _forget_keys_if_no_droplet(self, label: str) -> None:
        """After a failed create, remove the key it registered unless a Droplet with the label exists after all."""
        try:
            if self._find_by_label(label) is not None:
                return
        except ProviderError:
            return  # unknown whether a Droplet uses the key: keep it; the next create or delete settles it
        self._remove_keys_quietly(label)

    def _with_other_regions(self, error: CapacityError, plan: str, region: str) -> CapacityError:
        """The capacity error, naming the regions DigitalOcean lists the size in now (when that can be read)."""
        try:
            size = self._fetch_sizes().get(plan) or {}
            others = sorted(set(size.get("regions") or ()) - {region}) if size.get("available", True) else []
        except ProviderError:
            others = []
        where = (f"; regions that offer {plan} now: {', '.join(others)}" if others
                 else f"; no other region lists {plan} as available now")
        return CapacityError(f"{error}{where}", region=error.region, plan=error.plan)

    def _to_instance(self, raw: dict[str, Any]) -> Instance:
        size = raw.get("size") if isinstance(raw.get("size"), dict) else {}
        plan = raw.get("size_slug") or size.get("slug") or ""
        price = size.get("price_hourly") or ((self._sizes or {}).get(plan) or {}).get("price_hourly") or 0.0
        instance_id = str(raw["id"])
        label = raw.get("name") or ""
        if label:
            self._labels[instance_id] = label
        return Instance(
            id=instance_id, label=label, status=_STATUS_MAP.get(raw.get("status") or "", InstanceStatus.OTHER),
            region=(raw.get("region") or {}).get("slug") or "", plan=plan, ssh_host=_public_ipv4(raw),
            ssh_port=self.ssh_port,
            # on the laptop's clock, so that runtime, cost and budget measured against maider's "now" are DO's
            created_at=self.clock.to_local(parse_iso_utc(raw.get("created_at"))), hourly_price=float(price),
            tags=tuple(raw.get("tags") or ()),
        )
