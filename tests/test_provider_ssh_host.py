"""Your own GPU machine over SSH: ``maider host add/list/remove``, the pinned host key, the provisioning runner, a
launch that never reboots the machine, and a destroy that leaves nothing of maider's behind (and all of the user's).

The machine is the simulated bare host (real paramiko SSH, the real runner from ``cloud_init/``); the CLI runs through
click's runner with MAIDER_HOME in a temporary folder.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from app.cli import main
from app.domain import host_contract as hc
from app.domain import vm_contract as vc
from app.domain.cloud_init import TEMPLATE_DIR, CloudInitInputs, render_user_data
from app.engine.identity import ensure_identity, load_identity, pin_host_key
from app.extensions import db
from app.models import Session, SessionState
from app.providers.base import AuthError, InvalidRequest, NotFound, ProviderError
from app.providers.host_registry import HostRegistry, fingerprint
from app.providers.ssh_host import HostKeyChanged, SshHostProvider
from app.remote import new_keypair
from app.services import sessions as sessions_service
from app.simulator.bare_host import BareHost
from engine_helpers import FAST_TIMINGS, drive, in_state, launch, write_project
from worlds.ssh import HOST_NAME, USER, SshWorld, start_host, user_identity

RUNNER = TEMPLATE_DIR / hc.RUNNER_NAME


@pytest.fixture
def machine(tmp_path: Path) -> Iterator[tuple[BareHost, str]]:
    """A bare host and the key file its user logs in with."""
    identity, public = user_identity(tmp_path)
    host = start_host(public)
    try:
        yield host, identity
    finally:
        host.stop()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[SshWorld]:
    opened = SshWorld(tmp_path)
    try:
        yield opened
    finally:
        opened.close()


def host_add(machine: tuple[BareHost, str], *extra: str, answer: str | None = None, name: str = "box"):
    host, identity = machine
    return CliRunner().invoke(main, ["host", "add", name, f"{USER}@127.0.0.1", "--port", str(host.ssh_port),
                                     "--identity", identity, *extra], input=answer)


# maider host add / list / remove

def test_host_add_shows_the_fingerprint_and_pins_the_key_once_confirmed(machine) -> None:
    host, _ = machine
    shown = fingerprint(host.host_public.split()[1])
    result = host_add(machine, "--price", "0.35", answer="y\n")
    assert result.exit_code == 0, result.output
    assert shown in result.output and "Is this the key of your machine?" in result.output
    assert "1 GPU(s): NVIDIA RTX 4000 Ada Generation (20475 MiB)" in result.output
    saved = HostRegistry(Path(os.environ["MAIDER_HOME"])).get("box")
    assert saved is not None and saved.host_key_line == host.host_public and saved.price == 0.35
    assert oct(os.stat(Path(os.environ["MAIDER_HOME"]) / "hosts.json").st_mode & 0o777) == "0o600"
    assert hc.CMD_SUDO_CHECK in host.commands_seen and hc.CMD_LIST_GPUS in host.commands_seen

    listed = CliRunner().invoke(main, ["host", "list"])
    assert "box" in listed.output and "1x NVIDIA RTX 4000 Ada Generation" in listed.output and "0.35" in listed.output
    plan = SshHostProvider(Path(os.environ["MAIDER_HOME"])).gpu_plans("own")[0]
    assert (plan.id, plan.gpus, plan.gpu.key, plan.hourly_price) == ("box", 1, "rtx4000ada", 0.35)


def test_host_add_refused_without_confirmation_writes_nothing_and_sends_nothing(machine) -> None:
    host, _ = machine
    result = host_add(machine, answer="n\n")
    assert result.exit_code != 0 and "was not confirmed" in result.output
    assert HostRegistry(Path(os.environ["MAIDER_HOME"])).all() == []
    assert host.commands_seen == []  # not even a login: nothing was sent to an unconfirmed machine


def test_host_add_yes_accepts_for_scripts(machine) -> None:
    result = host_add(machine, "--yes")
    assert result.exit_code == 0 and "Accepted (--yes)" in result.output, result.output


def test_host_add_refuses_a_user_whose_sudo_wants_a_password(machine) -> None:
    machine[0].sudo_without_password = False
    result = host_add(machine, "--yes")
    assert result.exit_code != 0 and "NOPASSWD" in result.output and "root@" in result.output
    assert HostRegistry(Path(os.environ["MAIDER_HOME"])).all() == []


def test_host_add_refuses_a_machine_whose_driver_does_not_work(machine) -> None:
    host, _ = machine
    host.behaviour = replace(host.behaviour, needs_reboot=True)  # nvidia-smi fails
    result = host_add(machine, "--yes")
    assert result.exit_code != 0 and "nvidia-smi failed" in result.output
    assert "does not install or change it" in result.output


@pytest.mark.parametrize("args, message", [
    (["host", "add", "Bad_Name", "ubuntu@127.0.0.1", "--yes"], "lower-case letters"),
    (["host", "add", "box", "127.0.0.1", "--yes"], "is not user@address"),
    (["host", "add", "box", "ubuntu@127.0.0.1", "--price", "-1", "--yes"], "0 or more"),
    (["host", "add", "box", "ubuntu@127.0.0.1", "--identity", "/nonexistent/key", "--yes"], "does not exist"),
])
def test_host_add_bad_input_says_what_to_fix(args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, args)
    assert result.exit_code != 0 and message in result.output, result.output


def test_host_remove_is_refused_while_a_session_runs_on_it(world: SshWorld, monkeypatch) -> None:
    monkeypatch.setenv("MAIDER_HOME", str(world.home))
    instance = world.provider.create(world.spec("maider-busy"))
    refused = CliRunner().invoke(main, ["host", "remove", HOST_NAME])
    assert refused.exit_code != 0 and "maider-busy" in refused.output and "destroy" in refused.output
    world.provider.delete(instance.id)
    removed = CliRunner().invoke(main, ["host", "remove", HOST_NAME])
    assert removed.exit_code == 0 and "not touched" in removed.output
    assert world.host.is_ssh_up and world.host.reboot_requests == 0


def test_host_remove_forgets_a_launch_the_machine_never_started(world: SshWorld, monkeypatch) -> None:
    monkeypatch.setenv("MAIDER_HOME", str(world.home))
    world.provider.registry.add_session(HOST_NAME, "maider-interrupted")  # hosts.json says so, the machine does not
    removed = CliRunner().invoke(main, ["host", "remove", HOST_NAME])
    assert removed.exit_code == 0, removed.output


def test_host_remove_is_refused_while_the_machine_cannot_say(world: SshWorld, monkeypatch) -> None:
    monkeypatch.setenv("MAIDER_HOME", str(world.home))
    world.provider.create(world.spec("maider-busy"))
    world.fail_next("get", "server_error", times=5)
    refused = CliRunner().invoke(main, ["host", "remove", HOST_NAME])
    assert refused.exit_code != 0 and "try again when the machine answers" in refused.output
    assert world.provider.registry.get(HOST_NAME) is not None


# the pinned host key

def test_a_changed_host_key_is_refused_with_both_fingerprints_and_never_means_gone(world: SshWorld) -> None:
    instance = world.provider.create(world.spec("maider-pinned"))
    other = new_keypair().public_openssh.split()
    world.provider.registry.update(HOST_NAME, lambda h: replace(h, host_key=other[1]))  # as if reinstalled
    for call in (world.provider.get, world.provider.delete):
        with pytest.raises(HostKeyChanged) as refused:
            call(instance.id)
        assert isinstance(refused.value, AuthError) and not isinstance(refused.value, NotFound)
        assert refused.value.presented == fingerprint(world.host.host_public.split()[1])
        assert refused.value.expected == fingerprint(other[1]) and "maider host remove" in str(refused.value)
    assert world.live() == [instance.id]


def test_an_unregistered_host_is_an_error_not_a_gone_instance(world: SshWorld) -> None:
    instance = world.provider.create(world.spec("maider-lost"))
    world.provider.registry.remove(HOST_NAME)
    with pytest.raises(ProviderError) as raised:
        world.provider.get(instance.id)
    assert not isinstance(raised.value, NotFound) and "maider host add" in str(raised.value)


def test_a_second_session_on_a_busy_host_is_refused(world: SshWorld) -> None:
    world.provider.create(world.spec("maider-first"))
    with pytest.raises(ProviderError, match="already runs maider session 'maider-first'"):
        world.provider.create(world.spec("maider-second"))
    assert world.creates() == 1


def test_no_failsafe_token_on_your_own_machine(world: SshWorld) -> None:
    from datetime import datetime

    with pytest.raises(ProviderError, match="no failsafe on your own machine"):
        world.provider.mint_session_token("maider-x-failsafe", datetime(2030, 1, 1))
    world.provider.revoke_session_token("anything")  # nothing to revoke, no error


def test_destroy_removes_only_maiders_things(world: SshWorld) -> None:
    theirs = new_keypair().public_openssh
    os.makedirs(os.path.dirname(world.host.path(hc.ROOT_AUTHORIZED_KEYS)), exist_ok=True)
    stale = new_keypair().public_openssh.split()[:2] + [hc.key_marker("maider-interrupted-launch")]
    Path(world.host.path(hc.ROOT_AUTHORIZED_KEYS)).write_text(f"{theirs}\n{' '.join(stale)}\n")
    Path(world.host.path("/etc/hostname")).parent.mkdir(parents=True, exist_ok=True)
    Path(world.host.path("/etc/hostname")).write_text("my-box\n")
    instance = world.provider.create(world.spec("maider-clean"))
    assert any(line.endswith(" maider:maider-clean") for line in world.host.root_key_lines())
    assert world.host.deployment()["label"] == "maider-clean"
    world.provider.delete(instance.id)
    with pytest.raises(NotFound):
        world.provider.get(instance.id)
    assert world.host.root_key_lines() == [theirs]
    assert Path(world.host.path("/etc/hostname")).read_text() == "my-box\n"
    assert world.leftovers() == [] and world.host.reboot_requests == 0 and world.host.is_ssh_up


# through the engine

@pytest.fixture
def engine_world(app, world: SshWorld) -> Iterator[SshWorld]:
    app.config["MAIDER_PROVIDER_FACTORY"] = lambda name, settings, home: world.provider
    app.config["MAIDER_TIMINGS"] = FAST_TIMINGS
    write_project(Path(app.config["MAIDER_WORKDIR"]), *world.project_env())
    try:
        yield world
    finally:
        from app.engine.runtime import runtime

        runtime(app).close()


def test_launch_pins_the_hosts_own_key_and_applies_the_cloud_config_without_its_ssh_identity(
        app, engine_world: SshWorld) -> None:
    world = engine_world
    name = launch(app, "own", Path(app.config["MAIDER_WORKDIR"]))
    ready = drive(app, name, in_state(SessionState.READY, SessionState.FAILED), timeout=60)
    assert ready.status == "ready", ready.status_message
    assert (ready.hourly_price or 0) == 0 and ready.instance_id == f"{HOST_NAME}/{world.host.deployment()['label']}"
    with app.app_context():
        identity = load_identity(Path(app.config["MAIDER_HOME"]), ready.uid)
    assert identity.host_public == world.host.host_public  # the machine's key, not the one in the cloud-config
    env = Path(world.host.path(vc.ENV_FILE))
    assert oct(env.stat().st_mode & 0o777) == "0o600" and identity.api_key in env.read_text()
    assert not os.path.exists(world.host.path("/etc/ssh"))  # host keys in the cloud-config were not applied
    with app.app_context():
        events = db.session.get(Session, ready.id).events
        assert not [e.message for e in events if e.kind == "warning"]  # no failsafe is a fact here, not a danger
        assert any("no failsafe on your own machine" in e.message for e in events if e.kind == "note")
        sessions_service.request_destroy(name, actor="tester")
    drive(app, name, in_state(SessionState.DESTROYED), timeout=60)
    assert world.leftovers() == [] and world.creates() == 1 and world.deletes() == 1
    assert world.host.reboot_requests == 0 and world.host.boot_count == 1 and world.host.is_ssh_up


def test_a_broken_driver_fails_the_launch_without_rebooting_the_machine(app, engine_world: SshWorld) -> None:
    world = engine_world
    world.host.behaviour = replace(world.host.behaviour, needs_reboot=True)  # the driver broke after host add
    name = launch(app, "nodriver", Path(app.config["MAIDER_WORKDIR"]))
    failed = drive(app, name, in_state(SessionState.FAILED, SessionState.READY), timeout=60)
    assert failed.status == "failed"
    assert "does not reboot machines it did not create" in failed.status_message
    assert world.host.reboot_requests == 0 and world.host.boot_count == 1 and world.host.is_ssh_up
    assert world.leftovers() == [] and world.live() == []


def test_pin_host_key_replaces_only_the_public_key_maider_accepts(tmp_path: Path) -> None:
    made = ensure_identity(tmp_path, "uid-1")
    theirs = new_keypair().public_openssh.split()
    pin_host_key(tmp_path, "uid-1", f"{theirs[0]} {theirs[1]}")
    pinned = load_identity(tmp_path, "uid-1")
    assert pinned.host_public == f"{theirs[0]} {theirs[1]}" and pinned.client_private == made.client_private
    with pytest.raises(ValueError):
        pin_host_key(tmp_path, "uid-1", "not a key")


# the provisioning runner

def _sample_cloud_config(tmp_path: Path) -> Path:
    host, client = new_keypair(), new_keypair()
    user_data = render_user_data(CloudInitInputs(host_key_private=host.private_openssh,
                                                 host_key_public=host.public_openssh,
                                                 authorized_key=client.public_openssh, env_file="MODEL_ID=x/y\n",
                                                 model_id="x/y", hostname="maider-sample"))
    config = yaml.safe_load(user_data)
    config["write_files"] += [{"path": "/etc/ssh/sshd_config.d/50-maider.conf", "content": "PermitRootLogin yes\n"},
                              {"path": "/root/.ssh/authorized_keys", "content": client.public_openssh + "\n"},
                              {"path": "/etc/sudoers.d/maider", "content": "ALL ALL=(ALL) NOPASSWD: ALL\n"}]
    path = tmp_path / "cloud-config.json"
    path.write_text(json.dumps(config))
    return path


def test_runner_writes_the_stack_under_a_root_prefix_and_skips_the_ssh_identity(tmp_path: Path) -> None:
    config = _sample_cloud_config(tmp_path)
    root = tmp_path / "machine"
    done = subprocess.run([sys.executable, str(RUNNER), "--config", str(config), "--root", str(root), "--dry-run"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (root / vc.ENV_FILE.lstrip("/")).read_text() == "MODEL_ID=x/y\n"
    assert oct((root / vc.ENV_FILE.lstrip("/")).stat().st_mode & 0o777) == "0o600"
    assert (root / vc.COMPOSE_FILE.lstrip("/")).is_file()
    assert (root / "etc/systemd/system" / vc.SYSTEMD_UNIT).is_file()
    for skipped in ("etc/ssh", "root/.ssh", "etc/sudoers.d"):
        assert not (root / skipped).exists(), skipped
    for key in ("ssh_keys", "ssh_authorized_keys", "hostname", "disable_root"):
        assert f"skipped {key}: this machine keeps its own SSH identity and users" in done.stdout
    assert "would run ['bash', '/opt/llm/provision.sh'" in done.stdout
    status = json.loads((root / hc.BOOTSTRAP_STATUS_FILE.lstrip("/")).read_text())
    assert status["status"] == "done" and status["errors"] == []
    assert not config.exists()  # it held the .env's secrets: read once, then gone


def test_runner_start_records_the_deployment_once(tmp_path: Path) -> None:
    root = tmp_path / "machine"
    payload = {"deployment": {"label": "maider-a", "tags": ["maider"]},
               "cloud_config": {"write_files": [], "runcmd": [["false"]]}}

    def start(label: str) -> subprocess.CompletedProcess:
        body = {**payload, "deployment": {**payload["deployment"], "label": label}}
        (tmp_path / "in.json").write_text(json.dumps(body))
        return subprocess.run([sys.executable, str(RUNNER), "--start", "--input", str(tmp_path / "in.json"),
                               "--root", str(root), "--dry-run"], capture_output=True, text=True, timeout=60)

    assert start("maider-a").returncode == 0
    assert json.loads((root / hc.DEPLOYMENT_FILE.lstrip("/")).read_text())["label"] == "maider-a"
    assert start("maider-a").returncode == 0 and "already started" in start("maider-a").stdout
    assert start("maider-b").returncode == 3


def test_runner_reports_a_failed_command_as_an_error_status(tmp_path: Path) -> None:
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"runcmd": [["true"], ["sh", "-c", "exit 7"], ["touch", str(tmp_path / "x")]]}))
    done = subprocess.run([sys.executable, str(RUNNER), "--config", str(config), "--root", str(tmp_path / "m")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    status = json.loads((tmp_path / "m" / hc.BOOTSTRAP_STATUS_FILE.lstrip("/")).read_text())
    assert status["status"] == "error" and "exited 7" in status["errors"][0]
    assert not (tmp_path / "x").exists()  # stops at the first failure, like cloud-init's runcmd script


def test_engine_reads_the_runners_status_first() -> None:
    assert vc.CMD_CLOUD_INIT_STATUS.startswith(f"cat {hc.BOOTSTRAP_STATUS_FILE} 2>/dev/null || cloud-init status")
    assert hc.BOOTSTRAP_LOG in vc.CMD_CLOUD_INIT_LOG_TAIL


def test_runner_passes_ruff() -> None:
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed (pip install -e '.[test]')")
    result = subprocess.run([ruff, "check", "--no-cache", "--isolated", "--select", "E,F,W,B,UP,RUF,EXE",
                             "--line-length", "120", str(RUNNER)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_host_commands_pass_shellcheck(tmp_path: Path) -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (apt install shellcheck)")
    commands = [hc.ROOT_READ_DEPLOYMENT, hc.ROOT_AUTHORIZE_KEY, hc.ROOT_INSTALL_RUNNER, hc.ROOT_START_BOOTSTRAP,
                hc.ROOT_TEARDOWN, hc.root_remove_key("maider-x")]
    script = tmp_path / "commands.sh"
    script.write_text("#!/bin/sh\n" + "".join(f"{c}\n" for c in commands))
    result = subprocess.run([shellcheck, "--shell=sh", "--severity=style", str(script)], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stdout


def test_provisioning_on_your_own_machine_keeps_its_firewall_driver_and_docker(tmp_path: Path) -> None:
    """provision.sh as the runner starts it (MAIDER_OWN_MACHINE=1) on a machine with Docker and the toolkit: every
    system command is a stub that logs its call, so the script runs here without changing this machine."""
    from app.domain.cloud_init import fill_template

    stubs, log = tmp_path / "bin", tmp_path / "calls.log"
    stubs.mkdir()
    answers = {"docker": 'case "$1" in info) echo " Runtimes: io.containerd.runc.v2 nvidia runc";; esac',
               "nvidia-smi": 'echo "GPU 0: NVIDIA RTX 4000 Ada Generation"'}
    for name in ("systemctl", "docker", "nvidia-ctk", "nvidia-smi", "systemd-run", "apt-cache", "apt-get", "ufw",
                 "update-initramfs", "modprobe", "reboot", "curl", "gpg", "shutdown"):
        (stubs / name).write_text(f'#!/bin/sh\necho "{name} $*" >> "{log}"\n{answers.get(name, "")}\nexit 0\n')
        (stubs / name).chmod(0o755)
    script = tmp_path / "provision.sh"
    script.write_text(fill_template((TEMPLATE_DIR / "provision.sh").read_text()))
    done = subprocess.run(["bash", str(script), "nvidia-driver-570", "Qwen/Qwen2.5-Coder-7B-Instruct-AWQ"],
                          env={"PATH": f"{stubs}:/usr/bin:/bin", "MAIDER_OWN_MACHINE": "1"}, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    calls = log.read_text().splitlines()
    assert "nvidia-smi -L" in calls and f"systemctl enable {vc.SYSTEMD_UNIT}" in calls
    assert any(c.startswith("systemd-run --unit=maider-prefetch") for c in calls)
    for untouched in ("apt-get", "ufw", "update-initramfs", "modprobe", "reboot", "shutdown", "nvidia-ctk"):
        assert not any(c.split()[0] == untouched for c in calls), (untouched, calls)
    assert not any("restart docker" in c or "apt-daily" in c for c in calls), calls


@pytest.mark.parametrize("docker, refusal", [
    ('case "$1" in compose) exit 1;; esac', "without its compose plugin"),
    ('case "$1" in info) echo " Runtimes: runc";; ps) echo 3f2a1b;; esac', "containers are running here"),
])
def test_provisioning_never_replaces_or_restarts_your_docker(tmp_path: Path, docker: str, refusal: str) -> None:
    """Docker without compose (docker-ce would replace docker.io), or without the NVIDIA runtime while containers
    run (configuring it restarts dockerd): the launch stops with what to do, and nothing is installed or restarted."""
    from app.domain.cloud_init import fill_template

    stubs, log = tmp_path / "bin", tmp_path / "calls.log"
    stubs.mkdir()
    for name in ("systemctl", "docker", "nvidia-ctk", "nvidia-smi", "systemd-run", "apt-cache", "apt-get", "curl",
                 "gpg"):
        answer = docker if name == "docker" else ""
        (stubs / name).write_text(f'#!/bin/sh\necho "{name} $*" >> "{log}"\n{answer}\nexit 0\n')
        (stubs / name).chmod(0o755)
    script = tmp_path / "provision.sh"
    script.write_text(fill_template((TEMPLATE_DIR / "provision.sh").read_text()))
    done = subprocess.run(["bash", str(script), "nvidia-driver-570", ""], capture_output=True, text=True, timeout=60,
                          env={"PATH": f"{stubs}:/usr/bin:/bin", "MAIDER_OWN_MACHINE": "1"})
    assert done.returncode == 1 and refusal in done.stderr and "maider does not" in done.stderr
    calls = log.read_text().splitlines()
    assert not any(c.startswith(("apt-get", "nvidia-ctk")) or "restart docker" in c for c in calls), calls


def test_a_machine_with_its_own_opt_llm_is_refused_and_keeps_it(world: SshWorld) -> None:
    """maider removes /opt/llm when a session ends, so a folder of the user's there must stop the launch first."""
    theirs = Path(world.host.path(vc.LLM_DIR))
    theirs.mkdir(parents=True)
    (theirs / "notes.txt").write_text("the user's own")
    with pytest.raises(InvalidRequest, match="already has /opt/llm"):
        world.provider.create(world.spec("maider-opt-llm"))
    assert (theirs / "notes.txt").read_text() == "the user's own"
    assert world.live() == [] and world.leftovers() == [f"{HOST_NAME}: {vc.LLM_DIR}"]  # theirs, nothing of maider's
