"""What the VM runs at first boot, hardened against what a real Linode, NVIDIA, Docker Hub and Open WebUI do.

The rendered scripts are linted with ``shellcheck`` and the user data checked with ``cloud-init schema`` (both Debian
packages that ``scripts/test`` installs); ``start-stack.sh`` also runs for real, with ``docker``, ``curl``, ``date``
and ``sleep`` on its PATH replaced by small scripts that play the VM's side.
"""
from __future__ import annotations

import base64
import gzip
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from app.domain import vm_contract
from app.domain.cloud_init import (
    DOCKER_REGISTRY_MIRROR, PROVISION_SCRIPT, START_SCRIPT, UNIT_PATH, USER_DATA_MAX_BYTES, UserDataTooLarge,
    encode_user_data, fill_template, load_templates, render_user_data,
)
from app.domain.diagnosis import Cause, diagnose
from app.domain.healing import plan_heal
from app.engine.vllm_config import vllm_settings_for
from app.models import Session
from test_cloud_init import _inputs

ON_CI = os.environ.get("CI") == "true"


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (Debian package {name}; scripts/test installs it)"
        if ON_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="module")
def user_data() -> str:
    return render_user_data(_inputs())


@pytest.fixture(scope="module")
def config(user_data: str) -> dict:
    return yaml.safe_load(user_data)


def _file(config: dict, path: str) -> str:
    return next(entry["content"] for entry in config["write_files"] if entry["path"] == path)


# user data size (Linode takes about 16 KB)

def test_user_data_is_gzipped_then_base64_and_fits_linodes_limit(user_data: str, tmp_path: Path) -> None:
    encoded = encode_user_data(user_data)
    packed = base64.b64decode(encoded)
    assert packed[:2] == b"\x1f\x8b"  # gzip: cloud-init un-gzips user data itself
    assert gzip.decompress(packed).decode() == user_data
    assert len(packed) <= USER_DATA_MAX_BYTES and len(encoded) <= USER_DATA_MAX_BYTES
    assert len(encoded) < len(user_data) / 2, "gzip should more than halve the cloud-config"
    assert encode_user_data(user_data) == encoded  # no timestamp inside: the same VM, the same bytes
    # cloud-init's own un-gzip (the Debian package's Python) gives back a valid cloud-config
    cloud_init = _tool("cloud-init")
    unpacked = subprocess.run(["/usr/bin/python3", "-c", "import sys; from cloudinit import util; "
                               "sys.stdout.write(util.decomp_gzip(sys.stdin.buffer.read()))"],
                              input=packed, capture_output=True, check=True).stdout.decode()
    assert unpacked == user_data
    path = tmp_path / "user-data.yaml"
    path.write_text(unpacked)
    result = subprocess.run([cloud_init, "schema", "-c", str(path)], capture_output=True, text=True)
    assert result.returncode == 0 and "Valid cloud-config" in result.stdout, result.stdout + result.stderr


def test_user_data_over_16_kib_gzipped_is_refused_with_the_sizes() -> None:
    noise = base64.b64encode(os.urandom(20_000)).decode()  # random text hardly compresses
    with pytest.raises(UserDataTooLarge) as caught:
        encode_user_data("#cloud-config\n# " + noise + "\n")
    message = str(caught.value)
    assert "Linode's limit of 16,384 bytes" in message and "gzipped" in message


# the rendered scripts pass shellcheck and the cloud-config its schema

def test_every_vm_script_passes_shellcheck(config: dict, tmp_path: Path) -> None:
    shellcheck = _tool("shellcheck")
    scripts = [entry for entry in config["write_files"] if entry["path"].endswith(".sh")]
    assert {entry["path"] for entry in scripts} >= {PROVISION_SCRIPT, START_SCRIPT}
    for entry in scripts:
        path = tmp_path / Path(entry["path"]).name
        path.write_text(entry["content"])
        result = subprocess.run([shellcheck, "--shell=bash", "--severity=style", str(path)], capture_output=True,
                                text=True)
        assert result.returncode == 0, f"{entry['path']}:\n{result.stdout}"


def test_hardened_user_data_passes_the_cloud_init_schema(user_data: str, tmp_path: Path) -> None:
    path = tmp_path / "user-data.yaml"
    path.write_text(user_data)
    result = subprocess.run([_tool("cloud-init"), "schema", "-c", str(path)], capture_output=True, text=True)
    assert result.returncode == 0 and "Valid cloud-config" in result.stdout, result.stdout + result.stderr


# a driver that survives the reboot

def test_nouveau_is_blacklisted_in_the_initramfs_before_the_driver(config: dict) -> None:
    script = _file(config, PROVISION_SCRIPT)
    steps = ["blacklist nouveau", "options nouveau modeset=0", "update-initramfs -u", '"${DRIVER_PACKAGES[@]}"',
             "modprobe nvidia"]
    positions = [script.index(step) for step in steps]
    assert positions == sorted(positions)


def test_no_unattended_upgrade_runs_while_provisioning(config: dict) -> None:
    script = _file(config, PROVISION_SCRIPT)
    hold = script.index("systemctl stop apt-daily.timer apt-daily-upgrade.timer unattended-upgrades.service")
    assert hold < script.index('"${APT[@]}" update') < script.index('"${DRIVER_PACKAGES[@]}"')
    assert script.index("systemctl start apt-daily.timer apt-daily-upgrade.timer") > script.index("modprobe nvidia")


def test_headers_for_this_kernel_and_the_next_one(config: dict) -> None:
    script = _file(config, PROVISION_SCRIPT)
    assert '"linux-headers-$KERNEL_RELEASE" "linux-headers-${KERNEL_RELEASE##*-}"' in script  # -generic meta


def _driver_packages(script: str, driver: str, available: bool, tmp_path: Path) -> list[str]:
    """Run provision.sh's package choice in bash, with apt-cache saying whether the headless packages exist."""
    start = script.index("DRIVER_PACKAGES=(")
    end = script.index("esac", start) + len("esac")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    apt_cache = bin_dir / "apt-cache"
    apt_cache.write_text(f"#!/bin/sh\nexit {0 if available else 100}\n")
    apt_cache.chmod(0o755)
    snippet = f'NVIDIA_DRIVER="$1"\n{script[start:end]}\nprintf "%s\\n" "${{DRIVER_PACKAGES[@]}}"\n'
    result = subprocess.run(["bash", "-c", snippet, "provision", driver], capture_output=True, text=True,
                            env={"PATH": f"{bin_dir}:{os.environ['PATH']}"}, check=True)
    return result.stdout.split()


def test_the_driver_is_the_headless_server_package_of_the_long_term_branch(config: dict, tmp_path: Path) -> None:
    script = _file(config, PROVISION_SCRIPT)
    assert config["runcmd"][0][2] == "nvidia-driver-580-server"  # NVIDIA's long-term branch, server flavour
    assert _driver_packages(script, "nvidia-driver-580-server", True, tmp_path) == [
        "nvidia-headless-580-server", "nvidia-utils-580-server"]  # no X server; nvidia-smi included
    # a release without the headless packages, or another package named by DRIVER, installs what was named
    assert _driver_packages(script, "nvidia-driver-580-server", False, tmp_path) == ["nvidia-driver-580-server"]
    assert _driver_packages(script, "nvidia-open-580", True, tmp_path) == ["nvidia-open-580"]


def _driver_step(script: str, tmp_path: Path, present: str | None) -> tuple[str, list[str]]:
    """Run provision.sh's driver step in bash with nvidia-smi answering ``present`` (None: no driver loaded);
    returns the driver note and the commands that were called (apt-get, modprobe, systemctl)."""
    start = script.index('KERNEL_RELEASE="$(uname -r)"')
    end = script.index("\nfi\n", start) + len("\nfi\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    calls = tmp_path / "calls"
    for tool in ("apt-get", "modprobe", "systemctl", "uname"):
        (bin_dir / tool).write_text(f'#!/bin/sh\necho "{tool} $*" >> {calls}\n')
    smi = "exit 9" if present is None else f"echo {present}"
    (bin_dir / "nvidia-smi").write_text(f"#!/bin/sh\n{smi}\n")
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    note = tmp_path / "driver-note"
    snippet = ('set -euo pipefail\nNVIDIA_DRIVER="$1"\nOWN_MACHINE=""\nAPT=(apt-get -y)\nDRIVER_PACKAGES=(x)\n'
               + script[start:end].replace(vm_contract.DRIVER_NOTE_FILE, str(note)))
    subprocess.run(["bash", "-c", snippet, "provision", "nvidia-driver-580-server"], check=True,
                   env={"PATH": f"{bin_dir}:{os.environ['PATH']}"}, capture_output=True, text=True)
    return (note.read_text().strip() if note.exists() else ""), (calls.read_text().splitlines() if calls.exists()
                                                                  else [])


def test_an_image_with_a_current_driver_skips_the_install_and_says_so(config: dict, tmp_path: Path) -> None:
    script = _file(config, PROVISION_SCRIPT)
    note, calls = _driver_step(script, tmp_path / "ai-image", "580.95.05")
    assert "already runs NVIDIA driver 580.95.05" in note and "no driver install" in note
    assert not [c for c in calls if c.startswith(("apt-get", "modprobe"))]
    note, calls = _driver_step(script, tmp_path / "old-driver", "550.54.15")  # an older branch is replaced
    assert note == "" and any(c.startswith("apt-get -y install") for c in calls)
    note, calls = _driver_step(script, tmp_path / "bare", None)  # the usual fresh VM
    assert note == "" and any(c.startswith("apt-get -y install") for c in calls)


# Docker Hub's limits

def test_docker_pulls_through_a_registry_mirror_configured_before_docker_starts(config: dict) -> None:
    script = _file(config, PROVISION_SCRIPT)
    line = f"printf '{{\"registry-mirrors\": [\"%s\"]}}\\n' '{DOCKER_REGISTRY_MIRROR}' > /etc/docker/daemon.json"
    assert line in script
    assert script.index(line) < script.index("install docker-ce") < script.index("nvidia-ctk runtime configure")
    assert DOCKER_REGISTRY_MIRROR.startswith("https://")


def test_the_stack_pulls_only_what_the_prefetch_did_not(config: dict) -> None:
    assert "docker compose pull --quiet --policy missing" in _file(config, START_SCRIPT)


def _stack_vm(tmp_path: Path, docker: str, extra: dict[str, str] | None = None) -> tuple[Path, dict[str, str]]:
    """start-stack.sh rendered with its files under ``tmp_path``, and a PATH of stand-ins for the VM's commands."""
    values = {"STAGE_FILE": str(tmp_path / "stage"), "PROBLEM_FILE": str(tmp_path / "problem"),
              "LLM_DIR": str(tmp_path), "VLLM_CONTAINER": "vllm", "VLLM_PORT": "8000",
              "HF_CACHE_VOLUME": "maider-hf-cache", "ENV_FILE": str(tmp_path / ".env")}
    script = tmp_path / "start-stack.sh"
    script.write_text(fill_template(load_templates()["start-stack.sh"], values))
    (tmp_path / ".env").write_text("VLLM_TENSOR_PARALLEL_SIZE='2'\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    clock = tmp_path / "clock"
    stand_ins = {"docker": docker, "curl": "#!/bin/sh\nexit 7\n", "sleep": "#!/bin/sh\nexit 0\n",
                 "du": "#!/bin/sh\necho '123 x'\n",
                 # each call is a minute later than the last
                 "date": f"#!/bin/sh\nn=$(cat {clock} 2>/dev/null || echo 0)\necho $((n + 60)) > {clock}\n"
                         "echo $((1700000000 + n))\n"}
    stand_ins.update(extra or {})
    for name, body in stand_ins.items():
        (bin_dir / name).write_text(body)
        (bin_dir / name).chmod(0o755)
    return script, {"PATH": f"{bin_dir}:/usr/bin:/bin"}


def test_a_docker_hub_rate_limit_stops_the_start_with_a_diagnosis(tmp_path: Path, config: dict) -> None:
    docker = ("#!/bin/sh\necho \"$*\" >> calls\n"
              "echo 'Error response from daemon: toomanyrequests: You have reached your unauthenticated pull rate "
              "limit. https://www.docker.com/increase-rate-limit' >&2\nexit 1\n")
    script, env = _stack_vm(tmp_path, docker)
    result = subprocess.run(["bash", str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 3, result.stderr
    assert (tmp_path / "calls").read_text().count("compose pull") == 1  # no retries against the same limit
    assert "up -d" not in (tmp_path / "calls").read_text()
    problem = (tmp_path / "problem").read_text()
    assert "toomanyrequests" in problem
    # the unit does not restart on that exit status, and maider reads the line with vLLM's log and names it
    assert "RestartPreventExitStatus=3" in _file(config, UNIT_PATH)
    assert vm_contract.CMD_VLLM_LOGS.startswith(f"cat {vm_contract.PROBLEM_FILE} 2>/dev/null; docker logs")
    diagnosis = diagnose(problem + "Error response from daemon: No such container: vllm\n")
    assert diagnosis is not None and diagnosis.cause is Cause.REGISTRY_RATE_LIMIT and not diagnosis.healable
    assert "VLLM_IMAGE" in diagnosis.user_action


def test_a_transient_pull_failure_is_still_retried(tmp_path: Path) -> None:
    docker = ("#!/bin/sh\necho \"$*\" >> calls\n"
              "case \"$*\" in *pull*) n=$(grep -c pull calls)\n"
              "  [ \"$n\" -ge 2 ] || { echo 'i/o timeout' >&2; exit 1; };; esac\n"
              "exit 0\n")
    curl = f"#!/bin/sh\n[ -e {tmp_path}/clock ] && exit 0\nexit 7\n"
    script, env = _stack_vm(tmp_path, docker, {"curl": curl})
    result = subprocess.run(["bash", str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "calls").read_text().count("compose pull") == 2
    assert (tmp_path / "stage").read_text().strip() == "running" and not (tmp_path / "problem").exists()


# Open WebUI leaves vLLM to aider

def test_open_webui_background_generations_are_off(config: dict) -> None:
    compose = yaml.safe_load(_file(config, vm_contract.COMPOSE_FILE))
    environment = compose["services"]["open-webui"]["environment"]
    for task in ("TITLE", "TAGS", "FOLLOW_UP", "AUTOCOMPLETE", "SEARCH_QUERY", "RETRIEVAL_QUERY"):
        assert environment[f"ENABLE_{task}_GENERATION"] == "False", task
    assert environment["ENABLE_PERSISTENT_CONFIG"] == "False"  # so these env values win over saved settings


# multi-GPU starts

def test_peer_to_peer_is_off_by_default_on_multi_gpu_plans() -> None:
    def settings(config: dict) -> bool:
        return vllm_settings_for(Session(model_id="m", served_name="s", vllm_config=config)).nccl_p2p_disable
    assert settings({"tensor_parallel_size": 2}) is True
    assert settings({"tensor_parallel_size": 1}) is False
    assert settings({"tensor_parallel_size": 4, "nccl_p2p_disable": False}) is False  # an explicit choice stays


def test_a_silent_multi_gpu_load_is_reported_as_a_stall_and_diagnosed(tmp_path: Path) -> None:
    # vLLM printed one line and then nothing; the weights are all there (the cache does not grow)
    docker = ("#!/bin/sh\ncase \"$*\" in logs*) echo '2026-12-01T09:00:00Z INFO Starting to load model' ;; esac\n"
              "exit 0\n")
    curl = f"#!/bin/sh\n[ -e {tmp_path}/problem ] && exit 0\nexit 7\n"  # ends the test once the problem is out
    script, env = _stack_vm(tmp_path, docker, {"curl": curl})
    problem_seen = tmp_path / "problem-seen"
    # keep a copy: the script removes the problem file once vLLM answers
    script.write_text(script.read_text().replace('rm -f "$PROBLEM_FILE"\nwrite_stage running',
                                                 f'cp "$PROBLEM_FILE" {problem_seen}\nrm -f "$PROBLEM_FILE"\n'
                                                 'write_stage running'))
    result = subprocess.run(["bash", str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    problem = problem_seen.read_text()
    assert "printed nothing for 10 minutes while loading on 2 GPUs" in problem
    diagnosis = diagnose(problem)
    assert diagnosis is not None and diagnosis.cause is Cause.NCCL
    heal = plan_heal(diagnosis, {"NCCL_P2P_DISABLE": "0", "VLLM_TENSOR_PARALLEL_SIZE": "2"}, 1, 2)
    assert heal is not None and heal.env_updates == {"NCCL_P2P_DISABLE": "1"}


def test_a_silent_download_is_not_a_stall(tmp_path: Path) -> None:
    docker = "#!/bin/sh\ncase \"$*\" in logs*) echo '2026-12-01T09:00:00Z Downloading shards' ;; esac\nexit 0\n"
    # the cache grows by a byte a call; vLLM answers after about 40 minutes of the fake clock
    size = tmp_path / "size"
    du = f"#!/bin/sh\nn=$(cat {size} 2>/dev/null || echo 0)\necho $((n + 1)) > {size}\necho \"$n x\"\n"
    curl = f"#!/bin/sh\n[ \"$(cat {tmp_path}/clock)\" -ge 2400 ] && exit 0\nexit 7\n"
    script, env = _stack_vm(tmp_path, docker, {"du": du, "curl": curl})
    (tmp_path / "clock").write_text("0\n")
    result = subprocess.run(["bash", str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "printed nothing" not in result.stderr and not (tmp_path / "problem").exists()


def test_the_prefetch_does_not_spend_docker_hubs_limit_on_retries(tmp_path: Path) -> None:
    values = {"ENV_FILE": str(tmp_path / ".env"), "COMPOSE_PROJECT": "llm", "HF_CACHE_VOLUME": "maider-hf-cache"}
    script = tmp_path / "prefetch.sh"
    script.write_text(fill_template(load_templates()["prefetch.sh"], values))
    (tmp_path / ".env").write_text("VLLM_IMAGE='vllm/vllm-openai:v0'\n"
                                   "OPEN_WEBUI_IMAGE='ghcr.io/open-webui/open-webui:v0'\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    stand_ins = {  # Docker Hub refuses; ghcr.io answers with a passing network error first
        "docker": f"#!/bin/sh\necho \"$*\" >> {calls}\n"
                  "case \"$*\" in *vllm-openai*) echo 'toomanyrequests: You have reached your pull rate limit' >&2; "
                  "exit 1;; esac\n"
                  f"[ \"$(grep -c open-webui {calls})\" -ge 2 ] || {{ echo 'i/o timeout' >&2; exit 1; }}\nexit 0\n",
        "sleep": "#!/bin/sh\nexit 0\n"}
    for name, body in stand_ins.items():
        (bin_dir / name).write_text(body)
        (bin_dir / name).chmod(0o755)
    result = subprocess.run(["bash", str(script)], env={"PATH": f"{bin_dir}:/usr/bin:/bin"}, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    pulls = calls.read_text().splitlines()
    assert sum("vllm-openai" in line for line in pulls) == 1  # refused once, not three times
    assert sum("open-webui" in line for line in pulls) == 2  # a passing failure is still retried
