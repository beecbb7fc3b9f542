"""AWS facts maider keeps itself -- the GPU families it offers, an on-demand price table, region names -- and the
pure reading of EC2's and the Pricing API's answers.

EC2's own API has no prices; the Pricing API has them but answers slowly and needs its own permission, so a dated
table covers the common regions and ``AwsProvider.refresh_prices()`` replaces it from the Pricing API on request.
"""
from __future__ import annotations

import json
from typing import Any

from app.domain.gpu_catalog import gpu_by_name
from app.providers.base import GpuPlan

# GPU families vLLM can use: NVIDIA GPUs on x86_64 (g5g's T4G is an Arm host; g6f/gr6f are fractional GPUs; the
# Inferentia/Trainium families are not GPUs). p-families need a quota most accounts have to ask for.
GPU_FAMILIES = ("g4dn", "g5", "g6", "g6e", "gr6", "p4d", "p4de", "p5", "p5e", "p5en", "p6-b200")
GPU_TYPE_PATTERNS = tuple(f"{family}.*" for family in GPU_FAMILIES)

# On-demand USD/h, Linux, shared tenancy, from https://aws.amazon.com/ec2/pricing/on-demand/ (AWS price list as
# published 2025-2026; g5.xlarge $1.006 and g6e.xlarge $1.861 re-checked 2026-12-01). US East (N. Virginia) and
# US West (Oregon) charge the same for these families. The p-families are left out on purpose: AWS cut their prices
# in 2025 and may again -- run refresh_prices() (the Pricing API) for those and for other regions.
PRICES_AS_OF = "2026-12-01"
_US_PRICES: dict[str, float] = {
    "g4dn.xlarge": 0.526, "g4dn.2xlarge": 0.752, "g4dn.4xlarge": 1.204, "g4dn.8xlarge": 2.176,
    "g4dn.12xlarge": 3.912, "g4dn.16xlarge": 4.352,
    "g5.xlarge": 1.006, "g5.2xlarge": 1.212, "g5.4xlarge": 1.624, "g5.8xlarge": 2.448, "g5.12xlarge": 5.672,
    "g5.16xlarge": 4.096, "g5.24xlarge": 8.144, "g5.48xlarge": 16.288,
    "g6.xlarge": 0.8048, "g6.2xlarge": 0.9776, "g6.4xlarge": 1.3232, "g6.8xlarge": 2.0144, "g6.12xlarge": 4.6016,
    "g6.16xlarge": 3.3968, "g6.24xlarge": 6.6752, "g6.48xlarge": 13.3504,
    "g6e.xlarge": 1.861, "g6e.2xlarge": 2.24208, "g6e.4xlarge": 3.00424, "g6e.8xlarge": 4.52856,
    "g6e.12xlarge": 10.49264, "g6e.16xlarge": 7.57719, "g6e.24xlarge": 15.06559, "g6e.48xlarge": 30.13118,
}
ON_DEMAND_USD: dict[str, dict[str, float]] = {"us-east-1": dict(_US_PRICES), "us-west-2": dict(_US_PRICES)}

PRICING_REGION = "us-east-1"  # the Pricing API answers from us-east-1 (and two others) for every region

# Region id -> (name as the console shows it, ISO country). Regions not listed show their id and no country.
REGION_NAMES: dict[str, tuple[str, str]] = {
    "us-east-1": ("US East (N. Virginia)", "us"), "us-east-2": ("US East (Ohio)", "us"),
    "us-west-1": ("US West (N. California)", "us"), "us-west-2": ("US West (Oregon)", "us"),
    "ca-central-1": ("Canada (Central)", "ca"), "ca-west-1": ("Canada West (Calgary)", "ca"),
    "sa-east-1": ("South America (Sao Paulo)", "br"), "mx-central-1": ("Mexico (Central)", "mx"),
    "eu-west-1": ("Europe (Ireland)", "ie"), "eu-west-2": ("Europe (London)", "gb"),
    "eu-west-3": ("Europe (Paris)", "fr"), "eu-central-1": ("Europe (Frankfurt)", "de"),
    "eu-central-2": ("Europe (Zurich)", "ch"), "eu-north-1": ("Europe (Stockholm)", "se"),
    "eu-south-1": ("Europe (Milan)", "it"), "eu-south-2": ("Europe (Spain)", "es"),
    "ap-northeast-1": ("Asia Pacific (Tokyo)", "jp"), "ap-northeast-2": ("Asia Pacific (Seoul)", "kr"),
    "ap-northeast-3": ("Asia Pacific (Osaka)", "jp"), "ap-southeast-1": ("Asia Pacific (Singapore)", "sg"),
    "ap-southeast-2": ("Asia Pacific (Sydney)", "au"), "ap-southeast-3": ("Asia Pacific (Jakarta)", "id"),
    "ap-southeast-4": ("Asia Pacific (Melbourne)", "au"), "ap-southeast-5": ("Asia Pacific (Malaysia)", "my"),
    "ap-south-1": ("Asia Pacific (Mumbai)", "in"), "ap-south-2": ("Asia Pacific (Hyderabad)", "in"),
    "ap-east-1": ("Asia Pacific (Hong Kong)", "hk"), "me-central-1": ("Middle East (UAE)", "ae"),
    "me-south-1": ("Middle East (Bahrain)", "bh"), "il-central-1": ("Israel (Tel Aviv)", "il"),
    "af-south-1": ("Africa (Cape Town)", "za"),
}


def table_price(region: str | None, instance_type: str) -> float:
    """The table's USD/h for a type in a region; 0.0 (unknown) when the table has no figure."""
    return ON_DEMAND_USD.get(region or "", {}).get(instance_type, 0.0)


def pricing_filters(region: str, instance_type: str) -> list[dict[str, str]]:
    """Pricing API filters for the one product maider pays for: on-demand Linux, shared tenancy, no extra software."""
    wanted = {"ServiceCode": "AmazonEC2", "instanceType": instance_type, "regionCode": region, "tenancy": "Shared",
              "operatingSystem": "Linux", "preInstalledSw": "NA", "capacitystatus": "Used",
              "licenseModel": "No License required"}
    return [{"Type": "TERM_MATCH", "Field": field, "Value": value} for field, value in wanted.items()
            if field != "ServiceCode"]


def on_demand_usd(price_item: str | dict[str, Any]) -> float | None:
    """The hourly USD price in one Pricing API ``PriceList`` entry (a JSON string), or None when it has none."""
    item = json.loads(price_item) if isinstance(price_item, str) else price_item
    for term in ((item.get("terms") or {}).get("OnDemand") or {}).values():
        for dimension in (term.get("priceDimensions") or {}).values():
            if dimension.get("unit") not in ("Hrs", "Hours"):
                continue
            try:
                price = float((dimension.get("pricePerUnit") or {}).get("USD", ""))
            except ValueError:
                continue
            if price > 0:
                return price
    return None


def gpu_plan(raw_type: dict[str, Any], region: str, price: float, offered: bool) -> GpuPlan | None:
    """A plan from one DescribeInstanceTypes entry; None for a type without NVIDIA GPUs."""
    gpus = [g for g in (raw_type.get("GpuInfo") or {}).get("Gpus") or () if g.get("Manufacturer") == "NVIDIA"]
    count = sum(int(g.get("Count") or 0) for g in gpus)
    if not count:
        return None
    first = gpus[0]
    memory_gb = round(int((first.get("MemoryInfo") or {}).get("SizeInMiB") or 0) / 1024)
    name = str(first.get("Name") or "")
    type_id = raw_type["InstanceType"]
    return GpuPlan(
        # the memory tells AWS's one name "A100" apart: 40 GB (p4d) and 80 GB (p4de)
        id=type_id, label=f"{type_id} ({count}x NVIDIA {name} {memory_gb} GB)", gpus=count,
        gpu=gpu_by_name(f"{name} {memory_gb}GB"), hourly_price=price,
        memory_mb=int((raw_type.get("MemoryInfo") or {}).get("SizeInMiB") or 0),
        vcpus=int((raw_type.get("VCpuInfo") or {}).get("DefaultVCpus") or 0),
        regions=(region,) if offered else (),
    )
