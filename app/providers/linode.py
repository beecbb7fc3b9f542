"""Linode, through the official ``linode_api4`` SDK (see the Provider contract in ``app.providers.base``).

The SDK's own retries are switched off: it re-sends a POST after a 429/502, and if the first POST had in fact created
the VM, the retry makes a second billable one. maider retries in ``_call`` instead, which also translates every HTTP
failure into a typed ``ProviderError``, and ``create`` looks the label up before any retry. Every request carries a
timeout so a slow API ends in ``TransientError``, never a hang.
"""
from __future__ import annotations

import ipaddress
import logging
import random
import re
import secrets
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

import requests
from linode_api4 import Instance as SdkInstance
from linode_api4 import LinodeClient, PersonalAccessToken
from linode_api4 import Type as SdkType
from linode_api4.errors import ApiError, UnexpectedResponseError
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from app.config import Secret
from app.domain.clock_offset import ClockOffset, parse_http_date, parse_iso_utc
from app.domain.cloud_init import UserDataTooLarge, encode_user_data
from app.domain.gpu_catalog import gpu_for_plan
from app.providers import retries
from app.providers.base import (
    OWNER_TAG, AuthError, CapacityError, GpuPlan, Instance, InstanceSpec, InstanceStatus, InvalidRequest, NotFound,
    ProviderError, RateLimited, Region, SessionToken, TransientError,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_IMAGE = "linode/ubuntu24.04"
DEFAULT_API_URL = "https://api.linode.com/v4"
# What the on-VM failsafe needs to delete its own instance. Linode cannot narrow a token to one instance.
SESSION_TOKEN_SCOPES = "linodes:read_write"
MAX_ATTEMPTS = 5  # per call, first try included
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 30.0
BACKOFF_BASE_S = 1.0  # first wait after a 5xx/timeout; doubles each attempt
BACKOFF_MAX_S = 20.0
PAGE_SIZE = 500  # Linode's maximum: the availability list alone has hundreds of rows
GPU_CAPABILITY = "GPU Linodes"
METADATA_CAPABILITY = "Metadata"  # cloud-init user data needs it
GPU_CLASS = "gpu"  # "accelerated" (NETINT video cards) is not a GPU vLLM can use
LINODE_PRIVATE_NET = ipaddress.ip_network("192.168.128.0/17")  # Linode's private IPv4 range: never the SSH target

NO_TOKEN_MESSAGE = ("no Linode token: set LINODE_TOKEN in the environment or .env.secrets, or configure linode-cli "
                    "(maider reads ~/.config/linode-cli)")
TOKEN_REFUSED_MESSAGE = ("Linode refused the token ({status}): create a token with Linodes read/write at "
                         "https://cloud.linode.com/profile/tokens and set LINODE_TOKEN")

_STATUS_MAP: dict[str, InstanceStatus] = {
    "provisioning": InstanceStatus.PROVISIONING,
    "booting": InstanceStatus.BOOTING,
    "rebooting": InstanceStatus.BOOTING,
    "running": InstanceStatus.RUNNING,
    "offline": InstanceStatus.STOPPED,
    "stopped": InstanceStatus.STOPPED,
    "shutting_down": InstanceStatus.STOPPED,
    "deleting": InstanceStatus.DELETING,
}

# /regions/availability names some plans by type id (g2-gpu-rtx4000a1-s) and some by an internal name
# (gpu-rtx6000-1.1 for g1-gpu-rtx6000-1): the same name without the generation prefix, plus a revision suffix.
_TYPE_GENERATION = re.compile(r"^g\d+-")
_INTERNAL_REVISION = re.compile(r"\.\d+$")

# Linode refuses an impossible GPU plan/region with a 403 (or a 400) whose reason says so; there is no dedicated code.
_CAPACITY_WORDS = ("no availability", "sold out", "capacity", "not available", "unavailable", "out of stock")
# ... and a 403 for accounts not yet cleared for GPU Linodes.
_VERIFICATION_WORDS = ("verification is required", "additional verification")
GPU_ACCESS_MESSAGE = ("Linode has not cleared this account for GPU Linodes yet ({reason}): open a support ticket "
                      "at https://cloud.linode.com/support/tickets asking for access to GPU plans")

# linode_api4 treats anything not starting with these as a *file path* and reads it; refuse such keys up front.
_SDK_KEY_PREFIXES = ("ssh-dss", "ssh-rsa", "ecdsa-sha2-nistp", "ssh-ed25519")

# The SDK builds paged lists lazily and raises this plain RuntimeError when the list changed between pages.
_LIST_CHANGED = "has changed since creation"


class GpuAccessRequired(InvalidRequest):
    """The account may not create GPU Linodes until Linode's support clears it: no retry or other token helps."""


def _availability_key(name: str) -> str:
    """One form for a type id and an availability plan name: ``g1-gpu-rtx6000-1`` ~ ``gpu-rtx6000-1.1``."""
    return _INTERNAL_REVISION.sub("", _TYPE_GENERATION.sub("", name))


class _TimeoutAdapter(HTTPAdapter):
    """Gives every SDK request a timeout (the SDK sets none) and never retries at the HTTP layer.

    ``read=False`` makes urllib3 raise a read timeout as itself, so requests reports ``ReadTimeout``.
    """

    def __init__(self, timeout: tuple[float, float]) -> None:
        super().__init__(max_retries=Retry(total=0, read=False, redirect=False, raise_on_status=False,
                                           respect_retry_after_header=False))
        self.timeout = timeout

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.timeout
        return super().send(request, **kwargs)


def _raw(obj: Any) -> dict[str, Any]:
    """The JSON an SDK object was populated from.

    Reading it instead of the object's lazy properties keeps every HTTP request inside ``_call`` (a lazy property
    may fetch on access, outside maider's retries and error translation).
    """
    return dict(getattr(obj, "_raw_json", None) or {})


def _public_ipv4(addresses: Any) -> str | None:
    for address in addresses or ():
        try:
            if ipaddress.ip_address(address) not in LINODE_PRIVATE_NET:
                return str(address)
        except ValueError:
            continue
    return None


def _hourly_price(raw_type: dict[str, Any], region: str | None) -> float:
    """The region's price when Linode lists one, else the base price; 0.0 when neither is known."""
    if region:
        for entry in raw_type.get("region_prices") or ():
            if entry.get("id") == region and entry.get("hourly"):
                return float(entry["hourly"])
    return float((raw_type.get("price") or {}).get("hourly") or 0.0)


def _retry_after_seconds(response: requests.Response | None) -> float | None:
    """``Retry-After`` in seconds (delta-seconds or an HTTP date), or None when absent or unreadable."""
    value = response.headers.get("Retry-After") if response is not None else None
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # "-0000" parses as naive; HTTP dates are UTC
        when = when.replace(tzinfo=timezone.utc)
    return max((when - datetime.now(timezone.utc)).total_seconds(), 0.0)


class LinodeProvider:
    """GPU VMs on Linode. Creation is idempotent by label; only a real 404 is ``NotFound``."""

    name = "linode"

    def __init__(self, token: Secret | str | None, base_url: str | None = None, *, ssh_port: int = 22,
                 sleep: Callable[[float], None] = time.sleep, max_wait_s: float = 60.0,
                 request_timeout_s: float | None = None) -> None:
        """``token`` is revealed at first API use; ``request_timeout_s`` (default 30 s) bounds each HTTP read."""
        self._token = token
        self.base_url = base_url
        self.ssh_port = ssh_port  # Linode VMs listen on 22; tests and port-mapping setups use another
        self._sleep = sleep  # injectable so tests of Retry-After/backoff run instantly
        self.max_wait_s = max_wait_s  # total time one call may spend waiting between retries
        self._timeout = ((min(CONNECT_TIMEOUT_S, request_timeout_s), request_timeout_s) if request_timeout_s
                         else (CONNECT_TIMEOUT_S, READ_TIMEOUT_S))
        self._random = random.Random()
        self._sdk: LinodeClient | None = None
        self._sdk_lock = threading.Lock()
        self._revealed: str | None = None
        self._gpu_types: dict[str, dict[str, Any]] | None = None  # type id -> raw type, for instance prices
        self.clock = ClockOffset()  # Linode's clock vs this laptop's: instance times are moved onto the laptop's

    def __repr__(self) -> str:
        return f"<LinodeProvider {self.base_url or 'api.linode.com'}>"

    def regions(self) -> list[Region]:
        """Regions that offer GPU Linodes."""
        raw_regions = self._call("list regions", lambda: [_raw(r) for r in self._client().regions()])
        return [
            Region(id=r["id"], label=r.get("label") or r["id"], country=(r.get("country") or "").lower(),
                   has_gpus=True, has_metadata=METADATA_CAPABILITY in (r.get("capabilities") or ()))
            for r in raw_regions if GPU_CAPABILITY in (r.get("capabilities") or ())
        ]

    def gpu_plans(self, region: str | None = None) -> list[GpuPlan]:
        """GPU plans priced for ``region``; when given, only plans offered there.

        A plan the availability list does not mention (or all plans, when the list cannot be read) is *unknown*:
        listed everywhere with no regions, never dropped as "not offered".
        """
        gpu_types = self._fetch_gpu_types()
        offered = self._offered_regions(set(gpu_types))
        unmentioned = sorted(set(gpu_types) - set(offered)) if offered else []
        if unmentioned:
            log.info("linode: the availability list does not mention %s; their regions are unknown",
                     ", ".join(unmentioned))
        plans = []
        for type_id, raw_type in gpu_types.items():
            regions = tuple(sorted(offered.get(type_id, ())))
            if region is not None and type_id in offered and region not in regions:
                continue
            plans.append(GpuPlan(
                id=type_id, label=raw_type.get("label") or type_id, gpus=int(raw_type.get("gpus") or 0),
                gpu=gpu_for_plan(type_id, raw_type.get("label") or ""), hourly_price=_hourly_price(raw_type, region),
                memory_mb=int(raw_type.get("memory") or 0), vcpus=int(raw_type.get("vcpus") or 0), regions=regions,
            ))
        return plans

    def create(self, spec: InstanceSpec) -> Instance:
        """Create the VM, or return the one that already carries ``spec.label`` (never two for one label)."""
        existing = self._find_by_label(spec.label)
        if existing is not None:
            log.info("linode: instance %s already exists for label %s; not creating another",
                     existing.get("id"), spec.label)
            return self._to_instance(existing)
        arguments = self._create_arguments(spec)

        def post() -> dict[str, Any]:
            client = self._client()
            created = client.linode.instance_create(spec.plan, spec.region, **arguments)
            return _raw(created)

        log.info("linode: creating %s (%s in %s)", spec.label, spec.plan, spec.region)
        try:
            raw = self._call(f"create instance {spec.label}", post, recover=lambda: self._find_by_label(spec.label),
                             region=spec.region, plan=spec.plan, forbidden=self._create_forbidden)
        except CapacityError as exc:
            raise self._with_other_regions(exc, spec.plan, spec.region) from exc
        except InvalidRequest as exc:
            # "Label must be unique": an earlier attempt whose answer we lost made it. Return that one.
            found = self._find_by_label(spec.label) if exc.field == "label" else None
            if found is None:
                raise
            raw = found
        log.info("linode: instance %s is %s", raw.get("id"), spec.label)
        return self._to_instance(raw)

    def get(self, instance_id: str) -> Instance:
        """The instance as Linode sees it now (never a cached copy)."""
        numeric_id = self._numeric_id(instance_id)
        raw = self._call(f"get instance {instance_id}",
                         lambda: _raw(self._client().load(SdkInstance, numeric_id)), thing="instance")
        return self._to_instance(raw)

    def delete(self, instance_id: str) -> None:
        """Delete the instance; an instance that is already gone counts as deleted."""
        numeric_id = self._numeric_id(instance_id)
        try:
            self._call(f"delete instance {instance_id}",
                       lambda: SdkInstance(self._client(), numeric_id).delete(), thing="instance")
        except NotFound:
            log.info("linode: instance %s was already gone", instance_id)
            return
        log.info("linode: deleted instance %s", instance_id)

    def list_owned(self) -> list[Instance]:
        """Every instance tagged ``maider``, across all pages."""
        raws = self._call("list maider instances", lambda: [
            _raw(i) for i in self._client().linode.instances(SdkInstance.tags.contains(OWNER_TAG))])
        return [self._to_instance(r) for r in raws if OWNER_TAG in (r.get("tags") or ())]

    def mint_session_token(self, label: str, expires_at: datetime) -> SessionToken:
        """A personal access token limited to Linodes, expiring at ``expires_at`` (naive UTC, laptop clock)."""
        expiry = (expires_at + self.clock.offset).replace(microsecond=0)  # on Linode's clock
        created = self._call(f"mint a token for {label}", lambda: self._client().profile.token_create(
            label=label[:100], expiry=expiry, scopes=SESSION_TOKEN_SCOPES), thing="token")
        raw = _raw(created)
        value = raw.get("token")
        if not value or raw.get("id") is None:
            raise TransientError("unexpected answer from the Linode API to the token request (no token in it)")
        log.info("linode: minted token %s for %s, expiring %s", raw["id"], label, expiry.isoformat())
        return SessionToken(id=str(raw["id"]), token=Secret(value, "failsafe token", "minted by maider"),
                            expires_at=expires_at, api_url=(self.base_url or DEFAULT_API_URL).rstrip("/"))

    def revoke_session_token(self, token_id: str) -> None:
        """Revoke a minted token; one already gone (expired, or revoked in the console) counts as revoked."""
        numeric_id = self._numeric_id(token_id)
        try:
            self._call(f"revoke token {token_id}",
                       lambda: PersonalAccessToken(self._client(), numeric_id).delete(), thing="token")
        except NotFound:
            log.info("linode: token %s was already gone", token_id)
            return
        log.info("linode: revoked token %s", token_id)

    def deleted_at(self, instance_id: str) -> datetime | None:
        """When Linode's event list says the instance was deleted (laptop clock), or None when it does not say."""
        numeric_id = self._numeric_id(instance_id)
        answer = self._call(f"read the events of instance {instance_id}", lambda: self._client().get(
            "/account/events", filters={"entity.id": numeric_id, "entity.type": "linode",
                                        "action": "linode_delete"}))
        times = [parse_iso_utc(e.get("created")) for e in (answer or {}).get("data", ())
                 if (e.get("entity") or {}).get("id") == numeric_id and e.get("action") == "linode_delete"]
        times = [t for t in times if t is not None]
        return self.clock.to_local(min(times)) if times else None

    def _client(self) -> LinodeClient:
        """The SDK client, built at first use (so a missing token only matters when Linode is really needed)."""
        with self._sdk_lock:
            if self._sdk is None:
                token = self._token.reveal() if isinstance(self._token, Secret) else self._token
                if not token:
                    raise AuthError(NO_TOKEN_MESSAGE)
                kwargs: dict[str, Any] = {"retry": False, "page_size": PAGE_SIZE, "user_agent": "maider"}
                if self.base_url:
                    kwargs["base_url"] = self.base_url.rstrip("/")
                client = LinodeClient(token, **kwargs)
                adapter = _TimeoutAdapter(self._timeout)
                client.session.mount("http://", adapter)
                client.session.mount("https://", adapter)
                client.session.hooks["response"].append(self._note_date)
                self._revealed = token
                self._sdk = client
            return self._sdk

    def _note_date(self, response: requests.Response, *_args: Any, **_kwargs: Any) -> requests.Response:
        """Every answer's ``Date`` feeds the clock-offset estimate (app.domain.clock_offset)."""
        provider_time = parse_http_date(response.headers.get("Date"))
        if provider_time is not None:
            self.clock.observe(provider_time, datetime.now(timezone.utc).replace(tzinfo=None))
        return response

    def _call(self, what: str, fn: Callable[[], T], *, recover: Callable[[], T | None] | None = None,
              region: str | None = None, plan: str | None = None, thing: str = "object",
              forbidden: Callable[[str, str | None, str | None], ProviderError] | None = None) -> T:
        """Run one API operation with maider's retries (``app.providers.retries``); ``recover`` finds a create that
        took effect despite an ambiguous failure, so it is never sent twice."""
        return retries.call(log, "linode", what, fn, lambda exc: self._translate(
            exc, what, region=region, plan=plan, thing=thing, forbidden=forbidden), attempts=MAX_ATTEMPTS,
            max_wait_s=self.max_wait_s, sleep=self._sleep, rng=self._random, base_s=BACKOFF_BASE_S,
            max_s=BACKOFF_MAX_S, recover=recover)

    def _translate(self, exc: Exception, what: str, *, region: str | None, plan: str | None, thing: str,
                   forbidden: Callable[[str, str | None, str | None], ProviderError] | None = None) -> ProviderError:
        """The one place HTTP/SDK failures become maider errors (messages never contain the token).

        ``forbidden`` reads a 403's reason first where Linode also answers 403 for things other than the token.
        """
        if isinstance(exc, ProviderError):
            return exc
        if isinstance(exc, ApiError):
            status = exc.status
            reason = self._scrub("; ".join(str(r) for r in exc.errors) or f"HTTP {status}")
            if status == 403 and forbidden is not None:
                return forbidden(reason, region, plan)
            if status in (401, 403):
                return AuthError(TOKEN_REFUSED_MESSAGE.format(status=status))
            if status == 404:
                return NotFound(f"Linode has no such {thing} ({what}: {reason})")
            if status == 429:
                return RateLimited(f"Linode rate-limited {what}", retry_after=_retry_after_seconds(exc.response))
            if status == 408 or status >= 500:
                return TransientError(f"Linode API error {status} on {what}: {reason}")
            fields = [e.get("field") for e in (exc.json or {}).get("errors", []) if isinstance(e, dict)]
            field_name = next((f for f in fields if f), None)
            if field_name in (None, "type", "region") and any(w in reason.lower() for w in _CAPACITY_WORDS):
                return CapacityError(f"Linode has no capacity for {plan or 'this plan'} in {region or 'this region'}"
                                     f" right now ({reason}); try another region or plan", region=region, plan=plan)
            return InvalidRequest(f"Linode rejected {what} ({status}): {reason}", field=field_name)
        if isinstance(exc, requests.Timeout):
            return TransientError(f"the Linode API did not answer {what} within {self._timeout[1]:.0f}s")
        if isinstance(exc, requests.RequestException):
            return TransientError(f"could not reach the Linode API for {what} ({type(exc).__name__})")
        if isinstance(exc, UnexpectedResponseError) or (isinstance(exc, RuntimeError) and _LIST_CHANGED in str(exc)):
            return TransientError(f"unexpected answer from the Linode API to {what}")
        raise exc

    def _create_forbidden(self, reason: str, region: str | None, plan: str | None) -> ProviderError:
        """A 403 on create: no capacity, an account not cleared for GPUs, or (only if the profile fails too) a bad
        token."""
        lowered = reason.lower()
        if any(word in lowered for word in _CAPACITY_WORDS):
            return CapacityError(f"Linode has no capacity for {plan or 'this plan'} in {region or 'this region'} "
                                 f"right now (Linode: {reason})", region=region, plan=plan)
        if any(word in lowered for word in _VERIFICATION_WORDS):
            return GpuAccessRequired(GPU_ACCESS_MESSAGE.format(reason=f"Linode: {reason}"))
        try:
            self._client().get("/profile")
        except ApiError as exc:
            if exc.status in (401, 403):
                return AuthError(TOKEN_REFUSED_MESSAGE.format(status=exc.status) + f" (Linode: {reason})")
        except requests.RequestException:
            pass  # the token could not be checked: report Linode's own reason
        return InvalidRequest(f"Linode refused to create the VM (403: {reason}); the token itself is accepted, so it "
                              "may lack the Linodes read/write scope or the account may lack access to this plan")

    def _with_other_regions(self, error: CapacityError, plan: str, region: str) -> CapacityError:
        """The capacity error, naming the regions whose availability lists the plan now (when that can be read)."""
        try:
            others = sorted(self._offered_regions({plan}).get(plan, set()) - {region})
        except ProviderError:
            others = []
        where = (f"; regions that offer {plan} now: {', '.join(others)}" if others
                 else f"; no other region lists {plan} as available now")
        return CapacityError(f"{error}{where}", region=error.region, plan=error.plan)

    def _scrub(self, text: str) -> str:
        """Belt and braces: an API reason that echoes the token must not carry it into a message."""
        return text.replace(self._revealed, "***") if self._revealed else text

    @staticmethod
    def _numeric_id(instance_id: str) -> int:
        try:
            return int(instance_id)
        except (TypeError, ValueError):
            raise InvalidRequest(f"'{instance_id}' is not a Linode instance id", field="instance_id") from None

    def _fetch_gpu_types(self) -> dict[str, dict[str, Any]]:
        raw_types = self._call("list GPU plans", lambda: [
            _raw(t) for t in self._client().linode.types(SdkType.type_class == GPU_CLASS)])
        # Filter here too: the server's X-Filter is trusted for size, not for correctness.
        gpu_types = {t["id"]: t for t in raw_types if t.get("class") == GPU_CLASS and int(t.get("gpus") or 0) > 0}
        self._gpu_types = gpu_types
        return gpu_types

    def _offered_regions(self, type_ids: set[str]) -> dict[str, set[str]]:
        """Type id -> regions where Linode says it is available now, for every type the list mentions (an empty set:
        mentioned, available nowhere); an empty dict when availability is unknown."""
        try:
            entries = self._call("list plan availability", lambda: [
                (e.region, e.plan, e.available) for e in self._client().regions.availability()])
        except ProviderError as exc:
            log.info("linode: plan availability unknown (%s); showing plans without regions", exc)
            return {}
        by_key = {_availability_key(type_id): type_id for type_id in type_ids}
        offered: dict[str, set[str]] = {}
        for region, plan, available in entries:
            type_id = plan if plan in type_ids else by_key.get(_availability_key(plan or ""))
            if type_id is None:
                continue  # a plan maider was not asked about, or a name it cannot match: never guessed
            regions = offered.setdefault(type_id, set())
            if available:
                regions.add(region)
        return offered

    def _instance_price(self, plan: str, region: str) -> float:
        """USD/h for a plan in a region, from the GPU price list (fetched once per provider)."""
        if self._gpu_types is None:
            self._fetch_gpu_types()
        raw_type = (self._gpu_types or {}).get(plan)
        return _hourly_price(raw_type, region) if raw_type else 0.0

    def _find_by_label(self, label: str) -> dict[str, Any] | None:
        raws = self._call(f"look up instance {label}", lambda: [
            _raw(i) for i in self._client().linode.instances(SdkInstance.label == label)])
        return next((r for r in raws if r.get("label") == label), None)

    def _create_arguments(self, spec: InstanceSpec) -> dict[str, Any]:
        """Keyword arguments for ``instance_create``; the root password is random, used once, never kept."""
        for key in spec.authorized_keys:
            if not key.startswith(_SDK_KEY_PREFIXES):
                raise InvalidRequest("an SSH public key for the VM is not in OpenSSH format", field="authorized_keys")
        firewall: int | None = None
        if spec.firewall_id:
            try:
                firewall = int(spec.firewall_id)
            except ValueError:
                raise InvalidRequest(f"FIREWALL_ID '{spec.firewall_id}' is not a Linode firewall id (a number)",
                                     field="firewall_id") from None
        try:
            user_data = encode_user_data(spec.user_data)
        except UserDataTooLarge as exc:
            raise InvalidRequest(str(exc), field="user_data") from None
        return {
            "label": spec.label,
            "image": spec.image or DEFAULT_IMAGE,
            "root_pass": secrets.token_urlsafe(32),
            "authorized_keys": list(spec.authorized_keys) or None,
            "metadata": {"user_data": user_data},
            "firewall": firewall,
            "tags": list(dict.fromkeys((*spec.tags, OWNER_TAG))),
            "booted": True,
        }

    def _to_instance(self, raw: dict[str, Any]) -> Instance:
        plan = raw.get("type") or ""
        region = raw.get("region") or ""
        return Instance(
            id=str(raw["id"]), label=raw.get("label") or "",
            status=_STATUS_MAP.get(raw.get("status") or "", InstanceStatus.OTHER),
            region=region, plan=plan, ssh_host=_public_ipv4(raw.get("ipv4")), ssh_port=self.ssh_port,
            # on the laptop's clock, so that runtime, cost and budget measured against maider's "now" are Linode's
            created_at=self.clock.to_local(parse_iso_utc(raw.get("created"))),
            hourly_price=self._instance_price(plan, region),
            tags=tuple(raw.get("tags") or ()),
        )
