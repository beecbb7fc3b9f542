"""Your own machine's world: the real SSH-host provider over real paramiko SSH against a simulated bare host.

The host (``app.simulator.bare_host``) is registered the way a user does it (``ssh_hosts.add_host``: host key shown
and confirmed, sudo checked, GPUs listed) and logs the user in with a key file, never this machine's agent. An SSH
host has no capacity or rate-limit answers: its faults are a refused login ("auth") and an unreachable host
("server_error"). Instances are deployments on the host, so "creates" and "deletes" count deployments started and
torn down there, and "leftovers" is whatever maider left on the machine.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from app.providers.base import InstanceSpec
from app.providers.ssh_host import SshHostProvider
from app.remote import new_keypair
from app.services import ssh_hosts
from app.simulator.bare_host import BareHost
from app.simulator.vm import VmBehaviour

HOST_NAME = "gpu-box"
USER = "ubuntu"
USER_DATA = "#cloud-config\nwrite_files: []\nruncmd: []\n"


def start_host(user_public: str, behaviour: VmBehaviour | None = None) -> BareHost:
    """A bare host with a working driver, SSH answering."""
    host = BareHost(USER, user_public, behaviour or VmBehaviour.fast(needs_reboot=False))
    host.start()
    deadline = time.monotonic() + 10
    while not host.is_ssh_up:
        if time.monotonic() > deadline:
            raise AssertionError("the simulated host never answered SSH")
        time.sleep(0.02)
    return host


def user_identity(folder: Path) -> tuple[str, str]:
    """A login key for the host's user: (private key file, public line)."""
    pair = new_keypair("user@laptop")
    path = folder / "id_ed25519"
    path.write_text(pair.private_openssh)
    os.chmod(path, 0o600)
    return str(path), pair.public_openssh


class SshWorld:
    name = "ssh"
    faults = frozenset({"auth", "server_error"})

    def __init__(self, tmp_path: Path) -> None:
        self.home = tmp_path / "ssh-world-home"
        self.home.mkdir(mode=0o700)
        self.identity, self.user_public = user_identity(tmp_path)
        self.host = start_host(self.user_public)
        self.hosts: dict[str, BareHost] = {}
        self.register(HOST_NAME, self.host)
        self.provider = SshHostProvider(self.home, connect_timeout=3)
        self._session_key = new_keypair().public_openssh

    def register(self, name: str, host: BareHost) -> None:
        ssh_hosts.add_host(self.home, name, f"{USER}@127.0.0.1", lambda *_shown: True, port=host.ssh_port,
                           identity=self.identity, connect_timeout=3)
        self.hosts[name] = host

    def spec(self, label: str) -> InstanceSpec:
        return InstanceSpec(label=label, region="own", plan=HOST_NAME, user_data=USER_DATA,
                            authorized_keys=(self._session_key,))

    def fail_next(self, operation: str, fault: str, times: int = 1) -> None:
        # A login is the same for every operation: the next `times` connections fail the same way.
        if fault == "auth":
            self.host.refuse_logins = times
        elif fault == "server_error":
            self.host.hang_ups = times
        else:
            raise ValueError(f"an SSH host has no '{fault}' answer")

    def heal(self) -> None:
        self.host.refuse_logins = self.host.hang_ups = 0

    def fail_after_create(self) -> None:
        self.host.drop_after_start = True

    def creates(self) -> int:
        return sum(h.deployments_started for h in self.hosts.values())

    def deletes(self) -> int:
        return sum(h.deployments_removed for h in self.hosts.values())

    def live(self) -> list[str]:
        return [f"{name}/{h.deployment()['label']}" for name, h in self.hosts.items() if h.deployment()]

    def add_foreign(self, label: str) -> str:
        """A second machine of the user's, running something of its own that merely looks like a deployment."""
        other = start_host(self.user_public)
        self.register("other-box", other)
        other.plant_deployment({"label": label, "tags": ["web"], "started_at": "2026-01-01T00:00:00"})
        return f"other-box/{label}"

    def leftovers(self) -> list[str]:
        return [f"{name}: {item}" for name, h in self.hosts.items() for item in h.leftovers()]

    def boot_vms(self, start_vm: Callable[[str], tuple[str, int]]) -> None:
        """The machine already exists: nothing boots per launch (the journey runs on this one host)."""

    def project_env(self) -> tuple[str, str]:
        return (f"PROVIDER=ssh\nREGION=own\nTYPE={HOST_NAME}\n"
                "MODEL_ID=Qwen/Qwen2.5-Coder-7B-Instruct-AWQ\nVLLM_MAX_MODEL_LEN=8192\n", "")

    def close(self) -> None:
        for h in self.hosts.values():
            h.stop()


@contextmanager
def world(tmp_path: Path) -> Iterator[SshWorld]:
    opened = SshWorld(tmp_path)
    try:
        yield opened
    finally:
        opened.close()
