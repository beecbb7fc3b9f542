"""The VM's user data: valid cloud-config, pinned keys, secrets only in the 0600 .env, loopback-only ports."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from app.domain import vm_contract
from app.domain.cloud_init import (
    CloudInitInputs, PROVISION_SCRIPT, START_SCRIPT, UNIT_PATH, fill_template, load_templates, render_compose,
    render_user_data,
)
from app.domain.vllm_env import DEFAULT_NVIDIA_DRIVER, Images, VllmSettings, render_env

HF_TOKEN = "hf_PLANTEDtokenZZ9"
API_KEY = "sk-PLANTEDapikeyQQ7"
WEBUI_SECRET = "PLANTEDwebuisecretXX3"
CLIENT_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIClientKeyForThisSessionOnly maider-session"
MODEL = "Qwen/Qwen2.5-Coder-7B-Instruct"


def _host_key() -> tuple[str, str]:
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return private, public.decode() + " maider-host"


HOST_PRIVATE, HOST_PUBLIC = _host_key()


def _inputs(**overrides: object) -> CloudInitInputs:
    vllm = VllmSettings(MODEL, "coder", 32768, 0.9, 1, 1)
    env_file = render_env(vllm, API_KEY, HF_TOKEN, WEBUI_SECRET, Images())
    values = dict(host_key_private=HOST_PRIVATE, host_key_public=HOST_PUBLIC, authorized_key=CLIENT_KEY,
                  env_file=env_file, images=Images(), nvidia_driver=None, model_id=MODEL, hostname="maider-ab12")
    values.update(overrides)
    return CloudInitInputs(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def user_data() -> str:
    return render_user_data(_inputs())


@pytest.fixture(scope="module")
def config(user_data: str) -> dict:
    return yaml.safe_load(user_data)


def _file(config: dict, path: str) -> dict:
    matches = [entry for entry in config["write_files"] if entry["path"] == path]
    assert len(matches) == 1, f"{path} written {len(matches)} times"
    return matches[0]


@pytest.mark.skipif(shutil.which("cloud-init") is None, reason="cloud-init is not installed (Debian package)")
@pytest.mark.parametrize("overrides", [{}, {"hostname": None, "model_id": None}])
def test_user_data_passes_cloud_init_schema(overrides: dict[str, None], tmp_path: Path) -> None:
    path = tmp_path / "user-data.yaml"
    path.write_text(render_user_data(_inputs(**overrides)))
    result = subprocess.run(["cloud-init", "schema", "-c", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Valid cloud-config" in result.stdout


def test_user_data_is_cloud_config_with_pinned_host_key_and_session_key(user_data: str, config: dict) -> None:
    assert user_data.startswith("#cloud-config\n")
    assert config["ssh_keys"]["ed25519_private"].strip() == HOST_PRIVATE.strip()
    assert config["ssh_keys"]["ed25519_public"] == HOST_PUBLIC
    assert config["ssh_deletekeys"] is True
    assert config["ssh_authorized_keys"] == [CLIENT_KEY]
    assert config["disable_root"] is False
    assert config["ssh_pwauth"] is False
    assert config["hostname"] == "maider-ab12"


def test_env_file_is_root_only(config: dict) -> None:
    entry = _file(config, vm_contract.ENV_FILE)
    assert entry["permissions"] == "0600"
    assert entry["owner"] == "root:root"


@pytest.mark.parametrize("secret", [HF_TOKEN, API_KEY, WEBUI_SECRET])
def test_secrets_appear_only_in_the_env_entry(config: dict, secret: str) -> None:
    holders = [entry["path"] for entry in config["write_files"] if secret in entry["content"]]
    assert holders == [vm_contract.ENV_FILE]
    assert secret not in yaml.safe_dump(config["runcmd"])


def test_compose_reads_secrets_by_reference(config: dict) -> None:
    compose = yaml.safe_load(_file(config, vm_contract.COMPOSE_FILE)["content"])
    vllm = compose["services"]["vllm"]
    webui = compose["services"]["open-webui"]
    assert vllm["env_file"] == [vm_contract.ENV_FILE]
    assert webui["environment"]["OPENAI_API_KEY"] == "${VLLM_API_KEY}"
    assert webui["environment"]["WEBUI_SECRET_KEY"] == "${WEBUI_SECRET_KEY}"
    assert "env_file" not in webui, "Open WebUI must not receive the Hugging Face token"


def test_both_ports_bound_to_loopback_only() -> None:
    compose = yaml.safe_load(render_compose(Images()))
    ports = {name: service["ports"] for name, service in compose["services"].items()}
    assert ports == {"vllm": ["127.0.0.1:8000:8000"], "open-webui": ["127.0.0.1:3000:8080"]}


def test_compose_services_match_the_contract() -> None:
    compose = yaml.safe_load(render_compose(Images()))
    vllm = compose["services"]["vllm"]
    webui = compose["services"]["open-webui"]
    assert vllm["container_name"] == vm_contract.VLLM_CONTAINER
    assert webui["container_name"] == vm_contract.WEBUI_CONTAINER
    assert vllm["ipc"] == "host"
    assert vllm["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    mounts = {volume.split(":")[1] for volume in vllm["volumes"]}
    assert {"/root/.cache/huggingface", "/root/.cache/vllm"} <= mounts
    assert set(compose["volumes"]) >= {"hf-cache", "vllm-cache", "webui-data"}
    assert webui["environment"]["OPENAI_API_BASE_URL"] == "http://vllm:8000/v1"
    assert webui["environment"]["ENABLE_PERSISTENT_CONFIG"] == "False"
    assert webui["environment"]["WEBUI_AUTH"] == "False"
    assert webui["environment"]["ENABLE_OLLAMA_API"] == "False"


def test_images_are_pinned_everywhere(user_data: str) -> None:
    images = re.findall(r"(?:vllm/vllm-openai|ghcr\.io/open-webui/open-webui)(:[\w.-]+)?", user_data)
    assert images, "no image reference found"
    assert all(tag and tag not in (":latest", ":main") for tag in images)


def test_custom_images_and_driver_are_used() -> None:
    config = yaml.safe_load(render_user_data(_inputs(
        images=Images("vllm/vllm-openai:v0.10.2", "ghcr.io/open-webui/open-webui:v0.6.30"),
        nvidia_driver="nvidia-driver-580-server")))
    compose = yaml.safe_load(_file(config, vm_contract.COMPOSE_FILE)["content"])
    assert compose["services"]["vllm"]["image"] == "vllm/vllm-openai:v0.10.2"
    assert config["runcmd"] == [["bash", PROVISION_SCRIPT, "nvidia-driver-580-server", MODEL]]


def test_default_driver_and_model_prefetch(config: dict) -> None:
    assert config["runcmd"] == [["bash", PROVISION_SCRIPT, DEFAULT_NVIDIA_DRIVER, MODEL]]


def test_no_reboot_anywhere(config: dict) -> None:
    assert "power_state" not in config
    assert "package_reboot_if_required" not in config
    reboot_command = re.compile(r"^\s*(?:reboot|shutdown|init 6|systemctl\s+(?:reboot|poweroff|kexec))\b", re.M)
    for entry in config["write_files"]:
        assert not reboot_command.search(entry["content"]), entry["path"]
    assert "reboot" not in yaml.safe_dump(config["runcmd"])


def test_provisioning_installs_the_stack_and_overlaps_downloads_with_the_driver(config: dict) -> None:
    script = _file(config, PROVISION_SCRIPT)["content"]
    steps = ["ufw default deny incoming", "ufw allow 22/tcp", "ufw --force enable", "download.docker.com",
             "install docker-ce docker-ce-cli containerd.io docker-compose-plugin nvidia-container-toolkit", "nvidia-ctk runtime configure --runtime=docker",
             "systemctl restart docker", "systemd-run --unit=maider-prefetch", '"$NVIDIA_DRIVER"',
             f"systemctl enable '{vm_contract.SYSTEMD_UNIT}'"]
    positions = [script.index(step) for step in steps]
    assert positions == sorted(positions), "steps out of order: the prefetch must start after docker's restart"
    assert script.startswith("#!/bin/bash") and "set -euxo pipefail" in script


def test_prefetch_downloads_weights_into_the_compose_cache_volume(config: dict) -> None:
    prefetch = _file(config, "/opt/llm/prefetch.sh")["content"]
    compose = yaml.safe_load(_file(config, vm_contract.COMPOSE_FILE)["content"])
    assert f"-v '{compose['volumes']['hf-cache']['name']}:/root/.cache/huggingface'" in prefetch
    assert 'docker pull --quiet "$image"' in prefetch
    assert "snapshot_download" in prefetch


def test_every_contract_path_is_created(config: dict) -> None:
    paths = {entry["path"] for entry in config["write_files"]}
    assert {vm_contract.ENV_FILE, vm_contract.COMPOSE_FILE, UNIT_PATH} <= paths
    assert UNIT_PATH.endswith("/" + vm_contract.SYSTEMD_UNIT)
    start = _file(config, START_SCRIPT)["content"]
    assert f"STAGE_FILE='{vm_contract.STAGE_FILE}'" in start
    assert [stage for stage in vm_contract.STAGES if f"write_stage {stage}" in start] == list(vm_contract.STAGES)
    assert f"http://127.0.0.1:{vm_contract.VLLM_PORT}/health" in start


def test_unit_waits_for_the_gpu_and_runs_the_start_script(config: dict) -> None:
    unit = _file(config, UNIT_PATH)["content"]
    assert "ExecStartPre=/usr/bin/nvidia-smi" in unit
    assert f"ExecStart=/bin/bash {START_SCRIPT}" in unit
    assert "Requires=docker.service" in unit
    assert "WantedBy=multi-user.target" in unit


def test_no_placeholder_left_in_any_file(config: dict) -> None:
    for entry in config["write_files"]:
        assert "{{" not in entry["content"], entry["path"]


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_vm_scripts_are_valid_bash(config: dict, tmp_path: Path) -> None:
    for entry in config["write_files"]:
        if entry["path"].endswith(".sh"):
            script = tmp_path / Path(entry["path"]).name
            script.write_text(entry["content"])
            result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
            assert result.returncode == 0, f"{entry['path']}: {result.stderr}"


def test_unknown_placeholder_is_an_error() -> None:
    with pytest.raises(KeyError):
        fill_template("echo {{NOPE}}")


@pytest.mark.parametrize("overrides", [
    {"nvidia_driver": "nvidia-driver-570; rm -rf /"},
    {"model_id": "Qwen/x; curl evil"},
    {"authorized_key": "ssh-ed25519 AAA\nssh-rsa BBB"},
    {"host_key_private": "not a key"},
    {"hostname": "bad_host!"},
])
def test_unsafe_inputs_are_refused(overrides: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        render_user_data(_inputs(**overrides))


def test_templates_load_from_the_project_folder() -> None:
    templates = load_templates()
    assert {"maider-llm.service", "start-stack.sh", "prefetch.sh", "provision.sh", "launch-vllm.py"} <= set(templates)
