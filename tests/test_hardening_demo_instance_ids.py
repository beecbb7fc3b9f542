"""Demo instance ids are never handed out twice, like a real cloud's: a stale reference to a destroyed demo VM (an
old event, a second laptop's database) must never reach a newer VM."""
from __future__ import annotations

from app.providers.simulated import SimulatedProvider
from app.simulator.vm import VmBehaviour
from test_provider_simulated import make_spec


def _cloud(home) -> SimulatedProvider:
    return SimulatedProvider(home, behaviour_for=lambda spec: VmBehaviour.fast(boot_s=0.3))


def test_an_id_is_not_reused_after_delete_nor_after_a_restart(tmp_path, keys):
    home = tmp_path / "home"
    cloud = _cloud(home)
    try:
        first = cloud.create(make_spec(keys, label="maider-a")).id
        second = cloud.create(make_spec(keys, label="maider-b")).id
        cloud.delete(second)
        third = cloud.create(make_spec(keys, label="maider-c")).id
        cloud.delete(third)
        cloud.delete(first)
    finally:
        cloud.close()
    restarted = _cloud(home)  # maider restarted: a new provider on the same home, and no instance left
    try:
        fourth = restarted.create(make_spec(keys, label="maider-d")).id
    finally:
        restarted.close()
    assert len({first, second, third, fourth}) == 4
    assert int(fourth) > int(third) > int(second) > int(first)
