"""The demo cloud: Linode's GPU catalog, with VMs simulated on this laptop.

Used by ``maider serve --demo`` and by tests. Regions and plans mirror Linode's public GPU offer so every screen looks
real; nothing here costs money.
"""
from __future__ import annotations

from pathlib import Path

from app.domain.gpu_catalog import gpu_for_plan
from app.providers.base import GpuPlan, Instance, InstanceSpec, Region

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


class SimulatedProvider:
    """A cloud whose VMs run on this laptop (see the Provider contract in ``app.providers.base``)."""

    name = "simulated"

    def __init__(self, home: Path) -> None:
        self.home = Path(home)

    def regions(self) -> list[Region]:
        return list(SIMULATED_REGIONS)

    def gpu_plans(self, region: str | None = None) -> list[GpuPlan]:
        return simulated_plans(region)

    def create(self, spec: InstanceSpec) -> Instance:
        raise NotImplementedError("simulated VMs arrive with the simulator")

    def get(self, instance_id: str) -> Instance:
        raise NotImplementedError("simulated VMs arrive with the simulator")

    def delete(self, instance_id: str) -> None:
        raise NotImplementedError("simulated VMs arrive with the simulator")

    def list_owned(self) -> list[Instance]:
        return []
