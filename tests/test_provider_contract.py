"""The provider contract, the same for every cloud: each world's real provider class against its fake far side.

What the engine relies on (``app.providers.base.Provider``): plans with GPU facts and prices; create idempotent by
label, even after a 5xx that followed a real create; only "not found" means gone; delete idempotent; list_owned only
maider's; every refusal a typed error the engine can act on. The journey at the end runs up -> ready -> down through
the engine with a simulated VM behind the fake: one create, one delete, nothing left on the account.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from app.providers.base import (
    OWNER_TAG, AuthError, CapacityError, InvalidRequest, NotFound, Provider, ProviderError, RateLimited,
    TransientError,
)
from worlds import FAULTS, WORLDS, World, open_world

EXPECTED_ERROR: dict[str, type[ProviderError]] = {
    "auth": AuthError, "capacity": CapacityError, "rate_limit": RateLimited, "bad_request": InvalidRequest,
    "server_error": TransientError,
}
STORM = 50  # more answers than any provider retries: the typed error must come out, never a hang or a raw SDK error


@pytest.fixture(params=WORLDS)
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    with open_world(request.param, tmp_path) as opened:
        yield opened


def destroy(provider: Provider, instance_id: str, attempts: int = 40) -> None:
    """Delete until ``get`` answers NotFound, as the engine's destroy step does."""
    import time

    for _ in range(attempts):
        provider.delete(instance_id)
        try:
            provider.get(instance_id)
        except NotFound:
            return
        time.sleep(0.05)
    raise AssertionError(f"{instance_id} never confirmed gone")


def test_plans_have_gpu_facts_and_prices(world: World) -> None:
    plans = world.provider.gpu_plans()
    assert plans, "no GPU plans"
    for plan in plans:
        assert plan.gpus >= 1 and plan.hourly_price >= 0, plan
    known = [p for p in plans if p.gpu is not None]
    assert known and all(p.vram_gb_per_gpu > 0 for p in known)
    offered = world.spec("contract-plans")
    assert offered.plan in {p.id for p in world.provider.gpu_plans(offered.region)}


def test_create_is_idempotent_by_label(world: World) -> None:
    spec = world.spec("maider-contract-idem")
    first = world.provider.create(spec)
    second = world.provider.create(spec)
    assert first.id == second.id and world.creates() == 1
    assert first.label == spec.label and OWNER_TAG in first.tags


def test_a_5xx_after_a_real_create_makes_no_second_instance(world: World) -> None:
    spec = world.spec("maider-contract-5xx")
    world.fail_after_create()
    try:
        instance = world.provider.create(spec)
    except TransientError:  # a provider may report the ambiguity; the engine then calls create again
        instance = world.provider.create(spec)
    assert world.creates() == 1 and world.live() == [instance.id]


def test_only_not_found_means_gone(world: World) -> None:
    instance = world.provider.create(world.spec("maider-contract-gone"))
    world.fail_next("get", "server_error", times=STORM)
    with pytest.raises(TransientError):
        world.provider.get(instance.id)
    world.heal()
    world.fail_next("get", "auth", times=STORM)
    with pytest.raises(AuthError):
        world.provider.get(instance.id)
    world.heal()
    assert world.provider.get(instance.id).id == instance.id  # still there: neither answer meant gone
    destroy(world.provider, instance.id)
    with pytest.raises(NotFound):
        world.provider.get(instance.id)
    assert world.live() == []


def test_delete_is_idempotent_and_leaves_nothing(world: World) -> None:
    instance = world.provider.create(world.spec("maider-contract-del"))
    destroy(world.provider, instance.id)
    world.provider.delete(instance.id)  # gone already: succeeds
    assert world.deletes() == 1 and world.live() == []
    assert world.leftovers() == []


def test_list_owned_finds_only_maiders_instances(world: World) -> None:
    foreign = world.add_foreign("someone-elses-box")
    mine = world.provider.create(world.spec("maider-contract-owned"))
    owned = world.provider.list_owned()
    assert [i.id for i in owned] == [mine.id]
    assert foreign in world.live()


@pytest.mark.parametrize("fault", FAULTS)
def test_create_refusals_are_typed(world: World, fault: str) -> None:
    if fault not in world.faults:
        pytest.skip(f"{world.name} has no '{fault}' answer")
    world.fail_next("create", fault, times=STORM)
    with pytest.raises(EXPECTED_ERROR[fault]) as raised:
        world.provider.create(world.spec(f"maider-contract-{fault}"))
    assert str(raised.value), "the error must say what happened"
    assert world.live() == []


@pytest.mark.parametrize("fault", ["auth", "rate_limit", "server_error"])
@pytest.mark.parametrize("operation", ["get", "delete"])
def test_get_and_delete_refusals_are_typed(world: World, operation: str, fault: str) -> None:
    if fault not in world.faults:
        pytest.skip(f"{world.name} has no '{fault}' answer")
    instance = world.provider.create(world.spec(f"maider-contract-{operation}-{fault}"))
    world.fail_next(operation, fault, times=STORM)
    with pytest.raises(EXPECTED_ERROR[fault]):
        getattr(world.provider, operation)(instance.id)
    world.heal()
    assert instance.id in world.live(), "a refused call must never count as deleted"
