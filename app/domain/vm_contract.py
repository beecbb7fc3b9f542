"""The contract between maider and a VM it created: paths, services, ports and the exact commands maider runs.

One source of truth for three parties: the cloud-init templates that build the VM (``app.domain.cloud_init``), the
engine that drives it over SSH (``app.engine``), and the simulated VM (``app.simulator``) that stands in for it in
demo mode and tests. Change a command here and all three follow.
"""
from __future__ import annotations

LLM_DIR = "/opt/llm"
ENV_FILE = f"{LLM_DIR}/.env"  # 0600, root: vLLM/Open WebUI settings and secrets (never in the compose file)
COMPOSE_FILE = f"{LLM_DIR}/docker-compose.yml"
STAGE_FILE = "/var/lib/maider/stage"  # one word, written by the VM-side start script (see STAGES)
# One line from the VM-side scripts when the start cannot succeed by waiting (Docker Hub's pull limit, a load that
# stalled): shown first by CMD_VLLM_LOGS so the diagnosis reads it with vLLM's own log. Removed when the stack runs.
PROBLEM_FILE = "/var/lib/maider/problem"
DRIVER_NOTE_FILE = "/var/lib/maider/driver-note"  # written when the image's own driver made the install unnecessary
SYSTEMD_UNIT = "maider-llm.service"  # starts the compose stack once the GPU is visible
VLLM_CONTAINER = "vllm"  # container_name of the vLLM service: logs are read by this name, never "the newest"
WEBUI_CONTAINER = "open-webui"

VLLM_PORT = 8000  # vLLM listens on the VM's 127.0.0.1:8000 only
WEBUI_PORT = 3000  # Open WebUI on the VM's 127.0.0.1:3000 only

# Values of STAGE_FILE, in order. "pulling" = docker images being pulled; "starting" = compose up issued, vLLM is
# downloading/loading; "running" = vLLM answered /health on the VM.
STAGES = ("pulling", "starting", "running")

# Keys of ENV_FILE that maider writes. The fake vLLM reads the same keys.
ENV_KEYS = (
    "MODEL_ID", "SERVED_MODEL_NAME", "VLLM_API_KEY", "HUGGING_FACE_HUB_TOKEN",
    "VLLM_MAX_MODEL_LEN", "VLLM_GPU_MEMORY_UTILIZATION", "VLLM_MAX_NUM_SEQS", "VLLM_TENSOR_PARALLEL_SIZE",
    "VLLM_DTYPE", "VLLM_KV_CACHE_DTYPE", "VLLM_ENFORCE_EAGER", "VLLM_EXTRA_ARGS", "NCCL_P2P_DISABLE",
    "VLLM_IMAGE", "OPEN_WEBUI_IMAGE", "WEBUI_SECRET_KEY",
)

# Commands maider sends over SSH (exec requests). Exit status and output as a real Ubuntu 24.04 VM gives them.
CMD_BOOT_ID = "cat /proc/sys/kernel/random/boot_id"
# {"status": "running"|"done"|"error", "errors": [...]}. A machine the user runs has no cloud-init for maider: its
# provisioning runner (cloud_init/apply-cloud-config.py) writes the same JSON to a file no cloud VM has.
CMD_CLOUD_INIT_STATUS = "cat /var/lib/maider/bootstrap-status.json 2>/dev/null || cloud-init status --format json"
CMD_CLOUD_INIT_LOG_TAIL = ("tail -n 80 /var/log/maider-bootstrap.log 2>/dev/null || "
                           "tail -n 80 /var/log/cloud-init-output.log")
# Exit 0 and one CSV line per GPU when the driver is loaded; non-zero ("couldn't communicate with the NVIDIA driver")
# when it is not -- that, after cloud-init is done, is the one reason maider reboots.
CMD_GPU_QUERY = ("nvidia-smi --query-gpu=index,name,memory.total,memory.used,utilization.gpu,temperature.gpu "
                 "--format=csv,noheader,nounits")
CMD_REBOOT = "systemctl reboot"
CMD_START_STACK = f"systemctl start {SYSTEMD_UNIT}"
CMD_READ_DRIVER_NOTE = f"cat {DRIVER_NOTE_FILE} 2>/dev/null || true"
CMD_READ_STAGE = f"cat {STAGE_FILE} 2>/dev/null || true"
CMD_VLLM_LOGS = f"cat {PROBLEM_FILE} 2>/dev/null; docker logs --tail 400 {VLLM_CONTAINER} 2>&1"
CMD_READ_ENV = f"cat {ENV_FILE}"
# The new file content arrives on stdin; written beside and renamed so a half-written file is never read.
CMD_WRITE_ENV = f"umask 077 && cat > {ENV_FILE}.tmp && mv {ENV_FILE}.tmp {ENV_FILE}"
# `restart` would keep the old environment: only a recreate re-reads ENV_FILE.
# The old container's PROBLEM_FILE line goes with it, so a fixed start is not diagnosed again.
CMD_RECREATE_VLLM = f"rm -f {PROBLEM_FILE}; cd {LLM_DIR} && docker compose up -d --force-recreate {VLLM_CONTAINER}"
# A pty session: OpenSSH's sshd sets TCP_NODELAY on the connection once a pty exists (the 44 ms forward trap).
CMD_KEEP_PTY = "sleep infinity"

# The failsafe (cloud_init/maider-failsafe.py, run every minute by FAILSAFE_TIMER): the VM deletes itself when maider
# goes silent and vLLM is idle, or its lifetime or budget ran out. Its configuration holds a short-lived provider token:
# written by maider over SSH only (stdin, 0600 root), never in user data.
FAILSAFE_CONFIG = "/etc/maider/failsafe.json"
FAILSAFE_HEARTBEAT = "/var/lib/maider/heartbeat"  # touched by maider at every monitor tick
FAILSAFE_STATE = "/var/lib/maider/failsafe-state.json"  # the failsafe's memory: vLLM's last activity, its last verdict
FAILSAFE_TIMER = "maider-failsafe.timer"
CMD_WRITE_FAILSAFE = ("umask 077 && mkdir -p /etc/maider /var/lib/maider && "
                      f"cat > {FAILSAFE_CONFIG}.tmp && mv {FAILSAFE_CONFIG}.tmp {FAILSAFE_CONFIG} && "
                      f"touch {FAILSAFE_HEARTBEAT}")
CMD_TOUCH_HEARTBEAT = f"touch {FAILSAFE_HEARTBEAT}"
CMD_DISARM_FAILSAFE = f"rm -f {FAILSAFE_CONFIG}"
