"""The demo cloud: instances are simulated VMs configured by the cloud-config maider renders, reached over real SSH."""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.domain import vm_contract as vc
from app.domain.cloud_init import CloudInitInputs, render_user_data
from app.domain.vllm_env import Images, VllmSettings, render_env
from app.providers.base import InstanceSpec, InstanceStatus, InvalidRequest, NotFound, Provider
from app.providers.simulated import SimulatedProvider, demo_behaviour
from app.remote import KeyPair, RemoteHost, load_private_key, load_public_key
from app.simulator.vm import VmBehaviour
from engine_helpers import wait_for

API_KEY = "sk-provider-test-31"


def make_spec(keys: tuple[KeyPair, KeyPair], label: str = "maider-s1",
              model: str = "Qwen/Qwen2.5-Coder-7B-Instruct", plan: str = "g2-gpu-rtx4000a1-s") -> InstanceSpec:
    host, client = keys
    env = render_env(VllmSettings(model, "coder", 16384, 0.9, 1, 1), API_KEY, None, "webui-secret", Images())
    user_data = render_user_data(CloudInitInputs(host.private_openssh, host.public_openssh, client.public_openssh,
                                                 env, model_id=model))
    return InstanceSpec(label=label, region="us-ord", plan=plan, user_data=user_data)


@pytest.fixture
def provider(tmp_path: Path) -> Iterator[SimulatedProvider]:
    cloud = SimulatedProvider(tmp_path / "home", behaviour_for=lambda spec: VmBehaviour.fast(boot_s=0.3))
    yield cloud
    cloud.close()


def ssh(keys: tuple[KeyPair, KeyPair], port: int) -> RemoteHost:
    host, client = keys
    return RemoteHost("127.0.0.1", port, load_public_key(host.public_openssh),
                      load_private_key(client.private_openssh), connect_timeout=2)


def test_create_boots_a_vm_that_answers_with_maiders_keys(provider, keys):
    assert isinstance(provider, Provider)
    instance = provider.create(make_spec(keys))
    assert instance.status is InstanceStatus.PROVISIONING
    assert (instance.ssh_host, instance.hourly_price, instance.label) == ("127.0.0.1", 0.52, "maider-s1")
    assert "maider" in instance.tags and instance.created_at is not None
    wait_for(lambda: provider.get(instance.id).status is InstanceStatus.RUNNING)
    remote = ssh(keys, instance.ssh_port)
    try:
        wait_for(lambda: remote.run(vc.CMD_READ_ENV).ok)
        assert f"VLLM_API_KEY='{API_KEY}'" in remote.run(vc.CMD_READ_ENV).stdout
    finally:
        remote.close()


def test_create_is_idempotent_by_label_and_delete_by_id(provider, keys):
    first = provider.create(make_spec(keys))
    again = provider.create(make_spec(keys))
    assert again.id == first.id and len(provider.list_owned()) == 1
    other = provider.create(make_spec(keys, label="maider-s2"))
    assert other.id != first.id and {i.id for i in provider.list_owned()} == {first.id, other.id}
    provider.delete(first.id)
    provider.delete(first.id)
    with pytest.raises(NotFound):
        provider.get(first.id)
    assert [i.id for i in provider.list_owned()] == [other.id]


def test_unknown_instance_and_bad_requests(provider, keys):
    with pytest.raises(NotFound):
        provider.get("12345")
    with pytest.raises(InvalidRequest):
        provider.create(make_spec(keys, plan="g1-gpu-rtx6000-1"))  # not offered in us-ord
    spec = make_spec(keys)
    with pytest.raises(InvalidRequest):
        provider.create(InstanceSpec(label="x", region="us-ord", plan=spec.plan, user_data="#!/bin/sh\n"))


def test_a_restarted_maider_sees_its_instances_and_their_vms_boot_again_configured(tmp_path, keys):
    home = tmp_path / "home"
    fast = lambda spec: VmBehaviour.fast()  # noqa: E731
    before = SimulatedProvider(home, behaviour_for=fast)
    instance = before.create(make_spec(keys))
    remote = ssh(keys, instance.ssh_port)
    wait_for(lambda: before.vm(instance.id).is_ssh_up)
    wait_for(lambda: json.loads(remote.run(vc.CMD_CLOUD_INIT_STATUS).stdout)["status"] == "done")
    new_env = remote.run(vc.CMD_READ_ENV).stdout.replace("16384", "8192")
    remote.run(vc.CMD_WRITE_ENV, stdin=new_env.encode())
    remote.close()
    before.close()  # maider exits: its in-process VMs go with it
    assert (home / "simulated" / "instances.json").stat().st_mode & 0o777 == 0o600

    after = SimulatedProvider(home, behaviour_for=fast)
    try:
        again = after.get(instance.id)
        assert again.created_at == instance.created_at
        remote = ssh(keys, again.ssh_port)
        wait_for(lambda: after.vm(instance.id).is_ssh_up)
        assert json.loads(remote.run(vc.CMD_CLOUD_INIT_STATUS).stdout)["status"] == "done"
        assert remote.run(vc.CMD_GPU_QUERY).ok  # no second reboot needed
        assert "VLLM_MAX_MODEL_LEN='8192'" in remote.run(vc.CMD_READ_ENV).stdout
        wait_for(lambda: remote.run(vc.CMD_READ_STAGE).stdout.strip() == "running")
        remote.close()
    finally:
        after.close()


def test_demo_model_ids_select_a_failure_and_plans_set_the_gpus(keys):
    assert demo_behaviour(make_spec(keys)).vllm_failure is None
    failing = demo_behaviour(make_spec(keys, model="Qwen/Qwen2.5-Coder-7B-Instruct-demo-fail-kv"))
    assert failing.vllm_failure == "kv_too_small" and failing.fitting_len == 8192
    turing = demo_behaviour(InstanceSpec("x", "us-east", "g1-gpu-rtx6000-2", make_spec(keys).user_data))
    assert (turing.gpus, turing.gpu_name, turing.gpu_memory_mb) == (2, "Quadro RTX 6000", 24576)
