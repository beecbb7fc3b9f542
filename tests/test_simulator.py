"""The simulated VM as maider sees it: real SSH (paramiko client) to the fake sshd, real HTTP to the fake vLLM."""
from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
import yaml

from app.domain import vm_contract as vc
from app.remote import KeyPair, RemoteHost, load_private_key, load_public_key
from app.simulator.fake_vllm import FakeVllmConfig, FakeVllmServer
from app.simulator.vm import SimulatedVm, VmBehaviour, read_cloud_config, vm_from_user_data
from engine_helpers import wait_for

API_KEY = "sk-test-4f1d9a"
ENV = (f"MODEL_ID=Qwen/Qwen2.5-Coder-7B-Instruct\nSERVED_MODEL_NAME=coder\nVLLM_API_KEY='{API_KEY}'\n"
       "VLLM_MAX_MODEL_LEN=32768\nVLLM_GPU_MEMORY_UTILIZATION=0.9\n")


@pytest.fixture
def make_vm(keys: tuple[KeyPair, KeyPair]) -> Iterator[Callable[..., SimulatedVm]]:
    host, client = keys
    vms: list[SimulatedVm] = []

    def make(env: str = ENV, configured: bool = False, **behaviour: object) -> SimulatedVm:
        vm = SimulatedVm(host.private_openssh, [client.public_openssh], env, VmBehaviour.fast(**behaviour),
                         configured=configured)
        vm.start()
        vms.append(vm)
        return vm

    yield make
    for vm in vms:
        vm.stop()


@pytest.fixture
def ssh_to(keys: tuple[KeyPair, KeyPair]) -> Iterator[Callable[[SimulatedVm], RemoteHost]]:
    host, client = keys
    remotes: list[RemoteHost] = []

    def connect(vm: SimulatedVm) -> RemoteHost:
        remote = RemoteHost("127.0.0.1", vm.ssh_port, load_public_key(host.public_openssh),
                            load_private_key(client.private_openssh), connect_timeout=2)
        remotes.append(remote)
        wait_for(lambda: _try_connect(remote))
        return remote

    yield connect
    for remote in remotes:
        remote.close()


def _try_connect(remote: RemoteHost) -> bool:
    try:
        remote.connect()
    except Exception:  # noqa: BLE001 -- booting: refused until SSH is up
        return False
    return True


def _stage(remote: RemoteHost) -> str:
    return remote.run(vc.CMD_READ_STAGE).stdout.strip()


def test_fresh_vm_goes_through_cloud_init_reboot_and_stack_start(make_vm, ssh_to):
    vm = make_vm()
    remote = ssh_to(vm)
    first_boot = remote.run(vc.CMD_BOOT_ID).stdout.strip()
    status = json.loads(remote.run(vc.CMD_CLOUD_INIT_STATUS).stdout)
    assert status["status"] == "running"
    wait_for(lambda: json.loads(remote.run(vc.CMD_CLOUD_INIT_STATUS).stdout)["status"] == "done")
    assert "finished at" in remote.run(vc.CMD_CLOUD_INIT_LOG_TAIL).stdout

    no_driver = remote.run(vc.CMD_GPU_QUERY)
    assert no_driver.exit_code == 9 and "couldn't communicate with the NVIDIA driver" in no_driver.stdout
    assert remote.run(vc.CMD_START_STACK).exit_code == 1  # the unit needs the GPU

    assert remote.run(vc.CMD_REBOOT).exit_code == 0
    wait_for(lambda: not remote.is_alive())  # a reboot drops the connection
    wait_for(lambda: _try_connect(remote))
    assert remote.run(vc.CMD_BOOT_ID).stdout.strip() != first_boot
    gpus = remote.run(vc.CMD_GPU_QUERY)
    assert gpus.exit_code == 0 and gpus.stdout.startswith("0, NVIDIA RTX 4000 Ada Generation, 20475, ")

    assert remote.run(vc.CMD_START_STACK).exit_code == 0
    stages = {_stage(remote)}
    wait_for(lambda: stages.add(_stage(remote)) or "running" in stages)
    assert stages >= {"pulling", "running"}
    logs = remote.run(vc.CMD_VLLM_LOGS).stdout
    assert "Loading weights took" in logs and "Model loading took" in logs
    assert logs.rstrip().endswith("Application startup complete.")
    assert API_KEY not in logs
    models = httpx.get(f"http://127.0.0.1:{vm.vllm.port}/v1/models",
                       headers={"Authorization": f"Bearer {API_KEY}"}).json()
    assert models["data"][0]["id"] == "coder" and models["data"][0]["root"] == "Qwen/Qwen2.5-Coder-7B-Instruct"


def test_unknown_command_is_not_found_and_logs_before_start_say_no_container(make_vm, ssh_to):
    remote = ssh_to(make_vm(configured=True))
    result = remote.run("docker ps")
    assert result.exit_code == 127 and "command not found" in result.stderr


def test_env_write_and_recreate_reload_the_model_from_the_weight_cache(make_vm, ssh_to):
    vm = make_vm(configured=True, load_s=0.5)
    remote = ssh_to(vm)
    wait_for(lambda: _stage(remote) == "running")
    new_env = ENV.replace("Qwen2.5-Coder-7B-Instruct", "Qwen2.5-Coder-14B-Instruct-AWQ")
    assert remote.run(vc.CMD_WRITE_ENV, stdin=new_env.encode()).exit_code == 0
    assert remote.run(vc.CMD_READ_ENV).stdout == new_env
    recreate = remote.run(vc.CMD_RECREATE_VLLM)
    assert recreate.exit_code == 0 and "Recreated" in recreate.stderr
    wait_for(lambda: vm.vllm is not None)
    models = httpx.get(f"http://127.0.0.1:{vm.vllm.port}/v1/models",
                       headers={"Authorization": f"Bearer {API_KEY}"}).json()
    assert models["data"][0]["root"] == "Qwen/Qwen2.5-Coder-14B-Instruct-AWQ"

    remote.run(vc.CMD_WRITE_ENV, stdin=ENV.encode())  # back to the first model: cached, so faster
    started = time.monotonic()
    remote.run(vc.CMD_RECREATE_VLLM)
    wait_for(lambda: vm.vllm is not None and "Application startup complete." in remote.run(vc.CMD_VLLM_LOGS).stdout)
    assert time.monotonic() - started < 0.45


@pytest.mark.parametrize("failure, expected, fix", [
    ("kv_too_small", "the estimated maximum model length is 8192",
     ("VLLM_MAX_MODEL_LEN=32768", "VLLM_MAX_MODEL_LEN=8192")),
    ("warmup_oom", "CUDA out of memory occurred when warming up sampler",
     ("VLLM_MAX_MODEL_LEN", "VLLM_ENFORCE_EAGER=true\nVLLM_MAX_MODEL_LEN")),
    ("bf16_turing", "Bfloat16 is only supported on GPUs with compute capability of at least 8.0",
     ("VLLM_MAX_MODEL_LEN", "VLLM_DTYPE=half\nVLLM_MAX_MODEL_LEN")),
])
def test_healable_start_failures_log_vllms_text_and_heal_with_the_fix(make_vm, ssh_to, failure, expected, fix):
    vm = make_vm(configured=True, vllm_failure=failure, fitting_len=8192)
    remote = ssh_to(vm)
    wait_for(lambda: "Engine core initialization failed" in remote.run(vc.CMD_VLLM_LOGS).stdout)
    logs = remote.run(vc.CMD_VLLM_LOGS).stdout
    assert expected in logs and vm.vllm is None and _stage(remote) == "starting"
    remote.run(vc.CMD_RECREATE_VLLM)  # same config: fails again
    wait_for(lambda: "Engine core initialization failed" in remote.run(vc.CMD_VLLM_LOGS).stdout)
    remote.run(vc.CMD_WRITE_ENV, stdin=ENV.replace(*fix).encode())
    remote.run(vc.CMD_RECREATE_VLLM)
    wait_for(lambda: vm.vllm is not None)
    assert "Engine core initialization failed" not in remote.run(vc.CMD_VLLM_LOGS).stdout


def test_gated_model_never_heals_and_never_ready_never_listens(make_vm, ssh_to):
    gated = make_vm(configured=True, vllm_failure="gated")
    never = make_vm(configured=True, vllm_failure="never_ready")
    gated_ssh, never_ssh = ssh_to(gated), ssh_to(never)
    wait_for(lambda: "GatedRepoError" in gated_ssh.run(vc.CMD_VLLM_LOGS).stdout)
    gated_ssh.run(vc.CMD_WRITE_ENV, stdin=(ENV + "VLLM_ENFORCE_EAGER=true\n").encode())
    gated_ssh.run(vc.CMD_RECREATE_VLLM)
    time.sleep(0.4)
    assert "GatedRepoError" in gated_ssh.run(vc.CMD_VLLM_LOGS).stdout and gated.vllm is None
    assert "Loading weights took" in never_ssh.run(vc.CMD_VLLM_LOGS).stdout
    assert never.vllm is None and "Application startup complete." not in never_ssh.run(vc.CMD_VLLM_LOGS).stdout


def test_cloud_init_error_reports_errors_and_no_driver(make_vm, ssh_to):
    remote = ssh_to(make_vm(cloud_init_error=True))
    wait_for(lambda: remote.run(vc.CMD_CLOUD_INIT_STATUS).exit_code == 1)
    status = json.loads(remote.run(vc.CMD_CLOUD_INIT_STATUS).stdout)
    assert status["status"] == "error" and status["errors"]
    assert remote.run(vc.CMD_GPU_QUERY).exit_code == 127


def test_vm_from_user_data_takes_keys_and_env_from_the_cloud_config(keys, ssh_to):
    host, client = keys
    user_data = "#cloud-config\n" + yaml.safe_dump({
        "ssh_keys": {"ed25519_private": host.private_openssh, "ed25519_public": host.public_openssh},
        "users": [{"name": "root", "ssh_authorized_keys": [client.public_openssh]}],
        "write_files": [{"path": vc.ENV_FILE, "permissions": "0600", "content": ENV}],
    })
    facts = read_cloud_config(user_data)
    assert facts.authorized_keys == [client.public_openssh] and facts.env_file == ENV
    vm = vm_from_user_data(user_data, VmBehaviour.fast())
    vm.start()
    try:
        remote = ssh_to(vm)
        assert remote.run(vc.CMD_READ_ENV).stdout == ENV
    finally:
        vm.stop()
    with pytest.raises(ValueError):
        read_cloud_config("#!/bin/sh\necho hi\n")


def test_stopped_vm_leaves_no_threads_behind(make_vm, ssh_to):
    before = threading.active_count()
    vm = make_vm(configured=True)
    remote = ssh_to(vm)
    wait_for(lambda: _stage(remote) == "running")
    remote.close()
    vm.stop()
    wait_for(lambda: threading.active_count() <= before, timeout=3)


@pytest.fixture
def fake_vllm() -> Iterator[FakeVllmServer]:
    server = FakeVllmServer(FakeVllmConfig("Qwen/Qwen2.5-Coder-7B-Instruct", "coder", max_model_len=4096,
                                           api_key=API_KEY, ttft_s=0.01, itl_s=0.002, tokens_per_reply=5))
    yield server
    server.stop()


def test_fake_vllm_requires_the_api_key_on_v1_only(fake_vllm):
    base = f"http://127.0.0.1:{fake_vllm.port}"
    assert httpx.get(f"{base}/v1/models").status_code == 401
    assert httpx.get(f"{base}/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert httpx.get(f"{base}/health").status_code == 200
    assert httpx.get(f"{base}/metrics").status_code == 200


def test_fake_vllm_streams_with_vllms_framing_and_counts_in_metrics(fake_vllm):
    base = f"http://127.0.0.1:{fake_vllm.port}"
    auth = {"Authorization": f"Bearer {API_KEY}"}
    body = {"model": "coder", "messages": [{"role": "user", "content": "hello there"}], "stream": True,
            "stream_options": {"include_usage": True}}
    with httpx.stream("POST", f"{base}/v1/chat/completions", json=body, headers=auth) as response:
        events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    tokens = [c for c in chunks[1:] if c["choices"]]
    assert len(tokens) == 5 and tokens[-1]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 5

    one = httpx.post(f"{base}/v1/completions", json={"model": "coder", "prompt": "x", "max_tokens": 1},
                     headers=auth).json()
    assert one["choices"][0]["finish_reason"] == "length" and one["usage"]["completion_tokens"] == 1
    bad = httpx.post(f"{base}/v1/completions", json={"model": "coder", "prompt": "x",
                                                     "stream_options": {"include_usage": True}}, headers=auth)
    assert bad.status_code == 400
    assert httpx.post(f"{base}/v1/completions", json={"model": "gpt-4", "prompt": "x"},
                      headers=auth).status_code == 404
    too_long = httpx.post(f"{base}/v1/completions", json={"model": "coder", "prompt": "x", "max_tokens": 5000},
                          headers=auth)
    assert too_long.status_code == 400 and "maximum context length is 4096" in too_long.text

    metrics = httpx.get(f"{base}/metrics").text
    assert 'vllm:generation_tokens_total{model_name="coder",engine="0"} 6.0' in metrics
    assert 'vllm:request_success_total{finished_reason="stop",model_name="coder",engine="0"} 1.0' in metrics
    assert 'vllm:request_success_total{finished_reason="length",model_name="coder",engine="0"} 1.0' in metrics
    assert 'vllm:time_to_first_token_seconds_count{model_name="coder",engine="0"} 2.0' in metrics
    assert 'vllm:num_requests_running{model_name="coder",engine="0"} 0.0' in metrics
