"""The contract between maider and a machine the user already runs (``maider host add``): paths and exact commands.

Shared by the SSH-host provider (``app.providers.ssh_host``), which sends these commands as the user's own login,
and the simulated bare host (``app.simulator.bare_host``), which answers them -- change one here and both follow.
Commands that need root are wrapped by ``as_root``: ``sudo -n`` for a sudoer (never a password prompt), nothing for
root itself.
"""
from __future__ import annotations

import shlex

from app.domain import vm_contract as vc

STATE_DIR = "/var/lib/maider"
DEPLOYMENT_FILE = f"{STATE_DIR}/deployment.json"  # {"label", "tags", "started_at", "host"}: one maider session
BOOTSTRAP_STATUS_FILE = f"{STATE_DIR}/bootstrap-status.json"  # the runner's `cloud-init status --format json`
BOOTSTRAP_LOG = "/var/log/maider-bootstrap.log"
RUNNER_NAME = "apply-cloud-config.py"  # cloud_init/<this>: applies maider's cloud-config on a machine without it
RUNNER_PATH = f"{STATE_DIR}/{RUNNER_NAME}"
RUNNER_INPUT = f"{STATE_DIR}/bootstrap-input.json"  # deployment + cloud-config (holds the .env): 0600, read once
BOOTSTRAP_UNIT = "maider-bootstrap.service"  # transient unit (systemd-run) the runner's second phase runs in
PREFETCH_UNIT = "maider-prefetch.service"  # started by provision.sh
ROOT_AUTHORIZED_KEYS = "/root/.ssh/authorized_keys"
KEY_MARKER_PREFIX = "maider:"  # comment of the session key's line in root's authorized_keys: "maider:<label>"
DOCKER_VOLUMES = ("maider-hf-cache", "maider-vllm-cache", "maider-webui-data")
# Everything maider puts on the machine, removed by CMD_TEARDOWN (Docker and the NVIDIA toolkit, when maider
# installed them, stay: they are ordinary packages other software may use by now).
MAIDER_PATHS = (vc.LLM_DIR, STATE_DIR, "/etc/maider", BOOTSTRAP_LOG,
                "/etc/systemd/system/maider-llm.service", "/etc/systemd/system/maider-failsafe.service",
                "/etc/systemd/system/maider-failsafe.timer")
MAIDER_UNITS = (vc.SYSTEMD_UNIT, vc.FAILSAFE_TIMER, "maider-failsafe.service")

# As the user's login, before anything needs root.
CMD_SUDO_CHECK = "sudo -n true"
CMD_LIST_GPUS = "nvidia-smi --query-gpu=name,memory.total --format=csv,noheader"

# As root (wrap with as_root).
ROOT_READ_DEPLOYMENT = f"cat {DEPLOYMENT_FILE} 2>/dev/null || echo '{{}}'"
# stdin: one authorized_keys line ending in "maider:<label>"; added once.
ROOT_AUTHORIZE_KEY = (f"umask 077 && mkdir -p /root/.ssh && touch {ROOT_AUTHORIZED_KEYS} && line=\"$(cat)\" && "
                      f"{{ grep -qxF \"$line\" {ROOT_AUTHORIZED_KEYS} || printf '%s\\n' \"$line\" >> "
                      f"{ROOT_AUTHORIZED_KEYS}; }}")
ROOT_INSTALL_RUNNER = f"umask 077 && mkdir -p {STATE_DIR} && cat > {RUNNER_PATH}"
# stdin: {"deployment": {...}, "cloud_config": {...}} as JSON. The runner records the deployment, then applies the
# cloud-config in the background (systemd-run), so this returns at once.
ROOT_START_BOOTSTRAP = (f"umask 077 && cat > {RUNNER_INPUT} && python3 {RUNNER_PATH} --start --input {RUNNER_INPUT}")
ROOT_TEARDOWN = " ; ".join((
    f"systemctl stop {BOOTSTRAP_UNIT} {PREFETCH_UNIT} 2>/dev/null",
    f"systemctl disable --now {' '.join(MAIDER_UNITS)} 2>/dev/null",
    f"if [ -f {vc.COMPOSE_FILE} ] && command -v docker >/dev/null; then (cd {vc.LLM_DIR} && docker compose down "
    "--volumes --remove-orphans); fi",
    "if command -v docker >/dev/null; then docker rm -f maider-prefetch >/dev/null 2>&1; "
    f"docker volume rm {' '.join(DOCKER_VOLUMES)} >/dev/null 2>&1; fi",
    f"rm -rf {' '.join(MAIDER_PATHS)}",
    # one maider session per machine: any marked key line left by an earlier, interrupted launch goes too
    f"if [ -f {ROOT_AUTHORIZED_KEYS} ]; then sed -i '/ {KEY_MARKER_PREFIX}[a-z0-9_-]*$/d' {ROOT_AUTHORIZED_KEYS}; fi",
    "systemctl daemon-reload 2>/dev/null",
    "true",
))


def key_marker(label: str) -> str:
    """The comment that marks a session's line in root's authorized_keys."""
    return f"{KEY_MARKER_PREFIX}{label}"


def root_remove_key(label: str) -> str:
    """Remove the session's authorized_keys line (by its marker) and nothing else; fine when it is not there."""
    return (f"if [ -f {ROOT_AUTHORIZED_KEYS} ]; then sed -i '/ {key_marker(label)}$/d' {ROOT_AUTHORIZED_KEYS}; fi")


def as_root(command: str, user: str) -> str:
    """``command`` run by root: through ``sudo -n`` (fails instead of asking for a password) unless ``user`` is root."""
    wrapped = f"sh -c {shlex.quote(command)}"
    return wrapped if user == "root" else f"sudo -n {wrapped}"
