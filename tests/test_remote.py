"""app.remote against real SSH servers: the simulated VM's paramiko sshd and, where installed, OpenSSH's sshd."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from app.domain import vm_contract as vc
from app.remote import (CommandTimeout, HostKeyMismatch, KeyPair, RemoteError, RemoteHost, SshAuthError,
                        SshUnreachable, load_private_key, load_public_key, new_keypair, same_key)
from app.simulator.vm import SimulatedVm, VmBehaviour
from engine_helpers import wait_for

SSHD = "/usr/sbin/sshd"


@pytest.fixture
def make_vm(keys: tuple[KeyPair, KeyPair]) -> Iterator[Callable[..., SimulatedVm]]:
    host, client = keys
    vms: list[SimulatedVm] = []

    def make(**behaviour: object) -> SimulatedVm:
        vm = SimulatedVm(host.private_openssh, [client.public_openssh], "MODEL_ID=m\n",
                         VmBehaviour.fast(**behaviour), configured=True)
        vm.start()
        vms.append(vm)
        if not behaviour.get("ssh_never"):
            wait_for(lambda: vm.is_ssh_up)
        return vm

    yield make
    for vm in vms:
        vm.stop()


def remote_for(port: int, host_key: str, client_key: str) -> RemoteHost:
    return RemoteHost("127.0.0.1", port, load_public_key(host_key), load_private_key(client_key), connect_timeout=2)


def test_keypair_round_trips_and_garbage_is_refused(keys):
    host, _ = keys
    assert host.private_openssh.startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert same_key(load_private_key(host.private_openssh), load_public_key(host.public_openssh))
    with pytest.raises(RemoteError):
        load_public_key("ssh-ed25519 not-base64!")
    with pytest.raises(RemoteError):
        load_private_key("-----BEGIN OPENSSH PRIVATE KEY-----\nnope\n-----END OPENSSH PRIVATE KEY-----\n")


def test_run_returns_output_and_exit_code_and_feeds_stdin(make_vm, keys):
    host, client = keys
    remote = remote_for(make_vm().ssh_port, host.public_openssh, client.private_openssh)
    try:
        boot = remote.run(vc.CMD_BOOT_ID)
        assert boot.ok and len(boot.stdout.strip()) == 36
        assert remote.run(vc.CMD_WRITE_ENV, stdin=b"MODEL_ID=other\n").ok
        assert remote.run(vc.CMD_READ_ENV).stdout == "MODEL_ID=other\n"
        missing = remote.run("rm -rf /")
        assert missing.exit_code == 127 and "command not found" in missing.stderr
        with pytest.raises(CommandTimeout):
            remote.run(vc.CMD_KEEP_PTY, timeout=0.3)  # never exits
    finally:
        remote.close()


def test_commands_from_many_threads_share_one_transport(make_vm, keys):
    host, client = keys
    vm = make_vm()
    remote = remote_for(vm.ssh_port, host.public_openssh, client.private_openssh)
    results: list[str] = []

    def worker() -> None:
        for _ in range(5):
            results.append(remote.run(vc.CMD_BOOT_ID).stdout)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    remote.close()
    assert len(results) == 30 and len(set(results)) == 1


def test_a_different_host_key_is_refused_with_both_fingerprints(make_vm, keys):
    host, client = keys
    vm = make_vm(wrong_host_key=True)
    remote = remote_for(vm.ssh_port, host.public_openssh, client.private_openssh)
    with pytest.raises(HostKeyMismatch) as caught:
        remote.connect()
    assert caught.value.expected == load_public_key(host.public_openssh).fingerprint
    assert caught.value.presented.startswith("SHA256:") and caught.value.presented != caught.value.expected
    assert "PRIVATE KEY" not in str(caught.value)
    assert not remote.is_alive()


def test_an_unknown_client_key_is_refused(make_vm, keys):
    host, _ = keys
    stranger = new_keypair()
    remote = remote_for(make_vm().ssh_port, host.public_openssh, stranger.private_openssh)
    with pytest.raises(SshAuthError):
        remote.connect()


def test_refused_port_and_never_answering_vm_are_unreachable(make_vm, keys):
    host, client = keys
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    with pytest.raises(SshUnreachable):
        remote_for(closed_port, host.public_openssh, client.private_openssh).connect()
    silent = make_vm(ssh_never=True)
    with pytest.raises(SshUnreachable):
        remote_for(silent.ssh_port, host.public_openssh, client.private_openssh).run(vc.CMD_BOOT_ID)


def test_forward_to_a_closed_vm_port_is_a_remote_error(make_vm, keys):
    host, client = keys
    remote = remote_for(make_vm().ssh_port, host.public_openssh, client.private_openssh)
    try:
        with pytest.raises(RemoteError):
            remote.open_channel("127.0.0.1", 9)
        assert remote.is_alive() and remote.ping()  # a refused forward does not kill the transport
    finally:
        remote.close()


@pytest.fixture
def openssh_server(tmp_path: Path, keys: tuple[KeyPair, KeyPair]) -> Iterator[int]:
    """OpenSSH's sshd on a free loopback port with maider's keys (recipe in reference/testing-recipes.md)."""
    if not (os.path.exists(SSHD) and os.geteuid() == 0):
        pytest.skip("needs OpenSSH's sshd and root")
    host, client = keys
    Path("/run/sshd").mkdir(exist_ok=True)
    (tmp_path / "host_key").write_text(host.private_openssh)
    (tmp_path / "host_key").chmod(0o600)
    (tmp_path / "authorized_keys").write_text(client.public_openssh + "\n")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = tmp_path / "sshd_config"
    config.write_text(f"Port {port}\nListenAddress 127.0.0.1\nHostKey {tmp_path / 'host_key'}\n"
                      f"AuthorizedKeysFile {tmp_path / 'authorized_keys'}\nPidFile {tmp_path / 'sshd.pid'}\n"
                      "UsePAM no\nStrictModes no\nPasswordAuthentication no\nAllowTcpForwarding yes\n"
                      "PermitRootLogin prohibit-password\n")
    process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: _listening(port))
        yield port
    finally:
        process.terminate()
        process.wait(5)


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
    except OSError:
        return False
    return True


@pytest.mark.skipif(shutil.which("ssh") is None, reason="OpenSSH not installed")
def test_real_openssh_server_pinned_key_commands_and_pty(openssh_server, keys):
    host, client = keys
    remote = remote_for(openssh_server, host.public_openssh, client.private_openssh)
    try:
        result = remote.run("echo out; echo err >&2; exit 3")
        assert (result.exit_code, result.stdout, result.stderr) == (3, "out\n", "err\n")
        assert remote.run("cat", stdin=b"through stdin").stdout == "through stdin"
        pty = remote.keep_pty()
        assert not pty.closed
        pty.close()
    finally:
        remote.close()
    impostor = remote_for(openssh_server, new_keypair().public_openssh, client.private_openssh)
    with pytest.raises(HostKeyMismatch):
        impostor.connect()
