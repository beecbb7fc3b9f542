"""AWS EC2, through ``boto3`` (see the Provider contract in ``app.providers.base``).

botocore's own retries are off (one attempt per request): a RunInstances re-sent after a 5xx could start a second
billable VM. maider retries (``AwsApi.call``), looks the label up (tags ``Name`` and ``maider``) before any retry,
and sends the label as ``ClientToken`` so EC2 itself also answers a repeated RunInstances with the first instance.

Per session maider makes three things, all named after the label and tagged ``maider``: an imported key pair, a
security group that lets in SSH only, and the instance. ``delete`` terminates the instance and, once EC2 says
``terminated``, deletes the other two; ``get`` reports the instance gone (``NotFound``) only after all three are.
Credentials come from boto3's standard chain (profiles, environment, SSO), never from maider's settings.
"""
from __future__ import annotations

import base64
import gzip
import hashlib
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError

from app.domain.clock_offset import ClockOffset
from app.domain.cloud_init import USER_DATA_MAX_BYTES, UserDataTooLarge, encode_user_data
from app.errors import ConfigError
from app.providers import aws_catalog as catalog
from app.providers.aws_api import MAX_ATTEMPTS, AwsApi
from app.providers.aws_session import SSH_PORT, SessionResources
from app.providers.base import (
    OWNER_TAG, FailsafeUnavailable, GpuPlan, Instance, InstanceSpec, InstanceStatus, InvalidRequest, NotFound,
    ProviderError, Region, SessionToken, TransientError,
)

log = logging.getLogger(__name__)

__all__ = ["AwsProvider", "MAX_ATTEMPTS", "ROOT_VOLUME_GB", "UBUNTU_AMI_PARAMETER"]

UBUNTU_AMI_PARAMETER = "/aws/service/canonical/ubuntu/server/24.04/stable/current/amd64/hvm/ebs-gp3/ami-id"
ROOT_VOLUME_GB = 120  # model weights (up to ~50 GB), the vLLM and Open WebUI images, the NVIDIA driver
REGION_WORKERS = 8  # regions asked at once for their offerings
FILTER_VALUES_MAX = 100  # values per EC2 filter, well under EC2's limit
CLIENT_TOKEN_MAX = 64  # EC2's limit for ClientToken (ASCII)
LIVE_STATES = ["pending", "running", "stopping", "stopped", "shutting-down"]
_INSTANCE_ID = re.compile(r"^i-[0-9a-f]{8,32}$")
_EC2_KEY_TYPES = ("ssh-ed25519 ", "ssh-rsa ")  # the only key types ImportKeyPair accepts

NO_REGION_MESSAGE = ("no AWS region: set REGION in the project's .env (e.g. us-east-1), or AWS_DEFAULT_REGION, or a "
                     "region in ~/.aws/config (`aws configure`)")
FAILSAFE_MESSAGE = ("the on-VM failsafe is not available on AWS: AWS cannot mint a credential limited to this one "
                    "instance, and maider will not put broader AWS credentials on the VM. maider on this laptop still "
                    "stops the VM (idle watchdog, lifetime, budget), and a shutdown on the VM terminates it")

_STATUS_MAP: dict[str, InstanceStatus] = {
    "pending": InstanceStatus.PROVISIONING,
    "running": InstanceStatus.RUNNING,
    "stopping": InstanceStatus.STOPPED,
    "stopped": InstanceStatus.STOPPED,
    "shutting-down": InstanceStatus.DELETING,
    "terminated": InstanceStatus.DELETING,  # until its key pair and security group are deleted too (see get)
}


# EC2 is eventually consistent: DescribeInstances may answer InvalidInstanceID.NotFound for a while after
# RunInstances. An instance this provider launched is not believed gone before this much time has passed.
LISTING_LAG_S = 300.0


def _client_token(label: str) -> str:
    """The label itself when EC2 accepts it as a ClientToken (so it reads well in CloudTrail), else its digest."""
    if len(label) <= CLIENT_TOKEN_MAX and label.isascii():
        return label
    return hashlib.sha256(label.encode()).hexdigest()


def _packed_user_data(user_data: str) -> bytes:
    """The cloud-config gzipped (cloud-init un-gzips it); boto3 base64-encodes it for RunInstances."""
    try:
        return base64.b64decode(encode_user_data(user_data))
    except UserDataTooLarge:
        size = len(gzip.compress(user_data.encode(), compresslevel=9, mtime=0))
        raise InvalidRequest(f"the VM's cloud-init user data is {size:,} bytes even gzipped, over EC2's limit of "
                             f"{USER_DATA_MAX_BYTES:,} bytes: shorten what goes into it (an SSH key, VLLM_EXTRA_ARGS, "
                             "the model id)", field="user_data") from None


def _tags(raw: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t.get("Value", "") for t in raw.get("Tags") or () if "Key" in t}


def _naive_utc(value: Any) -> datetime | None:
    if not isinstance(value, datetime):
        return None
    return value.astimezone(timezone.utc).replace(tzinfo=None) if value.tzinfo else value


class AwsProvider:
    """GPU VMs on EC2 in one region. Creation is idempotent by label; only EC2's "not found" (or a terminated
    instance whose key pair and security group are gone too) is ``NotFound``."""

    name = "aws"

    def __init__(self, region: str | None, *, endpoint_url: str | None = None,
                 sleep: Callable[[float], None] = time.sleep, session: boto3.Session | None = None,
                 ssh_port: int = SSH_PORT, max_wait_s: float = 60.0, request_timeout_s: float | None = None,
                 price_cache: Path | None = None) -> None:
        """``region`` None means boto3's configured default; ``endpoint_url`` points every client elsewhere (boto3
        also reads AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_EC2 itself); ``price_cache`` keeps refreshed prices."""
        try:
            self._session = session or boto3.Session()
            resolved = region or self._session.region_name
        except BotoCoreError as exc:  # e.g. AWS_PROFILE names a profile ~/.aws/config does not have
            raise ConfigError(f"AWS configuration unreadable: {exc}", "AWS_PROFILE") from None
        if not resolved:
            raise ConfigError(NO_REGION_MESSAGE, "REGION")
        self.region: str = resolved
        self.endpoint_url = endpoint_url
        self.ssh_port = ssh_port  # EC2 VMs listen on 22; tests point it at a simulated VM
        self.ssh_host_override: str | None = None  # tests: the simulated VM's address (emulated IPs are unreachable)
        self._api = AwsApi(self._session, resolved, endpoint_url=endpoint_url, sleep=sleep, max_wait_s=max_wait_s,
                           request_timeout_s=request_timeout_s)
        self._resources = SessionResources(self._api)
        self._lock = threading.Lock()
        self._amis: dict[str, tuple[str, str]] = {}  # region -> (AMI id, root device name)
        self._price_cache = price_cache
        self._launched: dict[str, float] = {}  # instance id -> when this provider launched it (monotonic)
        self._labels: dict[str, str] = {}  # instance id -> its session's label, for cleanup once it is gone
        self._prices: dict[str, dict[str, float]] = {r: dict(p) for r, p in catalog.ON_DEMAND_USD.items()}
        self._load_price_cache()

    def __repr__(self) -> str:
        return f"<AwsProvider {self.region}{' at ' + self.endpoint_url if self.endpoint_url else ''}>"

    @property
    def clock(self) -> ClockOffset:
        """AWS's clock vs this laptop's, estimated from the answers' ``Date`` headers."""
        return self._api.clock

    # -- catalogue -----------------------------------------------------------------------------------------------

    def regions(self) -> list[Region]:
        """The account's enabled regions; ``has_gpus`` when EC2 offers one of maider's GPU types there (the regions
        are asked in parallel: one request each)."""
        raw = self._api.call("list regions", lambda: self._ec2().describe_regions()["Regions"])
        names = [t["InstanceType"] for t in self._gpu_types(self.region)]

        def has_gpus(region_id: str) -> bool:
            try:
                return bool(self._offered(region_id, names))
            except ProviderError as exc:  # a region the account cannot use right now
                log.info("aws: cannot read offerings in %s (%s)", region_id, exc)
                return False

        ids = sorted(entry["RegionName"] for entry in raw)
        with ThreadPoolExecutor(max_workers=REGION_WORKERS, thread_name_prefix="aws-regions") as pool:
            offered = dict(zip(ids, pool.map(has_gpus, ids)))
        known = {region_id: catalog.REGION_NAMES.get(region_id, (region_id, "")) for region_id in ids}
        return [Region(id=region_id, label=known[region_id][0], country=known[region_id][1],
                       has_gpus=offered[region_id], has_metadata=True) for region_id in ids]

    def gpu_plans(self, region: str | None = None) -> list[GpuPlan]:
        """GPU instance types with EC2's GPU facts, priced for ``region`` (default: the provider's); when a region is
        given, only types EC2 offers there. Without one, ``regions`` is known for the provider's region only."""
        where = region or self.region
        raw_types = self._gpu_types(where)
        offered = self._offered(where, [t["InstanceType"] for t in raw_types])
        plans = []
        for raw_type in raw_types:
            is_offered = raw_type["InstanceType"] in offered
            if region is not None and not is_offered:
                continue
            plan = catalog.gpu_plan(raw_type, where, self._price(where, raw_type["InstanceType"]), is_offered)
            if plan is not None:
                plans.append(plan)
        return sorted(plans, key=lambda p: (p.hourly_price == 0, p.hourly_price, p.id))

    def refresh_prices(self, regions: Iterable[str] | None = None,
                       instance_types: Iterable[str] | None = None) -> dict[str, dict[str, float]]:
        """Read on-demand prices from the Pricing API (needs pricing:GetProducts), replace the table's figures and
        keep them in ``price_cache`` when one was given. Returns what was read: region -> type -> USD/h."""
        wanted_regions = list(regions or [self.region])
        wanted_types = list(instance_types or [p.id for p in self.gpu_plans()])
        fresh: dict[str, dict[str, float]] = {}
        for region in wanted_regions:
            for type_id in wanted_types:
                items = self._api.call(f"read the price of {type_id} in {region}", lambda r=region, t=type_id: [
                    item for page in self._api.client("pricing", catalog.PRICING_REGION).get_paginator("get_products")
                    .paginate(ServiceCode="AmazonEC2", Filters=catalog.pricing_filters(r, t))
                    for item in page.get("PriceList", ())])
                prices = [p for p in map(catalog.on_demand_usd, items) if p is not None]
                if prices:
                    fresh.setdefault(region, {})[type_id] = min(prices)
        with self._lock:
            for region, prices in fresh.items():
                self._prices.setdefault(region, {}).update(prices)
        self._save_price_cache()
        log.info("aws: refreshed %d prices in %s", sum(map(len, fresh.values())), ", ".join(wanted_regions))
        return fresh

    # -- instances -----------------------------------------------------------------------------------------------

    def create(self, spec: InstanceSpec) -> Instance:
        """Start the VM, or return the one that already carries ``spec.label`` (never two for one label).

        Nothing is made before the request is known to be valid; when the create fails and no instance exists,
        the key pair and security group made for it are deleted again.
        """
        if spec.region and spec.region != self.region:
            raise InvalidRequest(f"this AWS provider works in {self.region}, not {spec.region}: set REGION to the "
                                 "region to launch in", field="region")
        existing = self._find_by_label(spec.label)
        if existing is not None:
            log.info("aws: instance %s already exists for label %s; not creating another",
                     existing["InstanceId"], spec.label)
            return self._to_instance(existing)
        user_data = _packed_user_data(spec.user_data)
        extra_groups = self._checked_groups(spec)
        image_id, root_device = self._image(spec)
        try:
            key_name = self._resources.ensure_key_pair(spec.label, spec.authorized_keys[0])
            group_id = self._resources.ensure_security_group(spec.label)
            arguments = self._run_arguments(spec, image_id, root_device, key_name, [group_id, *extra_groups],
                                            user_data)
            log.info("aws: creating %s (%s in %s)", spec.label, spec.plan, self.region)
            raw = self._api.call(f"create instance {spec.label}",
                                 lambda: self._ec2().run_instances(**arguments)["Instances"][0],
                                 recover=lambda: self._find_by_label(spec.label), region=self.region,
                                 plan=spec.plan)
        except ProviderError:
            self._clean_up_failed_create(spec.label)
            raise
        log.info("aws: instance %s is %s", raw["InstanceId"], spec.label)
        self._launched[raw["InstanceId"]] = time.monotonic()
        self._labels[raw["InstanceId"]] = spec.label
        return self._to_instance(raw)

    def get(self, instance_id: str) -> Instance:
        """The instance as EC2 sees it now. A terminated one is gone once its key pair and security group are.

        Those two are deleted here as well as in ``delete``: once the instance is terminated they are only
        leftovers, and a VM that ended outside maider (a poweroff on it, the console) must still come out as
        ``NotFound`` -- that is how the engine notices it vanished.
        """
        raw = self._describe_one(instance_id)
        if raw["State"]["Name"] == "terminated":
            tags = _tags(raw)
            label = tags.get("Name") if OWNER_TAG in tags else None
            if label:
                self._resources.delete(label)
            left = self._resources.remaining(label) if label else []
            if not left:
                raise NotFound(f"AWS reports instance {instance_id} terminated, and nothing of its session is left")
            log.info("aws: instance %s is terminated; still deleting its %s", instance_id, " and ".join(left))
        return self._to_instance(raw)

    def delete(self, instance_id: str) -> None:
        """Terminate the instance; once it is terminated, delete its key pair and security group. Gone counts as
        done. Call again (then ``get``) until ``get`` says ``NotFound``: AWS detaches the network interface a
        little after termination, and the security group can only go after that."""
        try:
            raw = self._describe_one(instance_id)
        except NotFound:
            log.info("aws: instance %s was already gone", instance_id)
            label = self._labels.get(instance_id)
            if label:  # gone before its session's key pair and security group were: delete them now
                self._resources.delete(label)
            return
        state = raw["State"]["Name"]
        if state not in ("terminated", "shutting-down"):
            try:
                self._api.call(f"delete instance {instance_id}",
                               lambda: self._ec2().terminate_instances(InstanceIds=[instance_id]), thing="instance")
            except NotFound:
                log.info("aws: instance %s was already gone", instance_id)
                return
            log.info("aws: terminating instance %s", instance_id)
            state = self._describe_one(instance_id)["State"]["Name"]
        tags = _tags(raw)
        if state == "terminated" and OWNER_TAG in tags and tags.get("Name"):
            self._resources.delete(tags["Name"])

    def release_label(self, label: str) -> None:
        """Delete the session's key pair and security group once its instance is gone (or was never launched)."""
        self._resources.delete(label)
        left = self._resources.remaining(label)
        if left:
            raise TransientError(f"AWS still has the {' and '.join(left)} of {label}; maider tries again")

    def list_owned(self) -> list[Instance]:
        """Every instance tagged ``maider`` that is not terminated, across all pages."""
        raws = self._api.call("list maider instances", lambda: self._describe(
            [{"Name": "tag-key", "Values": [OWNER_TAG]}, {"Name": "instance-state-name", "Values": LIVE_STATES}]))
        return [self._to_instance(r) for r in raws if OWNER_TAG in _tags(r)]

    def mint_session_token(self, label: str, expires_at: datetime) -> SessionToken:
        """Refused: see ``FAILSAFE_MESSAGE`` (the engine records it and carries on without the failsafe)."""
        raise FailsafeUnavailable(FAILSAFE_MESSAGE)

    def revoke_session_token(self, token_id: str) -> None:
        """Nothing to revoke: no token is ever minted on AWS."""

    def deleted_at(self, instance_id: str) -> datetime | None:
        """EC2 keeps no deletion time maider can read (CloudTrail would need another permission)."""
        return None

    def _clean_up_failed_create(self, label: str) -> None:
        """After a failed create: no instance, so nothing may stay behind (best effort; a failure is only logged,
        and the next create or delete of the label tries again)."""
        try:
            if self._find_by_label(label) is None:
                self._resources.delete(label)
        except ProviderError as exc:
            log.warning("aws: could not clean up after the failed create of %s (%s)", label, exc)

    # -- requests ------------------------------------------------------------------------------------------------

    def _run_arguments(self, spec: InstanceSpec, image_id: str, root_device: str, key_name: str,
                       group_ids: list[str], user_data: bytes) -> dict[str, Any]:
        tags = [{"Key": "Name", "Value": spec.label}] + [{"Key": t, "Value": ""}
                                                         for t in dict.fromkeys((*spec.tags, OWNER_TAG))]
        return {
            "ImageId": image_id, "InstanceType": spec.plan, "MinCount": 1, "MaxCount": 1,
            "ClientToken": _client_token(spec.label), "KeyName": key_name, "SecurityGroupIds": group_ids,
            "UserData": user_data,
            "InstanceInitiatedShutdownBehavior": "terminate",  # a poweroff on the VM ends the billing
            "BlockDeviceMappings": [{"DeviceName": root_device, "Ebs": {
                "VolumeSize": ROOT_VOLUME_GB, "VolumeType": "gp3", "DeleteOnTermination": True}}],
            "MetadataOptions": {"HttpTokens": "required", "HttpEndpoint": "enabled"},
            "TagSpecifications": [{"ResourceType": "instance", "Tags": tags},
                                  {"ResourceType": "volume", "Tags": tags}],
        }

    @staticmethod
    def _checked_groups(spec: InstanceSpec) -> list[str]:
        """Refuse a spec EC2 would refuse only after maider made things for it; FIREWALL_ID on AWS is one more
        security group of the user's (``sg-...``) for the instance, returned here."""
        if not spec.authorized_keys:
            raise InvalidRequest("an SSH public key for the VM is needed", field="authorized_keys")
        if not spec.authorized_keys[0].startswith(_EC2_KEY_TYPES):
            raise InvalidRequest("EC2 imports only Ed25519 or RSA keys in OpenSSH format", field="authorized_keys")
        if not spec.firewall_id:
            return []
        if not re.fullmatch(r"sg-[0-9a-f]{8,17}", spec.firewall_id):
            raise InvalidRequest(f"FIREWALL_ID '{spec.firewall_id}' is not an EC2 security group id (sg-...)",
                                 field="firewall_id")
        return [spec.firewall_id]

    def _image(self, spec: InstanceSpec) -> tuple[str, str]:
        """The AMI (Canonical's current Ubuntu 24.04, from its public SSM parameter) and its root device name."""
        if spec.image is None and self.region in self._amis:
            return self._amis[self.region]
        image_id = spec.image
        if image_id is None:
            try:
                image_id = self._api.call("look up the Ubuntu 24.04 image", lambda: self._api.client(
                    "ssm").get_parameter(Name=UBUNTU_AMI_PARAMETER)["Parameter"]["Value"], thing="parameter")
            except NotFound:
                raise InvalidRequest(f"AWS has no Ubuntu 24.04 image parameter in {self.region} "
                                     f"({UBUNTU_AMI_PARAMETER}); pick another region", field="image") from None
        images = self._api.call(f"read image {image_id}",
                                lambda: self._ec2().describe_images(ImageIds=[image_id])["Images"])
        if not images:
            raise InvalidRequest(f"AWS has no image {image_id} in {self.region}", field="image")
        found = (str(image_id), str(images[0].get("RootDeviceName") or "/dev/sda1"))
        if spec.image is None:
            self._amis[self.region] = found
        return found

    def _gpu_types(self, region: str) -> list[dict[str, Any]]:
        """DescribeInstanceTypes for maider's GPU families on x86_64, all pages."""
        filters = [{"Name": "instance-type", "Values": list(catalog.GPU_TYPE_PATTERNS)},
                   {"Name": "processor-info.supported-architecture", "Values": ["x86_64"]}]
        return self._api.call("list GPU instance types", lambda: [
            t for page in self._ec2(region).get_paginator("describe_instance_types").paginate(
                Filters=filters) for t in page["InstanceTypes"] if t.get("GpuInfo")])

    def _offered(self, region: str, type_ids: list[str]) -> set[str]:
        """The types among ``type_ids`` that EC2 offers in ``region`` (LocationType region)."""
        offered: set[str] = set()
        for start in range(0, len(type_ids), FILTER_VALUES_MAX):
            chunk = type_ids[start:start + FILTER_VALUES_MAX]
            offered.update(self._api.call(f"list instance type offerings in {region}", lambda c=chunk: [
                o["InstanceType"] for page in self._ec2(region).get_paginator(
                    "describe_instance_type_offerings").paginate(
                    LocationType="region", Filters=[{"Name": "instance-type", "Values": c}])
                for o in page["InstanceTypeOfferings"]]))
        return offered

    def _find_by_label(self, label: str) -> dict[str, Any] | None:
        raws = self._api.call(f"look up instance {label}", lambda: self._describe(
            [{"Name": "tag:Name", "Values": [label]}, {"Name": "tag-key", "Values": [OWNER_TAG]},
             {"Name": "instance-state-name", "Values": LIVE_STATES}]))
        raws = [r for r in raws if _tags(r).get("Name") == label]
        return min(raws, key=lambda r: r.get("LaunchTime") or datetime.max.replace(tzinfo=timezone.utc)) \
            if raws else None

    def _describe_one(self, instance_id: str) -> dict[str, Any]:
        """The instance's description; ``NotFound`` only when AWS has had time to list it (see ``LISTING_LAG_S``)."""
        if not _INSTANCE_ID.match(instance_id or ""):
            raise InvalidRequest(f"'{instance_id}' is not an EC2 instance id (i-...)", field="instance_id")
        try:
            raws = self._api.call(f"get instance {instance_id}", lambda: self._describe(ids=[instance_id]),
                                  thing="instance")
        except NotFound:
            raws = []
        if not raws:
            launched = self._launched.get(instance_id)
            if launched is not None and time.monotonic() - launched < LISTING_LAG_S:
                raise TransientError(f"AWS does not list instance {instance_id} yet (launched "
                                     f"{time.monotonic() - launched:.0f} s ago; EC2's listings lag behind)")
            raise NotFound(f"AWS has no instance {instance_id}")
        return raws[0]

    def _describe(self, filters: list[dict[str, Any]] | None = None,
                  ids: list[str] | None = None) -> list[dict[str, Any]]:
        kwargs: dict[str, Any] = {"Filters": filters} if filters else {"InstanceIds": ids or []}
        pages = self._ec2().get_paginator("describe_instances").paginate(**kwargs)
        return [i for page in pages for reservation in page["Reservations"] for i in reservation["Instances"]]

    def _to_instance(self, raw: dict[str, Any]) -> Instance:
        tags = _tags(raw)
        state = (raw.get("State") or {}).get("Name") or ""
        address = raw.get("PublicIpAddress")
        return Instance(
            id=raw["InstanceId"], label=tags.get("Name", ""), status=_STATUS_MAP.get(state, InstanceStatus.OTHER),
            region=self.region, plan=raw.get("InstanceType") or "",
            ssh_host=(self.ssh_host_override or address) if state not in ("terminated", "shutting-down") else address,
            ssh_port=self.ssh_port, created_at=self._api.clock.to_local(_naive_utc(raw.get("LaunchTime"))),
            hourly_price=self._price(self.region, raw.get("InstanceType") or ""),
            tags=tuple(k for k in tags if k != "Name"),
        )

    def _ec2(self, region: str | None = None) -> Any:
        return self._api.client("ec2", region)

    # -- prices ----------------------------------------------------------------------------------------------------

    def _price(self, region: str, type_id: str) -> float:
        with self._lock:
            return self._prices.get(region, {}).get(type_id, 0.0)

    def _load_price_cache(self) -> None:
        if self._price_cache is None or not self._price_cache.is_file():
            return
        try:
            cached = json.loads(self._price_cache.read_text())
            for region, prices in (cached.get("prices") or {}).items():
                self._prices.setdefault(region, {}).update({t: float(p) for t, p in prices.items()})
        except (OSError, ValueError, AttributeError, TypeError) as exc:
            log.warning("aws: ignoring the unreadable price cache %s (%s)", self._price_cache, exc)

    def _save_price_cache(self) -> None:
        if self._price_cache is None:
            return
        with self._lock:
            payload = {"fetched_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "prices": self._prices}
            text = json.dumps(payload, indent=1, sort_keys=True)
        self._price_cache.parent.mkdir(parents=True, exist_ok=True)
        self._price_cache.write_text(text)
