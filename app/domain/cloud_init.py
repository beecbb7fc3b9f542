"""Render the VM's cloud-init user data and compose file (pure: text in, text out).

What the VM gets (paths from ``vm_contract``):
- the SSH host key maider generated and pins, the per-session client key for root, no passwords;
- /opt/llm/.env (0600, the only place secrets live), /opt/llm/docker-compose.yml (no secrets: ``env_file`` and
  ``${VAR}`` interpolation), the systemd unit and the VM-side scripts from ``cloud_init/``;
- one ``runcmd`` entry running ``provision.sh``: the failsafe's timer (``maider-failsafe.py``), firewall, Docker CE +
  compose plugin, NVIDIA container toolkit, image and weight prefetch in the background, the pinned NVIDIA driver,
  then the unit. Never a reboot: maider reboots over SSH only if ``CMD_GPU_QUERY`` still fails once cloud-init is done.
"""
from __future__ import annotations

import base64
import gzip
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from app import PROJECT_ROOT
from app.domain import vm_contract
from app.domain.vllm_env import DEFAULT_NVIDIA_DRIVER, Images

TEMPLATE_DIR = PROJECT_ROOT / "cloud_init"

START_SCRIPT = f"{vm_contract.LLM_DIR}/start-stack.sh"
PREFETCH_SCRIPT = f"{vm_contract.LLM_DIR}/prefetch.sh"
PROVISION_SCRIPT = f"{vm_contract.LLM_DIR}/provision.sh"
LAUNCHER = f"{vm_contract.LLM_DIR}/launch-vllm.py"
LAUNCHER_IN_CONTAINER = "/opt/maider/launch-vllm.py"
UNIT_PATH = f"/etc/systemd/system/{vm_contract.SYSTEMD_UNIT}"
FAILSAFE_SCRIPT = f"{vm_contract.LLM_DIR}/maider-failsafe.py"
FAILSAFE_SERVICE_PATH = "/etc/systemd/system/maider-failsafe.service"
FAILSAFE_TIMER_PATH = f"/etc/systemd/system/{vm_contract.FAILSAFE_TIMER}"
# Fixed volume names so the prefetch container and the compose project share one Hugging Face cache.
HF_CACHE_VOLUME = "maider-hf-cache"
COMPOSE_PROJECT = Path(vm_contract.LLM_DIR).name  # compose names the project after the folder of its file
VLLM_CACHE_VOLUME = "maider-vllm-cache"
WEBUI_DATA_VOLUME = "maider-webui-data"
# Linode documents about 16 KB of user data; its own cluster-api provider refuses more than 16,384 decoded bytes.
USER_DATA_MAX_BYTES = 16 * 1024
# Docker Hub's own pull-through mirror on Google's registry: anonymous Hub pulls are rate-limited per IP, and a
# cloud VM's IP is shared with strangers. dockerd falls back to Docker Hub when the mirror lacks an image.
DOCKER_REGISTRY_MIRROR = "https://mirror.gcr.io"
# Open WebUI's background generations (titles, tags, follow-ups, autocomplete, search queries) would queue on
# vLLM ahead of aider (max_num_seqs is 1) and count as activity for the idle watchdog: all off.
WEBUI_TASKS_OFF = {
    "ENABLE_TITLE_GENERATION": "False",
    "ENABLE_TAGS_GENERATION": "False",
    "ENABLE_FOLLOW_UP_GENERATION": "False",
    "ENABLE_AUTOCOMPLETE_GENERATION": "False",
    "ENABLE_SEARCH_QUERY_GENERATION": "False",
    "ENABLE_RETRIEVAL_QUERY_GENERATION": "False",
}

_PLACEHOLDER = re.compile(r"\{\{([A-Z_]+)\}\}")
_PACKAGE_NAME = re.compile(r"^[a-z0-9][a-z0-9.+-]*$")
_MODEL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")
_HOSTNAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_TEMPLATE_VALUES = {
    "ENV_FILE": vm_contract.ENV_FILE,
    "LLM_DIR": vm_contract.LLM_DIR,
    "STAGE_FILE": vm_contract.STAGE_FILE,
    "DRIVER_NOTE_FILE": vm_contract.DRIVER_NOTE_FILE,
    "SYSTEMD_UNIT": vm_contract.SYSTEMD_UNIT,
    "VLLM_PORT": str(vm_contract.VLLM_PORT),
    "START_SCRIPT": START_SCRIPT,
    "PREFETCH_SCRIPT": PREFETCH_SCRIPT,
    "HF_CACHE_VOLUME": HF_CACHE_VOLUME,
    "COMPOSE_PROJECT": COMPOSE_PROJECT,
    "FAILSAFE_SCRIPT": FAILSAFE_SCRIPT,
    "FAILSAFE_CONFIG": vm_contract.FAILSAFE_CONFIG,
    "FAILSAFE_HEARTBEAT": vm_contract.FAILSAFE_HEARTBEAT,
    "FAILSAFE_STATE": vm_contract.FAILSAFE_STATE,
    "FAILSAFE_TIMER": vm_contract.FAILSAFE_TIMER,
    "PROBLEM_FILE": vm_contract.PROBLEM_FILE,
    "VLLM_CONTAINER": vm_contract.VLLM_CONTAINER,
    "DOCKER_REGISTRY_MIRROR": DOCKER_REGISTRY_MIRROR,
}


@dataclass(frozen=True)
class CloudInitInputs:
    """Everything one VM's user data is made of."""

    host_key_private: str  # OpenSSH ed25519 private key: the VM's host key, pinned by maider
    host_key_public: str  # its public half ("ssh-ed25519 AAAA...")
    authorized_key: str  # the per-session client public key, for root
    env_file: str  # rendered /opt/llm/.env text (holds secrets)
    images: Images = field(default_factory=Images)
    nvidia_driver: str | None = None  # apt package; None: DEFAULT_NVIDIA_DRIVER
    model_id: str | None = None  # when known, weights start downloading while the driver installs
    hostname: str | None = None


def load_templates(directory: Path = TEMPLATE_DIR) -> dict[str, str]:
    """Read every file of ``cloud_init/`` (the one I/O this module does; tests may pass their own dict)."""
    return {path.name: path.read_text() for path in sorted(directory.iterdir()) if path.is_file()}


def fill_template(text: str, values: dict[str, str] = _TEMPLATE_VALUES) -> str:
    """Replace ``{{NAME}}`` placeholders; a name without a value is an error, never left in a VM script."""
    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise KeyError(f"cloud_init template placeholder {{{{{name}}}}} has no value")
        return values[name]
    return _PLACEHOLDER.sub(replace, text)


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings as ``|`` blocks, so the user data stays readable in the provider's console."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _represent_str)


def _dump(data: Any) -> str:
    return yaml.dump(data, Dumper=_BlockDumper, sort_keys=False, default_flow_style=False, width=120)


def render_compose(images: Images) -> str:
    """/opt/llm/docker-compose.yml: vLLM and Open WebUI on the VM's 127.0.0.1 only, no secret in the file.

    vLLM's flags come from /opt/llm/.env through the launcher at every container start (see ``vllm_env``), so a
    heal's ``.env`` change takes effect with ``docker compose up -d --force-recreate vllm``.
    """
    vllm_port = vm_contract.VLLM_PORT
    compose = {
        "services": {
            "vllm": {
                "image": images.vllm,
                "container_name": vm_contract.VLLM_CONTAINER,
                "entrypoint": ["python3", LAUNCHER_IN_CONTAINER],
                "env_file": [vm_contract.ENV_FILE],
                "ipc": "host",  # NCCL needs shared memory beyond Docker's 64 MB /dev/shm for tensor parallelism
                "ports": [f"127.0.0.1:{vllm_port}:{vllm_port}"],
                "volumes": [
                    "hf-cache:/root/.cache/huggingface",
                    "vllm-cache:/root/.cache/vllm",
                    f"{LAUNCHER}:{LAUNCHER_IN_CONTAINER}:ro",
                ],
                "deploy": {"resources": {"reservations": {"devices": [
                    {"driver": "nvidia", "count": "all", "capabilities": ["gpu"]},
                ]}}},
                "restart": "unless-stopped",
            },
            "open-webui": {
                "image": images.open_webui,
                "container_name": vm_contract.WEBUI_CONTAINER,
                "ports": [f"127.0.0.1:{vm_contract.WEBUI_PORT}:8080"],
                "environment": {
                    "OPENAI_API_BASE_URL": f"http://{vm_contract.VLLM_CONTAINER}:{vllm_port}/v1",
                    "OPENAI_API_KEY": "${VLLM_API_KEY}",
                    "ENABLE_OLLAMA_API": "False",
                    "ENABLE_PERSISTENT_CONFIG": "False",
                    "WEBUI_AUTH": "False",
                    "WEBUI_SECRET_KEY": "${WEBUI_SECRET_KEY}",
                    **WEBUI_TASKS_OFF,
                },
                "volumes": ["webui-data:/app/backend/data"],
                "depends_on": [vm_contract.VLLM_CONTAINER],
                "restart": "unless-stopped",
            },
        },
        "volumes": {
            "hf-cache": {"name": HF_CACHE_VOLUME},
            "vllm-cache": {"name": VLLM_CACHE_VOLUME},
            "webui-data": {"name": WEBUI_DATA_VOLUME},
        },
    }
    return "# Written by maider. Settings and secrets live in .env (0600), never here.\n" + _dump(compose)


def _single_line(name: str, value: str) -> str:
    value = value.strip()
    if not value or "\n" in value:
        raise ValueError(f"{name} must be one non-empty line")
    return value


def render_user_data(inputs: CloudInitInputs, templates: dict[str, str] | None = None) -> str:
    """The ``#cloud-config`` user data for one VM (contains secrets: hand it only to the provider API)."""
    templates = load_templates() if templates is None else templates
    driver = inputs.nvidia_driver or DEFAULT_NVIDIA_DRIVER
    if not _PACKAGE_NAME.match(driver):
        raise ValueError(f"NVIDIA driver '{driver}' is not an apt package name")
    if "BEGIN OPENSSH PRIVATE KEY" not in inputs.host_key_private:
        raise ValueError("the host key must be an OpenSSH private key")
    model_to_prefetch = inputs.model_id or ""
    if model_to_prefetch and not _MODEL_ID.match(model_to_prefetch):
        raise ValueError(f"'{model_to_prefetch}' is not a Hugging Face model id")
    host_public = _single_line("host key (public)", inputs.host_key_public)
    authorized_key = _single_line("authorized key", inputs.authorized_key)

    def script(name: str, path: str, permissions: str) -> dict[str, str]:
        return {"path": path, "content": fill_template(templates[name]), "owner": "root:root",
                "permissions": permissions}

    config: dict[str, Any] = {}
    if inputs.hostname:
        hostname = inputs.hostname.lower()
        if not _HOSTNAME.match(hostname):
            raise ValueError(f"'{inputs.hostname}' is not a valid host name")
        config["hostname"] = hostname
    config.update({
        "ssh_deletekeys": True,
        # With ssh_keys given cloud-init generates nothing; the schema only rejects an empty list.
        "ssh_genkeytypes": ["ed25519"],
        "ssh_keys": {"ed25519_private": inputs.host_key_private.strip() + "\n", "ed25519_public": host_public},
        "disable_root": False,
        "ssh_authorized_keys": [authorized_key],
        "ssh_pwauth": False,
        "write_files": [
            {"path": vm_contract.ENV_FILE, "content": inputs.env_file, "owner": "root:root", "permissions": "0600"},
            {"path": vm_contract.COMPOSE_FILE, "content": render_compose(inputs.images), "owner": "root:root",
             "permissions": "0644"},
            script("launch-vllm.py", LAUNCHER, "0644"),
            script("start-stack.sh", START_SCRIPT, "0755"),
            script("prefetch.sh", PREFETCH_SCRIPT, "0755"),
            script("provision.sh", PROVISION_SCRIPT, "0755"),
            script("maider-llm.service", UNIT_PATH, "0644"),
            script("maider-failsafe.py", FAILSAFE_SCRIPT, "0755"),
            script("maider-failsafe.service", FAILSAFE_SERVICE_PATH, "0644"),
            script("maider-failsafe.timer", FAILSAFE_TIMER_PATH, "0644"),
        ],
        "runcmd": [["bash", PROVISION_SCRIPT, driver, model_to_prefetch]],
    })
    return "#cloud-config\n" + _dump(config)


class UserDataTooLarge(ValueError):
    """The compressed user data is still over what Linode accepts (the message says by how much)."""


def encode_user_data(user_data: str, limit: int = USER_DATA_MAX_BYTES) -> str:
    """``user_data`` gzipped, then base64, as Linode's ``metadata.user_data`` takes it; cloud-init un-gzips it.

    Raises UserDataTooLarge when the gzipped bytes exceed ``limit`` (Linode's 16 KiB), before any VM is asked for.
    """
    packed = gzip.compress(user_data.encode(), compresslevel=9, mtime=0)  # mtime=0: same input, same bytes
    if len(packed) > limit:
        raise UserDataTooLarge(
            f"the VM's cloud-init user data is {len(packed):,} bytes even gzipped ({len(user_data.encode()):,} "
            f"raw), over Linode's limit of {limit:,} bytes: shorten what goes into it (an SSH key, "
            f"VLLM_EXTRA_ARGS, the model id)")
    return base64.b64encode(packed).decode()
