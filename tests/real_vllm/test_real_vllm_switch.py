"""maider's model switch on a real vLLM: read the VM's .env over SSH, rewrite it with ``update_env`` for the new
model's settings, write it back and recreate the vLLM container (the commands ``step_switching_model`` sends), then
the engine's readiness check reaches the second served name. Runs last: it leaves the server on the second model."""
from __future__ import annotations

import stat
from dataclasses import asdict

import pytest
from real_vllm_server import RealVllm, settings_for, tiny_model

from app.domain import vm_contract as vc
from app.domain.vllm_env import parse_env, update_env
from app.engine.health import probe_ready
from app.engine.startup import _ENV_FOR_CONFIG, _env_value
from app.remote import RemoteHost, load_private_key, load_public_key, new_keypair
from app.simulator.ssh_server import ExecResult, SshServer

SECOND_NAME = "tiny-coder-b"


def _vm_commands(server: RealVllm):
    """The VM side of the commands a switch sends, on the server's real .env file and process."""

    def handle_exec(command: str, read_stdin) -> ExecResult:
        if command == vc.CMD_READ_ENV:
            return ExecResult(stdout=server.env_file.read_text())
        if command == vc.CMD_WRITE_ENV:
            server.env_file.write_bytes(read_stdin())
            server.env_file.chmod(0o600)
            return ExecResult()
        if command == vc.CMD_RECREATE_VLLM:
            server.recreate()  # compose re-reads env_file and starts a fresh container
            return ExecResult(stderr=" Container llm-vllm-1  Started\n")
        if command == vc.CMD_KEEP_PTY:
            return ExecResult(hold=True)
        return ExecResult(127, stderr=f"not on this VM: {command}")

    return handle_exec


@pytest.mark.real_vllm_last
def test_switching_model_reaches_the_second_served_name(real_vllm: RealVllm) -> None:
    first_name = real_vllm.served_name
    first_env = parse_env(real_vllm.env_file.read_text())
    host, client = new_keypair(), new_keypair()
    sshd = SshServer(load_private_key(host.private_openssh), [load_public_key(client.public_openssh)],
                     _vm_commands(real_vllm), lambda port: None)
    sshd.start()
    remote = RemoteHost("127.0.0.1", sshd.port, load_public_key(host.public_openssh),
                        load_private_key(client.private_openssh), connect_timeout=5)
    try:
        wanted = asdict(settings_for(tiny_model("tiny-qwen2-b"), SECOND_NAME, real_vllm.port))
        env_text = remote.run(vc.CMD_READ_ENV, timeout=30).stdout
        updates = {key: _env_value(wanted[attr]) for key, attr in _ENV_FOR_CONFIG.items()}
        remote.run(vc.CMD_WRITE_ENV, stdin=update_env(env_text, updates).encode(), timeout=30)
        assert remote.run(vc.CMD_RECREATE_VLLM, timeout=300).exit_code == 0
    finally:
        remote.close()
        sshd.stop()

    real_vllm.wait_ready()
    env = parse_env(real_vllm.env_file.read_text())
    assert env["MODEL_ID"].endswith("tiny-qwen2-b") and env["SERVED_MODEL_NAME"] == SECOND_NAME
    assert env["VLLM_API_KEY"] == first_env["VLLM_API_KEY"]  # the switch keeps the VM's key and secrets
    assert stat.S_IMODE(real_vllm.env_file.stat().st_mode) == 0o600
    assert probe_ready(real_vllm.port, real_vllm.api_key, SECOND_NAME, timeout=30).ready
    old = probe_ready(real_vllm.port, real_vllm.api_key, first_name, timeout=30)
    assert not old.ready and old.detail == f"'{first_name}' is not served yet"
    assert real_vllm.log_text().count("maider: starting vLLM:") == 2
