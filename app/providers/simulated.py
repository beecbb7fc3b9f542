"""The demo cloud: Linode's GPU catalog, with VMs simulated on this laptop.

Used by ``maider serve --demo`` and by tests. Regions and plans mirror Linode's public GPU offer so every screen looks
real; nothing here costs money. Each instance is a ``SimulatedVm`` (``app.simulator``) configured only by the
cloud-config maider sent, like a real VM. Instance records live in ``<home>/simulated/instances.json`` (0600: the
cloud-config holds the VM's keys and .env) so a restarted maider still sees its instances; a VM whose process is gone
is booted again on first sight, already configured, as if the laptop had slept.

Demo failures, for people trying the panel: a model id containing one of ``DEMO_FAILURES``' keys (e.g.
``Qwen/Qwen2.5-Coder-7B-Instruct-demo-fail-kv``) makes that VM fail the way the key says. Tests script any behaviour
with ``SimulatedProvider(home, behaviour_for=...)``.
"""
from __future__ import annotations

import json
import os
import secrets
import threading
from collections.abc import Callable
from dataclasses import asdict, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from app.config import Secret
from app.domain.gpu_catalog import QUADRO_RTX6000, gpu_for_plan
from app.domain.vllm_env import parse_env
from app.providers.base import (OWNER_TAG, GpuPlan, Instance, InstanceSpec, InstanceStatus, InvalidRequest,
                                NotFound, Region, SessionToken)
from app.simulator.cloud_api import CloudApi
from app.simulator.vm import SimulatedVm, VmBehaviour, read_cloud_config

_ADA_REGIONS = ("us-ord", "de-fra-2", "jp-osa", "fr-par", "us-sea", "sg-sin-2")
_TURING_REGIONS = ("us-east", "us-southeast", "eu-central", "ap-west", "ap-south")

SIMULATED_REGIONS: tuple[Region, ...] = (
    Region("us-ord", "Chicago, IL", "us", True, True),
    Region("us-sea", "Seattle, WA", "us", True, True),
    Region("us-east", "Newark, NJ", "us", True, True),
    Region("us-southeast", "Atlanta, GA", "us", True, True),
    Region("de-fra-2", "Frankfurt 2, DE", "de", True, True),
    Region("eu-central", "Frankfurt, DE", "de", True, True),
    Region("fr-par", "Paris, FR", "fr", True, True),
    Region("jp-osa", "Osaka, JP", "jp", True, True),
    Region("sg-sin-2", "Singapore 2, SG", "sg", True, True),
    Region("ap-west", "Mumbai, IN", "in", True, True),
    Region("ap-south", "Singapore, SG", "sg", True, True),
    Region("us-central", "Dallas, TX", "us", False, True),
)

# (plan id, label, gpus, $/h, RAM MB, vCPUs, regions)
_PLANS: tuple[tuple[str, str, int, float, int, int, tuple[str, ...]], ...] = (
    ("g2-gpu-rtx4000a1-s", "RTX4000 Ada x1 Small", 1, 0.52, 16384, 4, _ADA_REGIONS),
    ("g2-gpu-rtx4000a1-m", "RTX4000 Ada x1 Medium", 1, 0.67, 32768, 8, _ADA_REGIONS),
    ("g2-gpu-rtx4000a1-l", "RTX4000 Ada x1 Large", 1, 0.96, 65536, 16, _ADA_REGIONS),
    ("g2-gpu-rtx4000a1-xl", "RTX4000 Ada x1 X-Large", 1, 1.53, 131072, 32, _ADA_REGIONS),
    ("g2-gpu-rtx4000a2-s", "RTX4000 Ada x2 Small", 2, 1.05, 32768, 8, _ADA_REGIONS),
    ("g2-gpu-rtx4000a2-m", "RTX4000 Ada x2 Medium", 2, 1.34, 65536, 16, _ADA_REGIONS),
    ("g2-gpu-rtx4000a4-s", "RTX4000 Ada x4 Small", 4, 2.96, 98304, 48, _ADA_REGIONS),
    ("g2-gpu-rtx4000a4-m", "RTX4000 Ada x4 Medium", 4, 3.57, 131072, 64, _ADA_REGIONS),
    ("g1-gpu-rtx6000-1", "Dedicated 32GB + RTX6000 GPU x1", 1, 1.50, 32768, 8, _TURING_REGIONS),
    ("g1-gpu-rtx6000-2", "Dedicated 64GB + RTX6000 GPU x2", 2, 3.00, 65536, 16, _TURING_REGIONS),
    ("g1-gpu-rtx6000-3", "Dedicated 96GB + RTX6000 GPU x3", 3, 4.50, 98304, 20, _TURING_REGIONS),
    ("g1-gpu-rtx6000-4", "Dedicated 128GB + RTX6000 GPU x4", 4, 6.00, 131072, 24, _TURING_REGIONS),
)


def simulated_plans(region: str | None = None) -> list[GpuPlan]:
    """The simulated catalog, filtered to plans offered in ``region`` when given."""
    plans = []
    for plan_id, label, gpus, price, memory, vcpus, regions in _PLANS:
        if region is not None and region not in regions:
            continue
        plans.append(GpuPlan(id=plan_id, label=label, gpus=gpus, gpu=gpu_for_plan(plan_id, label),
                             hourly_price=price, memory_mb=memory, vcpus=vcpus, regions=regions))
    return plans



# model-id fragment -> how the demo VM fails (see VmBehaviour)
DEMO_FAILURES: dict[str, dict[str, Any]] = {
    "demo-fail-kv": {"vllm_failure": "kv_too_small", "fitting_len": 8192},
    "demo-fail-oom": {"vllm_failure": "warmup_oom"},
    "demo-fail-bf16": {"vllm_failure": "bf16_turing"},
    "demo-fail-gated": {"vllm_failure": "gated"},
    "demo-fail-never": {"vllm_failure": "never_ready"},
    "demo-hide-gpu": {"hidden_gpus": 1},  # ready, but nvidia-smi misses the last GPU: 'maider check' names it
    "demo-fail-cloud-init": {"cloud_init_error": True},
    "demo-fail-ssh": {"ssh_never": True},
}
FIRST_INSTANCE_ID = 70_000_001

# VMs run in this process and are shared by every provider object on the same home (the registry builds a new
# provider per use): (home, instance id) -> VM.
_VMS: dict[tuple[str, str], SimulatedVm] = {}
_VMS_LOCK = threading.RLock()
# Per home: the demo cloud's small HTTP API (started at the first token), the tokens it accepts (token -> (id,
# expiry); in memory only, like the VMs), and when each instance was deleted (the provider's event list).
_APIS: dict[str, CloudApi] = {}
_TOKENS: dict[str, dict[str, tuple[str, datetime]]] = {}
_DELETED: dict[tuple[str, str], datetime] = {}
FAILSAFE_SPEED_VARIABLE = "MAIDER_DEMO_FAILSAFE_SPEED"  # >1 runs demo VMs' failsafe on a compressed clock


def demo_behaviour(spec: InstanceSpec) -> VmBehaviour:
    """Demo timings, the plan's GPUs, and a failure when the model id asks for one."""
    plan = next((p for p in simulated_plans() if p.id == spec.plan), None)
    gpu = plan.gpu if plan else None
    turing = gpu == QUADRO_RTX6000
    behaviour = VmBehaviour(gpus=plan.gpus if plan else 1,
                            gpu_name="Quadro RTX 6000" if turing else "NVIDIA RTX 4000 Ada Generation",
                            gpu_memory_mb=24576 if turing else 20475)
    try:
        model = parse_env(read_cloud_config(spec.user_data).env_file).get("MODEL_ID", "")
    except ValueError:
        model = ""
    try:
        failsafe_speed = max(float(os.environ.get(FAILSAFE_SPEED_VARIABLE, "1")), 1.0)
    except ValueError:
        failsafe_speed = 1.0
    behaviour = replace(behaviour, failsafe_speed=failsafe_speed, failsafe_tick_s=60.0 / failsafe_speed)
    for fragment, overrides in DEMO_FAILURES.items():
        if fragment in model:
            return replace(behaviour, **overrides)
    return behaviour


class SimulatedProvider:
    """A cloud whose VMs run on this laptop (see the Provider contract in ``app.providers.base``)."""

    name = "simulated"
    catalog_is_local = True  # listing plans costs no API call

    def __init__(self, home: Path, behaviour_for: Callable[[InstanceSpec], VmBehaviour] | None = None) -> None:
        self.home = Path(home)
        self.behaviour_for = behaviour_for or demo_behaviour
        self._records_path = self.home / "simulated" / "instances.json"
        self._last_id_path = self.home / "simulated" / "last_instance_id"

    def regions(self) -> list[Region]:
        return list(SIMULATED_REGIONS)

    def gpu_plans(self, region: str | None = None) -> list[GpuPlan]:
        return simulated_plans(region)

    def create(self, spec: InstanceSpec) -> Instance:
        with _VMS_LOCK:
            records = self._load()
            for instance_id, record in records.items():
                if record["label"] == spec.label:
                    return self._instance(instance_id, record)
            plan = next((p for p in simulated_plans(spec.region) if p.id == spec.plan), None)
            if plan is None:
                raise InvalidRequest(f"plan {spec.plan} is not offered in region {spec.region}", field="type")
            try:
                env_file = read_cloud_config(spec.user_data).env_file
            except (ValueError, AttributeError) as exc:
                raise InvalidRequest(f"user data is not a usable cloud-config: {exc}", field="metadata") from None
            instance_id = self._next_instance_id(records)
            tags = tuple(dict.fromkeys((*spec.tags, OWNER_TAG)))
            record = {"label": spec.label, "region": spec.region, "plan": spec.plan, "price": plan.hourly_price,
                      "tags": list(tags), "created_at": _utcnow().isoformat(), "user_data": spec.user_data,
                      "env_file": env_file, "behaviour": asdict(self.behaviour_for(spec))}
            records[instance_id] = record
            self._save(records)
            self._boot(instance_id, record, configured=False)
            return self._instance(instance_id, record)

    def get(self, instance_id: str) -> Instance:
        with _VMS_LOCK:
            record = self._load().get(str(instance_id))
            if record is None:
                raise NotFound(f"instance {instance_id} does not exist")
            return self._instance(str(instance_id), record)

    def delete(self, instance_id: str) -> None:
        vm = self._remove(str(instance_id))
        if vm is not None:
            vm.stop()

    def mint_session_token(self, label: str, expires_at: datetime) -> SessionToken:
        """A token the demo cloud's API accepts until ``expires_at`` (to delete instances, as on Linode)."""
        with _VMS_LOCK:
            api = _APIS.get(str(self.home))
            if api is None:
                api = _APIS[str(self.home)] = CloudApi(self._token_allowed, self._delete_for_api)
            value = secrets.token_hex(32)
            token_id = str(FIRST_INSTANCE_ID + len(_TOKENS.setdefault(str(self.home), {})) + 1)
            _TOKENS[str(self.home)][value] = (token_id, expires_at)
        return SessionToken(id=token_id, token=Secret(value, "failsafe token", "minted by maider"),
                            expires_at=expires_at, api_url=api.base_url)

    def revoke_session_token(self, token_id: str) -> None:
        with _VMS_LOCK:
            tokens = _TOKENS.get(str(self.home), {})
            for value, (known_id, _expiry) in list(tokens.items()):
                if known_id == str(token_id):
                    del tokens[value]

    def deleted_at(self, instance_id: str) -> datetime | None:
        return _DELETED.get((str(self.home), str(instance_id)))

    def _token_allowed(self, value: str) -> bool:
        with _VMS_LOCK:
            entry = _TOKENS.get(str(self.home), {}).get(value)
        return entry is not None and entry[1] > _utcnow()

    def _delete_for_api(self, instance_id: str) -> bool:
        """A delete asked through the API (a VM's failsafe): the VM powers off in the background, so the caller --
        possibly that very VM -- gets its answer first."""
        with _VMS_LOCK:
            known = instance_id in self._load()
        vm = self._remove(instance_id)
        if vm is not None:
            threading.Thread(target=vm.stop, name="sim-vm-deleted", daemon=True).start()
        return known

    def _remove(self, instance_id: str) -> SimulatedVm | None:
        with _VMS_LOCK:
            records = self._load()
            if records.pop(instance_id, None) is not None:
                _DELETED[(str(self.home), instance_id)] = _utcnow()
            self._save(records)
            return _VMS.pop((str(self.home), instance_id), None)

    def list_owned(self) -> list[Instance]:
        with _VMS_LOCK:
            return [self._instance(i, r) for i, r in self._load().items() if OWNER_TAG in r["tags"]]

    def vm(self, instance_id: str) -> SimulatedVm | None:
        """The running VM behind an instance (tests and the demo use it to look inside)."""
        return _VMS.get((str(self.home), str(instance_id)))

    def close(self) -> None:
        """Power off this home's VMs (the records stay: a later start boots them again)."""
        with _VMS_LOCK:
            keys = [k for k in _VMS if k[0] == str(self.home)]
            vms = [_VMS.pop(k) for k in keys]
            api = _APIS.pop(str(self.home), None)
            _TOKENS.pop(str(self.home), None)
        for vm in vms:
            vm.stop()
        if api is not None:
            api.stop()

    def _instance(self, instance_id: str, record: dict[str, Any]) -> Instance:
        vm = _VMS.get((str(self.home), instance_id))
        if vm is None:  # maider restarted (or the laptop slept): the "cloud" VM is still there
            vm = self._boot(instance_id, record, configured=True)
        return Instance(id=instance_id, label=record["label"], status=_status(vm, record),
                        region=record["region"], plan=record["plan"], ssh_host="127.0.0.1", ssh_port=vm.ssh_port,
                        created_at=datetime.fromisoformat(record["created_at"]), hourly_price=record["price"],
                        tags=tuple(record["tags"]))

    def _boot(self, instance_id: str, record: dict[str, Any], configured: bool) -> SimulatedVm:
        def remember_env(text: str) -> None:
            with _VMS_LOCK:
                records = self._load()
                if instance_id in records:
                    records[instance_id]["env_file"] = text
                    self._save(records)

        behaviour = VmBehaviour(**record["behaviour"])
        facts = read_cloud_config(record["user_data"])
        vm = SimulatedVm(facts.host_key_private, facts.authorized_keys, record["env_file"], behaviour,
                         configured=configured, on_env_written=remember_env)
        vm.start(record.get("ssh_port", 0))  # same host key, and the same port unless another program took it
        _VMS[(str(self.home), instance_id)] = vm
        if record.get("ssh_port") != vm.ssh_port:
            records = self._load()
            if instance_id in records:
                records[instance_id]["ssh_port"] = record["ssh_port"] = vm.ssh_port
                self._save(records)
        return vm

    def _next_instance_id(self, records: dict[str, dict[str, Any]]) -> str:
        """A fresh id, never one handed out before on this home, even for an instance deleted since (like a real
        cloud): a stale reference to a destroyed VM must not reach a new one. The last id is kept in a file."""
        try:
            last = int(self._last_id_path.read_text())
        except (OSError, ValueError):
            last = FIRST_INSTANCE_ID - 1
        instance_id = max(last, *(int(i) for i in records), FIRST_INSTANCE_ID - 1) + 1
        self._last_id_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._last_id_path.write_text(f"{instance_id}\n")
        return str(instance_id)

    def _load(self) -> dict[str, dict[str, Any]]:
        if not self._records_path.is_file():
            return {}
        return json.loads(self._records_path.read_text())

    def _save(self, records: dict[str, dict[str, Any]]) -> None:
        self._records_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self._records_path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(records, handle, indent=1)
        os.replace(tmp, self._records_path)


def _status(vm: SimulatedVm, record: dict[str, Any]) -> InstanceStatus:
    if vm.power == "running" or (vm.power == "booting" and vm.behaviour.ssh_never):
        return InstanceStatus.RUNNING
    if vm.power == "booting" and vm.boot_count == 0:
        age = (_utcnow() - datetime.fromisoformat(record["created_at"])).total_seconds()
        return InstanceStatus.PROVISIONING if age < vm.behaviour.boot_s / 2 else InstanceStatus.BOOTING
    return InstanceStatus.BOOTING


def _utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)
