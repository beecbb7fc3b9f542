"""maider's own table of GPU models, keyed from a provider plan.

Providers report how many GPUs a plan has but not what they can do; sizing and dtype rules need VRAM and compute
capability. Linode's g1 plans are Turing Quadro RTX 6000 with 24 GB (not the 48 GB "RTX 6000 Ada" the original
README claimed): no bf16, no FP8.
"""
from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class GpuModel:
    key: str  # short id, e.g. "rtx4000ada"
    name: str  # marketing name
    vram_gb: float  # usable memory per GPU, GB (10^9 bytes)
    compute_capability: tuple[int, int]  # (major, minor), e.g. (8, 9)

    @property
    def sm(self) -> str:
        return f"sm_{self.compute_capability[0]}{self.compute_capability[1]}"

    @property
    def supports_bf16(self) -> bool:
        return self.compute_capability >= (8, 0)

    @property
    def supports_fp8(self) -> bool:
        return self.compute_capability >= (8, 9)

    @property
    def supports_awq(self) -> bool:
        return self.compute_capability >= (7, 5)


RTX4000_ADA = GpuModel("rtx4000ada", "RTX 4000 Ada", 20.0, (8, 9))
QUADRO_RTX6000 = GpuModel("rtx6000", "Quadro RTX 6000", 24.0, (7, 5))
# Not offered by Linode today but handy for other providers and the simulated cloud.
L40S = GpuModel("l40s", "L40S", 48.0, (8, 9))
A100_80 = GpuModel("a100-80", "A100 80GB", 80.0, (8, 0))
H100_80 = GpuModel("h100-80", "H100 80GB", 80.0, (9, 0))

GPU_MODELS: dict[str, GpuModel] = {m.key: m for m in (RTX4000_ADA, QUADRO_RTX6000, L40S, A100_80, H100_80)}

# Ordered: the first pattern that matches a plan id or label wins.
_PLAN_PATTERNS: tuple[tuple[re.Pattern[str], GpuModel], ...] = (
    (re.compile(r"rtx4000a|rtx ?4000 ?ada", re.I), RTX4000_ADA),
    (re.compile(r"rtx6000|rtx ?6000", re.I), QUADRO_RTX6000),
    (re.compile(r"l40s", re.I), L40S),
    (re.compile(r"a100", re.I), A100_80),
    (re.compile(r"h100", re.I), H100_80),
)


def gpu_for_plan(plan_id: str, label: str = "") -> GpuModel | None:
    """Return the GPU model of a plan from its id or label, or None when maider does not know it."""
    for pattern, model in _PLAN_PATTERNS:
        if pattern.search(plan_id) or (label and pattern.search(label)):
            return model
    return None
