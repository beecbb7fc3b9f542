"""maider's own table of GPU models, keyed from a provider plan.

Providers report how many GPUs a plan has but not what they can do; sizing and dtype rules need VRAM and compute
capability. Linode's g1 plans are Turing Quadro RTX 6000 with 24 GB (not the 48 GB "RTX 6000 Ada" the original
README claimed): no bf16, no FP8.

A plan id maider lists in ``LINODE_PLANS`` is known exactly (GPU model and count, usable offline); any other plan is
matched by its id or label against a few unambiguous names, and a plan that matches none has an *unknown* GPU: a
similar-looking name (an "RTX PRO 6000" is not a "Quadro RTX 6000") is never guessed into a wrong VRAM figure.
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
    def supports_fp4(self) -> bool:
        return self.compute_capability >= (10, 0)

    @property
    def supports_awq(self) -> bool:
        return self.compute_capability >= (7, 5)


RTX4000_ADA = GpuModel("rtx4000ada", "RTX 4000 Ada", 20.0, (8, 9))
QUADRO_RTX6000 = GpuModel("rtx6000", "Quadro RTX 6000", 24.0, (7, 5))
# Linode's g3 plans, for accounts granted access: 96 GB GDDR7, FP8 and FP4.
RTX_PRO_6000_BLACKWELL = GpuModel("rtxpro6000bw", "RTX PRO 6000 Blackwell", 96.0, (12, 0))
# Other clouds' GPUs (DigitalOcean, AWS) and the simulated cloud's.
L40S = GpuModel("l40s", "L40S", 48.0, (8, 9))
A100_80 = GpuModel("a100-80", "A100 80GB", 80.0, (8, 0))
A100_40 = GpuModel("a100-40", "A100 40GB", 40.0, (8, 0))
H100_80 = GpuModel("h100-80", "H100 80GB", 80.0, (9, 0))
H200 = GpuModel("h200", "H200", 141.0, (9, 0))
RTX6000_ADA = GpuModel("rtx6000ada", "RTX 6000 Ada", 48.0, (8, 9))
A10G = GpuModel("a10g", "A10G", 24.0, (8, 6))
L4 = GpuModel("l4", "L4", 24.0, (8, 9))
T4 = GpuModel("t4", "T4", 16.0, (7, 5))

GPU_MODELS: dict[str, GpuModel] = {m.key: m for m in (RTX4000_ADA, QUADRO_RTX6000, RTX_PRO_6000_BLACKWELL, L40S,
                                                       A100_80, A100_40, H100_80, H200, RTX6000_ADA, A10G, L4, T4)}


def _linode_plans() -> dict[str, tuple[GpuModel, int]]:
    plans: dict[str, tuple[GpuModel, int]] = {}
    for gpus, sizes in ((1, ("s", "m", "l", "xl")), (2, ("s", "m", "l")), (4, ("s", "m", "l"))):
        for size in sizes:
            plans[f"g2-gpu-rtx4000a{gpus}-{size}"] = (RTX4000_ADA, gpus)
    for gpus in (1, 2, 3, 4):
        plans[f"g1-gpu-rtx6000-{gpus}"] = (QUADRO_RTX6000, gpus)
    for gpus in (1, 2, 4):
        plans[f"g3-gpu-rtxpro6000-blackwell-{gpus}"] = (RTX_PRO_6000_BLACKWELL, gpus)
    return plans


# Linode's GPU plans by type id: (GPU model, GPU count). The fit check uses it when the Linode API cannot be reached.
LINODE_PLANS: dict[str, tuple[GpuModel, int]] = _linode_plans()

# Ordered: the first pattern that matches a plan id or label wins. Each names one GPU and nothing that looks like it.
_PLAN_PATTERNS: tuple[tuple[re.Pattern[str], GpuModel], ...] = (
    (re.compile(r"rtx ?pro ?6000.*blackwell|rtxpro6000-blackwell", re.I), RTX_PRO_6000_BLACKWELL),
    (re.compile(r"rtx ?4000 ?a(da)?\b|rtx4000a\d|gpu-4000adax\d", re.I), RTX4000_ADA),
    (re.compile(r"rtx ?6000 ?ada|gpu-6000adax\d", re.I), RTX6000_ADA),
    (re.compile(r"(?<![a-z])(quadro )?rtx ?6000(?! ?ada)(?!\w)|g1-gpu-rtx6000-\d", re.I), QUADRO_RTX6000),
    (re.compile(r"\bl40s\b|gpu-l40sx\d", re.I), L40S),
    (re.compile(r"\ba100\b.*\b40 ?gb|a100-40", re.I), A100_40),
    (re.compile(r"\ba100\b", re.I), A100_80),
    (re.compile(r"\bh100\b|gpu-h100x\d", re.I), H100_80),
    (re.compile(r"\bh200\b|gpu-h200x\d", re.I), H200),
    (re.compile(r"\ba10g\b", re.I), A10G),
    (re.compile(r"\bl4\b", re.I), L4),
    (re.compile(r"\bt4\b", re.I), T4),
)


def gpu_for_plan(plan_id: str, label: str = "") -> GpuModel | None:
    """Return the GPU model of a plan from its id or label, or None when maider does not know it."""
    if plan_id in LINODE_PLANS:
        return LINODE_PLANS[plan_id][0]
    for pattern, model in _PLAN_PATTERNS:
        if pattern.search(plan_id) or (label and pattern.search(label)):
            return model
    return None


def gpu_by_name(name: str) -> GpuModel | None:
    """A GPU a cloud names in its own API (DigitalOcean's ``gpu_info.model``, AWS's ``GpuInfo.Gpus[].Name``), or None.

    Matched with the same unambiguous patterns as plan names: an unknown name stays unknown.
    """
    spaced = name.replace("_", " ")  # DigitalOcean writes "nvidia_rtx_4000_ada"
    for pattern, model in _PLAN_PATTERNS:
        if pattern.search(spaced):
            return model
    return None


def gpu_of(plan_id: str, gpu_name: str | None) -> GpuModel | None:
    """The GPU of a session's plan: by plan id, else by the GPU name recorded at launch (AWS's ``g5.xlarge`` or your
    own host's name say nothing about the GPU; the name the provider reported does)."""
    model = gpu_for_plan(plan_id)
    if model is not None or not gpu_name:
        return model
    return next((m for m in GPU_MODELS.values() if m.name == gpu_name), None) or gpu_by_name(gpu_name)
