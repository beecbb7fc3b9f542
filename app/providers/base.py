"""The provider contract every cloud implements, the data that crosses it, and its typed errors.

The engine only ever sees these types: it decides retry vs. stop from the error class and its attributes, never from
provider JSON or message text. Money rule: only ``NotFound`` from ``get`` means an instance is gone.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, runtime_checkable

from app.config import Secret
from app.domain.gpu_catalog import GpuModel
from app.errors import MaiderError

OWNER_TAG = "maider"  # every instance maider creates carries this tag; list_owned() filters on it


class InstanceStatus(str, enum.Enum):
    """Provider-neutral instance status."""

    PROVISIONING = "provisioning"
    BOOTING = "booting"
    RUNNING = "running"
    STOPPED = "stopped"
    DELETING = "deleting"
    OTHER = "other"


@dataclass(frozen=True)
class Region:
    id: str  # provider's region id, e.g. "us-ord"
    label: str  # human name, e.g. "Chicago, IL"
    country: str  # ISO country code, lower case
    has_gpus: bool  # region advertises GPU instances
    has_metadata: bool  # region supports cloud-init user data


@dataclass(frozen=True)
class GpuPlan:
    id: str  # plan id, e.g. "g2-gpu-rtx4000a1-s"
    label: str  # provider's label
    gpus: int  # number of GPUs
    gpu: GpuModel | None  # maider's GPU model facts; None when the plan's GPU is unknown to maider
    hourly_price: float  # USD/h for the region asked about (region price over base price); 0.0 = unknown
    memory_mb: int  # system RAM
    vcpus: int  # CPU cores
    regions: tuple[str, ...] = ()  # regions known to offer this plan (empty = unknown)

    @property
    def vram_gb_per_gpu(self) -> float:
        return self.gpu.vram_gb if self.gpu else 0.0

    @property
    def vram_gb_total(self) -> float:
        return self.vram_gb_per_gpu * self.gpus


@dataclass(frozen=True)
class InstanceSpec:
    label: str  # unique per session: the idempotency key
    region: str  # region id
    plan: str  # plan id
    user_data: str  # cloud-config text (the provider encodes it as it needs)
    tags: tuple[str, ...] = (OWNER_TAG,)  # always includes OWNER_TAG
    authorized_keys: tuple[str, ...] = ()  # OpenSSH public keys for root
    firewall_id: str | None = None  # provider firewall to attach, if any
    image: str | None = None  # provider image id; None = provider default


@dataclass(frozen=True)
class Instance:
    id: str  # provider's instance id (string for every provider)
    label: str  # the label given at create
    status: InstanceStatus  # normalised status
    region: str  # region id
    plan: str  # plan id
    ssh_host: str | None  # address to SSH to; None until assigned
    ssh_port: int  # SSH port (22 on real clouds)
    created_at: datetime | None  # provider's creation time (UTC, naive) -- billing starts here
    hourly_price: float  # USD/h; 0.0 = unknown
    tags: tuple[str, ...] = field(default_factory=tuple)  # provider tags
    # The instance's SSH host public key ("ssh-ed25519 AAAA...") when the provider already knows it (a machine the
    # user runs keeps its own key): the engine then pins this key instead of the one it put in the cloud-config.
    host_key: str | None = None


@dataclass(frozen=True)
class SessionToken:
    """A short-lived provider token minted for one session's on-VM failsafe (it may delete that VM)."""

    id: str  # the provider's token id: what maider keeps, to revoke it
    token: Secret  # the token itself: goes to the VM over SSH only, never to the database, logs or pages
    expires_at: datetime  # UTC, naive
    api_url: str  # the API base URL the token is for (the one maider uses, so tests reach the fake API)


@runtime_checkable
class Provider(Protocol):
    """A cloud that can run a maider VM.

    Contract:
    - ``regions`` / ``gpu_plans`` are read-only and may be cached by the caller.
    - ``create`` is idempotent by ``spec.label``: calling it twice, or after an ambiguous failure, never makes a second
      instance; it returns as soon as the provider has an id (the address may still be missing).
    - ``get`` raises ``NotFound`` only when the provider says the instance does not exist (HTTP 404 or equivalent);
      every other failure raises another ``ProviderError``.
    - ``delete`` is idempotent: deleting a gone instance succeeds.
    - ``list_owned`` returns every instance tagged ``OWNER_TAG``.
    - ``mint_session_token`` makes a token that can delete instances, expiring at ``expires_at``;
      ``revoke_session_token`` is idempotent (a gone token counts as revoked).
    - ``deleted_at`` is the provider's record of when an instance was deleted, or None when it has none.
    - ``reboots_allowed`` (optional class attribute, True when absent): False for machines maider did not create;
      the engine then never reboots one to load the NVIDIA driver, and fails the launch instead.
    - ``release_label(label)`` (optional) deletes what the provider made for one session besides the instance (an
      SSH key, a key pair, a security group); the engine calls it once the instance is confirmed gone, or was never
      made, and keeps the session in ``destroying`` while it raises.
    """

    name: str

    def regions(self) -> list[Region]: ...

    def gpu_plans(self, region: str | None = None) -> list[GpuPlan]: ...

    def create(self, spec: InstanceSpec) -> Instance: ...

    def get(self, instance_id: str) -> Instance: ...

    def delete(self, instance_id: str) -> None: ...

    def list_owned(self) -> list[Instance]: ...

    def mint_session_token(self, label: str, expires_at: datetime) -> SessionToken: ...

    def revoke_session_token(self, token_id: str) -> None: ...

    def deleted_at(self, instance_id: str) -> datetime | None: ...


class ProviderError(MaiderError):
    """Base of every failure talking to a cloud. ``retryable`` tells the engine whether to try again later."""

    retryable = False


class AuthError(ProviderError):
    """The credentials were refused (HTTP 401/403). The message says how to fix the token."""


class CapacityError(ProviderError):
    """The region has no capacity for this plan right now."""

    def __init__(self, message: str, region: str | None = None, plan: str | None = None) -> None:
        super().__init__(message)
        self.region = region
        self.plan = plan


class RateLimited(ProviderError):
    """The provider asked us to slow down and the retries ran out; ``retry_after`` is its hint in seconds."""

    retryable = True

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TransientError(ProviderError):
    """A timeout, connection failure or 5xx that may succeed later."""

    retryable = True


class NotFound(ProviderError):
    """The provider confirmed the instance does not exist (a real 404)."""


class FailsafeUnavailable(ProviderError):
    """``mint_session_token`` is impossible on this provider (it cannot narrow a credential to one instance); the
    message says why. The launch goes on without the on-VM failsafe and the session's history says so."""


class NoFailsafeNeeded(FailsafeUnavailable):
    """A machine that bills nobody by the hour (your own host): nothing for a failsafe to stop."""


class InvalidRequest(ProviderError):
    """The provider rejected the request as malformed (400/422); ``field`` names the offending field if known."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field
