"""A simulated machine the user already runs: its own host key, a sudoer login, a working NVIDIA driver, no cloud-init.

It answers ``app.domain.host_contract``'s commands the way an Ubuntu box does: ``sudo -n true``, ``nvidia-smi``, the
edits of root's authorized_keys (a real file under the VM's private folder, which is also what root may log in
with), and maider's provisioning runner -- the real ``cloud_init/apply-cloud-config.py`` as maider sent it, run with
``--root <private folder> --dry-run``, so the files it writes are real files a test can look at. From then on it is
a ``SimulatedVm`` configured by that cloud-config. The teardown command removes what maider put there. It counts
deployments started and removed and every reboot request (a machine maider did not create must never get one).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import paramiko

from app.domain import host_contract as hc
from app.domain import vm_contract as vc
from app.remote import load_public_key, new_keypair
from app.simulator.ssh_server import ExecResult, SshServer
from app.simulator.vm import SimulatedVm, VmBehaviour

SUDO_REFUSED = "sudo: a password is required\n"
_REMOVE_KEY = re.compile(r"maider:([a-z0-9_-]+)\$/d")


class BareHost(SimulatedVm):
    """One machine: ``user`` logs in with ``user_key``; root with whatever maider authorised."""

    def __init__(self, user: str, user_key_public: str, behaviour: VmBehaviour | None = None,
                 sudo_without_password: bool = True) -> None:
        super().__init__(new_keypair().private_openssh, [], "", behaviour or VmBehaviour.fast(needs_reboot=False))
        self.provisions_at_boot = False
        self.user = user
        self.user_keys = [load_public_key(user_key_public)]
        self.sudo_without_password = sudo_without_password
        self.refuse_logins = 0  # the next N login attempts are refused (a key the host no longer accepts)
        self.hang_ups = 0  # the next N connections are dropped before the SSH banner (an unreachable host)
        self.drop_after_start = False  # the next bootstrap starts, then the connection drops before the answer
        self.deployments_started = 0
        self.deployments_removed = 0
        self.reboot_requests = 0
        self.commands_seen: list[str] = []
        self._host_lock = threading.Lock()
        self._root_commands: dict[str, Callable[[Callable[[], bytes]], ExecResult]] = {
            hc.as_root(hc.ROOT_READ_DEPLOYMENT, "root"): lambda _in: self._read_deployment(),
            hc.as_root(hc.ROOT_AUTHORIZE_KEY, "root"): self._authorize,
            hc.as_root(hc.ROOT_INSTALL_RUNNER, "root"): self._install_runner,
            hc.as_root(hc.ROOT_START_BOOTSTRAP, "root"): self._start_bootstrap,
            hc.as_root(hc.ROOT_TEARDOWN, "root"): lambda _in: self._teardown(),
        }

    @property
    def host_public(self) -> str:
        """The key this host presents (what ``maider host add`` shows for confirmation)."""
        return f"{self._host_key.get_name()} {self._host_key.get_base64()}"

    def path(self, machine_path: str) -> str:
        """Where a file of this machine lives on the laptop."""
        return self.failsafe_path(machine_path)

    def root_key_lines(self) -> list[str]:
        try:
            with open(self.path(hc.ROOT_AUTHORIZED_KEYS), encoding="utf-8") as handle:
                return [line.strip() for line in handle if line.strip()]
        except FileNotFoundError:
            return []

    def deployment(self) -> dict:
        try:
            with open(self.path(hc.DEPLOYMENT_FILE), encoding="utf-8") as handle:
                return json.load(handle)
        except FileNotFoundError:
            return {}

    def plant_deployment(self, record: dict) -> None:
        """Put a deployment record on the machine as if something else had made it (tests)."""
        os.makedirs(os.path.dirname(self.path(hc.DEPLOYMENT_FILE)), exist_ok=True)
        with open(self.path(hc.DEPLOYMENT_FILE), "w", encoding="utf-8") as handle:
            json.dump(record, handle)

    def leftovers(self) -> list[str]:
        """What maider left behind: its files, units, containers and key lines."""
        found = [p for p in hc.MAIDER_PATHS if os.path.lexists(self.path(p))]
        found += [f"root key {line.split()[-1]}" for line in self.root_key_lines()
                  if line.split()[-1].startswith(hc.KEY_MARKER_PREFIX)]
        if self._stack_enabled:
            found.append(f"unit {vc.SYSTEMD_UNIT} enabled")
        if self.vllm is not None or self.webui is not None:
            found.append("containers running")
        return found

    def run_command(self, command: str, read_stdin: Callable[[], bytes]) -> ExecResult:
        command = command.strip()
        self.commands_seen.append(command)
        if command == hc.CMD_SUDO_CHECK:
            return ExecResult(0) if self.sudo_without_password else ExecResult(1, "", SUDO_REFUSED)
        if command == hc.CMD_LIST_GPUS:
            return self._list_gpus()
        if command == vc.CMD_REBOOT:
            self.reboot_requests += 1
        if command.startswith("sudo -n "):
            if not self.sudo_without_password:
                return ExecResult(1, "", SUDO_REFUSED)
            command = command[len("sudo -n "):]
        handler = self._root_commands.get(command)
        if handler is not None:
            return handler(read_stdin)
        removed = _REMOVE_KEY.search(command)
        if removed and command == hc.as_root(hc.root_remove_key(removed.group(1)), "root"):
            return self._remove_key(removed.group(1))
        return super().run_command(command, read_stdin)

    def _new_ssh_server(self, port: int) -> SshServer:
        return SshServer(self._host_key, [], self.run_command, self._forward_port, port=port, users=self._keys_for,
                         admit=self._admit)

    def _keys_for(self, username: str) -> list[paramiko.PKey]:
        if username == "root":
            return [load_public_key(line) for line in self.root_key_lines()]
        if username != self.user:
            return []
        with self._host_lock:
            if self.refuse_logins > 0:
                self.refuse_logins -= 1
                return []
        return self.user_keys

    def _admit(self) -> bool:
        with self._host_lock:
            if self.hang_ups > 0:
                self.hang_ups -= 1
                return False
        return True

    def _list_gpus(self) -> ExecResult:
        b = self.behaviour
        if b.needs_reboot:  # here: the driver is broken (no reboot would be tried on this machine)
            return ExecResult(9, "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
                                 "Make sure that the latest NVIDIA driver is installed and running.\n\n")
        return ExecResult(0, "".join(f"{b.gpu_name}, {b.gpu_memory_mb} MiB\n" for _ in range(b.gpus)))

    def _read_deployment(self) -> ExecResult:
        deployment = self.deployment()
        return ExecResult(0, (json.dumps(deployment) if deployment else "{}") + "\n")

    def _authorize(self, read_stdin: Callable[[], bytes]) -> ExecResult:
        line = read_stdin().decode().strip()
        with self._host_lock:
            lines = self.root_key_lines()
            if line not in lines:
                os.makedirs(os.path.dirname(self.path(hc.ROOT_AUTHORIZED_KEYS)), mode=0o700, exist_ok=True)
                with open(self.path(hc.ROOT_AUTHORIZED_KEYS), "a", encoding="utf-8") as handle:
                    handle.write(line + "\n")
        return ExecResult(0)

    def _remove_key(self, label: str) -> ExecResult:
        with self._host_lock:
            keep = [line for line in self.root_key_lines() if not line.endswith(" " + hc.key_marker(label))]
            if os.path.exists(self.path(hc.ROOT_AUTHORIZED_KEYS)):
                with open(self.path(hc.ROOT_AUTHORIZED_KEYS), "w", encoding="utf-8") as handle:
                    handle.writelines(line + "\n" for line in keep)
        return ExecResult(0)

    def _install_runner(self, read_stdin: Callable[[], bytes]) -> ExecResult:
        os.makedirs(os.path.dirname(self.path(hc.RUNNER_PATH)), mode=0o700, exist_ok=True)
        with open(self.path(hc.RUNNER_PATH), "wb") as handle:
            handle.write(read_stdin())
        return ExecResult(0)

    def _start_bootstrap(self, read_stdin: Callable[[], bytes]) -> ExecResult:
        if not os.path.exists(self.path(hc.RUNNER_PATH)):
            return ExecResult(2, "", f"python3: can't open file '{hc.RUNNER_PATH}': [Errno 2] No such file or "
                                     "directory\n")
        with open(self.path(hc.RUNNER_INPUT), "wb") as handle:
            handle.write(read_stdin())
        had_deployment = bool(self.deployment())
        done = subprocess.run([sys.executable, self.path(hc.RUNNER_PATH), "--start", "--input",
                               self.path(hc.RUNNER_INPUT), "--root", self.failsafe_root, "--dry-run"],
                              capture_output=True, text=True, timeout=60, check=False)
        if done.returncode == 0 and not had_deployment:
            self.deployments_started += 1
            try:
                with open(self.path(vc.ENV_FILE), encoding="utf-8") as handle:
                    self.env_text = handle.read()
            except FileNotFoundError:
                self.env_text = ""
            with self._lock:
                self._cloud_init_started = time.monotonic()  # the runner's runcmd: provision.sh, simulated
        if self.drop_after_start:
            self.drop_after_start = False
            return ExecResult(drop=True)
        return ExecResult(done.returncode, done.stdout, done.stderr)

    def _teardown(self) -> ExecResult:
        with self._lock:
            if self.deployment():
                self.deployments_removed += 1
            self._vllm_gen += 1
            self._stop_services()
            self.stage = None
            self._stack_enabled = False
            self._vllm_exists = False
            self._cloud_init_started = None
            self.weight_cache.clear()  # compose down --volumes: the weights volume goes too
            self.env_text = ""
        for machine_path in hc.MAIDER_PATHS:
            target = self.path(machine_path)
            if os.path.isdir(target) and not os.path.islink(target):
                shutil.rmtree(target, ignore_errors=True)
            elif os.path.lexists(target):
                os.remove(target)
        with self._host_lock:
            keep = [line for line in self.root_key_lines()
                    if not line.split()[-1].startswith(hc.KEY_MARKER_PREFIX)]
            if os.path.exists(self.path(hc.ROOT_AUTHORIZED_KEYS)):
                with open(self.path(hc.ROOT_AUTHORIZED_KEYS), "w", encoding="utf-8") as handle:
                    handle.writelines(line + "\n" for line in keep)
        return ExecResult(0)
