"""Linode's newer GPU plans are in maider's table; a plan maider does not know has an unknown GPU, never a guess."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from app.domain.gpu_catalog import LINODE_PLANS, RTX4000_ADA, RTX6000_ADA, RTX_PRO_6000_BLACKWELL, gpu_for_plan
from app.providers.linode import LinodeProvider
from fakes.linode_api import FakeLinodeApi


def _gpu_type(type_id: str, label: str, gpus: int, hourly: float) -> dict:
    return {"id": type_id, "label": label, "class": "gpu", "gpus": gpus, "memory": 131072 * gpus, "vcpus": 16 * gpus,
            "disk": 1024000, "transfer": 16000, "network_out": 10000, "successor": None, "accelerated_devices": 0,
            "price": {"hourly": hourly, "monthly": hourly * 730}, "region_prices": [],
            "addons": {"backups": {"price": {"hourly": 0.0, "monthly": 0.0}, "region_prices": []}}}


@pytest.fixture
def api() -> Iterator[FakeLinodeApi]:
    with FakeLinodeApi() as fake:
        fake.types += [
            _gpu_type("g3-gpu-rtxpro6000-blackwell-1", "RTX PRO 6000 Blackwell x1", 1, 3.5),
            _gpu_type("g3-gpu-rtxpro6000-blackwell-4", "RTX PRO 6000 Blackwell x4", 4, 14.0),
            _gpu_type("g2-gpu-rtx4000a2-l", "RTX4000 Ada x2 Large", 2, 1.9),
            # a plan maider has never heard of, named like the ones it knows
            _gpu_type("g4-gpu-rtxpro6000-x8", "RTX PRO 6000 Server x8", 8, 30.0),
            _gpu_type("g9-gpu-rtx6000ada-1", "RTX 6000 Ada x1", 1, 2.0),
        ]
        yield fake


def test_blackwell_plans_are_96_gb_with_fp8_and_fp4(api: FakeLinodeApi) -> None:
    plans = {p.id: p for p in LinodeProvider(api.token, api.base_url, sleep=lambda _s: None).gpu_plans()}
    for plan_id, gpus in (("g3-gpu-rtxpro6000-blackwell-1", 1), ("g3-gpu-rtxpro6000-blackwell-4", 4)):
        plan = plans[plan_id]
        assert plan.gpu is RTX_PRO_6000_BLACKWELL and plan.gpus == gpus
        assert plan.vram_gb_per_gpu == 96.0 and plan.gpu.compute_capability == (12, 0)
        assert plan.gpu.supports_fp8 and plan.gpu.supports_fp4 and plan.gpu.supports_bf16
    assert plans["g2-gpu-rtx4000a2-l"].gpu is RTX4000_ADA


def test_an_unknown_plan_has_an_unknown_gpu_not_a_lookalike(api: FakeLinodeApi) -> None:
    plans = {p.id: p for p in LinodeProvider(api.token, api.base_url, sleep=lambda _s: None).gpu_plans()}
    # "RTX PRO 6000" and "RTX 6000 Ada" are not the 24 GB Turing Quadro RTX 6000
    assert plans["g4-gpu-rtxpro6000-x8"].gpu is None and plans["g4-gpu-rtxpro6000-x8"].vram_gb_per_gpu == 0.0
    assert plans["g9-gpu-rtx6000ada-1"].gpu is RTX6000_ADA  # the 48 GB Ada card, a GPU maider knows by name
    assert gpu_for_plan("g3-gpu-rtxpro6000-blackwell-2") is RTX_PRO_6000_BLACKWELL


@pytest.mark.parametrize("plan_id, gpus", [
    ("g2-gpu-rtx4000a1-l", 1), ("g2-gpu-rtx4000a2-l", 2), ("g2-gpu-rtx4000a4-l", 4), ("g1-gpu-rtx6000-3", 3),
    ("g3-gpu-rtxpro6000-blackwell-2", 2),
])
def test_the_built_in_table_knows_each_linode_plan_offline(plan_id: str, gpus: int) -> None:
    model, count = LINODE_PLANS[plan_id]
    assert count == gpus and gpu_for_plan(plan_id) is model
