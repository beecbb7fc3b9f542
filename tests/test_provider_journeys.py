"""Every cloud end to end: up -> ready -> down through the engine, a simulated VM behind each fake far side."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.engine.identity import load_identity
from app.models import SessionState
from app.services import sessions as sessions_service
from app.simulator.vm import VmBehaviour, vm_from_user_data
from engine_helpers import FAST_TIMINGS, drive, in_state, launch, write_project
from worlds import WORLDS, World, open_world


@pytest.fixture(params=WORLDS)
def world_app(request: pytest.FixtureRequest, app, tmp_path: Path) -> Iterator[tuple[World, list]]:
    vms: list = []
    with open_world(request.param, tmp_path) as world:
        def start_vm(user_data: str) -> tuple[str, int]:
            vm = vm_from_user_data(user_data, VmBehaviour.fast())
            vm.start()
            vms.append(vm)
            return "127.0.0.1", vm.ssh_port

        world.boot_vms(start_vm)
        app.config["MAIDER_PROVIDER_FACTORY"] = lambda name, settings, home: world.provider
        app.config["MAIDER_TIMINGS"] = FAST_TIMINGS
        write_project(Path(app.config["MAIDER_WORKDIR"]), *world.project_env())
        try:
            yield world, vms
        finally:
            from app.engine.runtime import runtime

            runtime(app).close()
            for vm in vms:
                vm.stop()


def test_up_ready_down_with_one_create_one_delete_and_nothing_left(app, world_app) -> None:
    world, vms = world_app
    workdir = Path(app.config["MAIDER_WORKDIR"])
    name = launch(app, "journey", workdir)
    ready = drive(app, name, in_state(SessionState.READY, SessionState.FAILED), timeout=60)
    assert ready.status == "ready", ready.status_message
    assert ready.provider == world.name
    with app.app_context():
        key = load_identity(Path(app.config["MAIDER_HOME"]), ready.uid).api_key
    answer = httpx.get(f"http://127.0.0.1:{ready.api_port}/v1/models", headers={"Authorization": f"Bearer {key}"})
    assert [m["id"] for m in answer.json()["data"]] == ["coder"]

    with app.app_context():
        sessions_service.request_destroy(name, actor="tester")
    gone = drive(app, name, in_state(SessionState.DESTROYED), timeout=60)
    assert gone.destroyed_at is not None
    assert world.creates() == 1 and world.deletes() == 1
    assert world.live() == [] and world.leftovers() == []
