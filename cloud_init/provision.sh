#!/bin/bash
# maider: first-boot provisioning, run once by cloud-init (runcmd). Any failure stops here and makes
# `cloud-init status` report an error, with this script's output in /var/log/cloud-init-output.log.
# No reboot: maider reboots over SSH only if the driver is still not loaded afterwards.
set -euxo pipefail

NVIDIA_DRIVER="$1"
PREFETCH_MODEL="${2:-}"  # Hugging Face model id whose weights to fetch early; empty: images only
export DEBIAN_FRONTEND=noninteractive
# Set by apply-cloud-config.py on a machine the user already runs (maider host add): its firewall, NVIDIA driver,
# kernel modules, apt timers and an existing Docker stay as they are; only what is missing is installed.
OWN_MACHINE="${MAIDER_OWN_MACHINE:-}"
APT=(apt-get -y -q -o DPkg::Lock::Timeout=600)

# The failsafe's timer first, so it guards the VM even if a later step fails (it acts once maider arms it).
systemctl daemon-reload
systemctl enable --now '{{FAILSAFE_TIMER}}'

if [ -n "$OWN_MACHINE" ] && docker compose version >/dev/null 2>&1 && command -v nvidia-ctk >/dev/null \
        && docker info 2>/dev/null | grep -qi 'runtimes:.*nvidia'; then
    echo "maider: Docker, compose and the NVIDIA container runtime are already set up"
elif [ -n "$OWN_MACHINE" ] && command -v docker >/dev/null && ! docker compose version >/dev/null 2>&1; then
    # Docker's own packages would replace the user's docker.io (and its containerd) under their containers.
    echo "maider: Docker is installed here without its compose plugin: install it (apt install docker-compose-v2)" \
        "and launch again; maider does not replace your Docker" >&2
    exit 1
elif [ -n "$OWN_MACHINE" ] && command -v docker >/dev/null && [ -n "$(docker ps -q 2>/dev/null)" ]; then
    # Configuring the NVIDIA runtime restarts dockerd, which would stop every container running here.
    echo "maider: Docker has no NVIDIA runtime yet and containers are running here: install" \
        "nvidia-container-toolkit, set it up as Docker's runtime (NVIDIA's nvidia-ctk) and restart Docker when" \
        "they may stop, then launch again; maider does not restart your Docker" >&2
    exit 1
else
if [ -z "$OWN_MACHINE" ]; then
# No unattended upgrade while provisioning: a new kernel installed beside the driver boots without its module.
systemctl stop apt-daily.timer apt-daily-upgrade.timer unattended-upgrades.service || true
systemctl stop apt-daily.service apt-daily-upgrade.service || true
fi

"${APT[@]}" update
"${APT[@]}" install ca-certificates curl gnupg

if [ -z "$OWN_MACHINE" ]; then
"${APT[@]}" install ufw
# Firewall first: nothing but SSH comes in (vLLM and Open WebUI listen on 127.0.0.1 only anyway).
ufw default deny incoming
ufw default allow outgoing
ufw allow 22/tcp
ufw --force enable

# nouveau must not hold the GPU when the NVIDIA module loads, now or after a reboot (hence the initramfs).
cat > /etc/modprobe.d/blacklist-nouveau.conf <<'CONF'
blacklist nouveau
options nouveau modeset=0
CONF
update-initramfs -u
fi

# Docker Hub limits anonymous pulls per IP; its mirror on Google's registry serves the same images.
install -m 0755 -d /etc/docker
if [ -z "$OWN_MACHINE" ] || [ ! -e /etc/docker/daemon.json ]; then
    printf '{"registry-mirrors": ["%s"]}\n' '{{DOCKER_REGISTRY_MIRROR}}' > /etc/docker/daemon.json
fi

# Docker CE and the compose plugin from Docker's own apt repository.
install -m 0755 -d /etc/apt/keyrings
curl -fsSL https://download.docker.com/linux/ubuntu/gpg -o /etc/apt/keyrings/docker.asc
chmod a+r /etc/apt/keyrings/docker.asc
# shellcheck source=/dev/null
echo "deb [arch=$(dpkg --print-architecture) signed-by=/etc/apt/keyrings/docker.asc] https://download.docker.com/linux/ubuntu $(. /etc/os-release && echo "$VERSION_CODENAME") stable" \
    > /etc/apt/sources.list.d/docker.list

# NVIDIA container toolkit, configured before any pull starts (configuring it restarts dockerd; it keeps the mirror).
curl -fsSL https://nvidia.github.io/libnvidia-container/gpgkey \
    | gpg --batch --yes --dearmor -o /usr/share/keyrings/nvidia-container-toolkit-keyring.gpg
curl -fsSL https://nvidia.github.io/libnvidia-container/stable/deb/nvidia-container-toolkit.list \
    | sed 's#deb https://#deb [signed-by=/usr/share/keyrings/nvidia-container-toolkit-keyring.gpg] https://#g' \
    > /etc/apt/sources.list.d/nvidia-container-toolkit.list
"${APT[@]}" update
if [ -n "$OWN_MACHINE" ] && docker compose version >/dev/null 2>&1; then
    "${APT[@]}" install nvidia-container-toolkit  # the user's Docker stays (docker-ce would replace docker.io)
else
"${APT[@]}" install docker-ce docker-ce-cli containerd.io docker-compose-plugin nvidia-container-toolkit
fi
if [ -z "$OWN_MACHINE" ] || ! docker info 2>/dev/null | grep -qi 'runtimes:.*nvidia'; then
nvidia-ctk runtime configure --runtime=docker
systemctl restart docker
fi
fi

# Images and weights download in the background while the driver installs (the slowest steps overlap).
systemd-run --unit=maider-prefetch --collect --setenv=PREFETCH_MODEL="$PREFETCH_MODEL" /bin/bash '{{PREFETCH_SCRIPT}}'

# The pinned NVIDIA driver, headless (nvidia-driver-* pulls in X) plus nvidia-smi, built for the running kernel and,
# through the headers meta-package, for any kernel an upgrade installs later.
DRIVER_PACKAGES=("$NVIDIA_DRIVER")
case "$NVIDIA_DRIVER" in
    nvidia-driver-*)
        branch="${NVIDIA_DRIVER#nvidia-driver-}"
        if apt-cache show "nvidia-headless-$branch" >/dev/null 2>&1; then
            DRIVER_PACKAGES=("nvidia-headless-$branch" "nvidia-utils-$branch")
        fi
        ;;
esac
KERNEL_RELEASE="$(uname -r)"
# A GPU image that already runs a driver of the pinned branch or newer (DigitalOcean's AI/ML-ready image) needs no
# install: the launch skips the slowest step, and the note tells the user why it was fast.
WANTED_BRANCH="$(printf '%s' "$NVIDIA_DRIVER" | grep -o '[0-9]\{3,\}' | head -n 1 || true)"
PRESENT_DRIVER="$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -n 1 || true)"
if [ -n "$OWN_MACHINE" ]; then
    # The user's driver is theirs: maider checks it (nvidia-smi) and never replaces it or reboots this machine.
    nvidia-smi -L || echo "maider: the NVIDIA driver on this machine is not working (nvidia-smi failed)"
elif [ -n "$PRESENT_DRIVER" ] && [ -n "$WANTED_BRANCH" ] && [ "${PRESENT_DRIVER%%.*}" -ge "$WANTED_BRANCH" ] 2>/dev/null
then
    mkdir -p "$(dirname '{{DRIVER_NOTE_FILE}}')"
    echo "the image already runs NVIDIA driver $PRESENT_DRIVER (branch $WANTED_BRANCH or newer): no driver install, no reboot" \
        > '{{DRIVER_NOTE_FILE}}'
    echo "maider: $(cat '{{DRIVER_NOTE_FILE}}')"
else
"${APT[@]}" install "linux-headers-$KERNEL_RELEASE" "linux-headers-${KERNEL_RELEASE##*-}" "${DRIVER_PACKAGES[@]}"
modprobe nvidia || echo "maider: NVIDIA driver installed but not loaded; a reboot will load it"
fi
if [ -z "$OWN_MACHINE" ]; then
    systemctl start apt-daily.timer apt-daily-upgrade.timer || true
fi
systemctl daemon-reload
systemctl enable '{{SYSTEMD_UNIT}}'
systemctl start --no-block '{{SYSTEMD_UNIT}}'
echo "maider: provisioning done"
