"""The simulated GPU VM: boots, runs cloud-init, may need a reboot for the NVIDIA driver, pulls images, loads a model.

Every command in ``app.domain.vm_contract`` is answered as a real Ubuntu VM answers it (exit codes and texts
included), so the engine that drives this VM is the one that drives a real one. Anything else is "command not found"
(exit 127), so an engine that sends an unknown command fails loudly here instead of in front of a paying user.
Failure modes are picked by ``VmBehaviour``; see ``VllmFailure`` for what each one needs before it heals.
"""
from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Literal

import paramiko
import yaml

from app.benchmark.on_vm import CMD_RUN_BENCHMARK, VM_BASE_URL, VM_LOADER
from app.domain import vm_contract as vc
from app.domain.cloud_init import TEMPLATE_DIR, fill_template
from app.domain.vllm_env import parse_env  # the same reader maider uses, so both sides agree on quoting
from app.remote import load_private_key, load_public_key, new_keypair
from app.simulator import vllm_logs
from app.simulator.fake_vllm import FakeVllmConfig, FakeVllmServer, gpu_timing
from app.simulator.fake_webui import FakeWebUiServer
from app.simulator.ssh_server import ExecResult, SshServer

# kv_too_small: refuses to start while VLLM_MAX_MODEL_LEN > fitting_len.
# warmup_oom: fails warming up the sampler until VLLM_ENFORCE_EAGER=true or VLLM_GPU_MEMORY_UTILIZATION is below
#   warmup_oom_max_utilization (both are fixes vLLM's own message suggests).
# bf16_turing: fails until VLLM_DTYPE is half/float16.  gated: always fails (needs a token, not a retry).
# never_ready: loads forever and never listens.
VllmFailure = Literal["kv_too_small", "warmup_oom", "bf16_turing", "gated", "never_ready"]
SLICE_S = 0.02  # granularity of the simulated clock's waits (they end early on reboot/stop)
CACHED_LOAD_FACTOR = 0.3  # a model already in the weight cache loads in this fraction of load_s


@dataclass(frozen=True)
class VmBehaviour:
    """Timings (seconds, compressed) and failures of one simulated VM."""

    boot_s: float = 2.0  # create -> SSH answers
    configure_s: float = 4.0  # cloud-init run time after boot
    reboot_s: float = 2.0  # SSH down during a reboot
    pull_s: float = 2.0  # docker image pull (first start only)
    load_s: float = 4.0  # weight download + load (CACHED_LOAD_FACTOR of it when cached)
    needs_reboot: bool = True  # the NVIDIA driver only loads after a reboot (the usual case on a fresh VM)
    image_driver: str | None = None  # the image already runs this driver version (DigitalOcean's AI/ML image)
    cloud_init_error: bool = False  # cloud-init ends in "error"; the driver never gets installed
    ssh_never: bool = False  # port 22 never answers
    wrong_host_key: bool = False  # sshd presents a key other than the one in the cloud-config
    vllm_failure: VllmFailure | None = None
    fitting_len: int = 16384  # kv_too_small: the longest context the KV cache can hold
    warmup_oom_max_utilization: float = 0.85  # warmup_oom heals below this utilization
    gpus: int = 1
    gpu_name: str = "NVIDIA RTX 4000 Ada Generation"
    gpu_memory_mb: int = 20475  # per GPU, as nvidia-smi reports it
    ttft_s: float = 0.05  # fake vLLM: time to first token
    itl_s: float = 0.02  # fake vLLM: gap between tokens
    tokens_per_reply: int = 20
    prefill_tokens_per_s: float = 3000.0  # fake vLLM: prompt tokens per second per GPU (TTFT grows with the prompt)
    batch_slowdown: float = 0.03  # fake vLLM: each other running request slows TTFT and ITL by this fraction
    hidden_gpus: int = 0  # the last N GPUs are missing from nvidia-smi (fell off the bus), for 'maider check'
    failsafe_tick_s: float = 60.0  # real seconds between runs of the failsafe script (its systemd timer)
    failsafe_speed: float = 1.0  # the failsafe's clock: simulated seconds per real second

    @classmethod
    def fast(cls, **overrides: object) -> VmBehaviour:
        """Timings for tests: a whole launch in about a second."""
        timings = dict(boot_s=0.1, configure_s=0.2, reboot_s=0.1, pull_s=0.1, load_s=0.2, ttft_s=0.005,
                       itl_s=0.002, prefill_tokens_per_s=0.0, batch_slowdown=0.0)
        return replace(cls(**timings), **overrides)  # type: ignore[arg-type]


@dataclass(frozen=True)
class CloudConfigFacts:
    host_key_private: str  # ssh_keys.ed25519_private
    authorized_keys: list[str]  # ssh_authorized_keys (top level or users[0])
    env_file: str  # content of the write_files entry for vm_contract.ENV_FILE


def read_cloud_config(user_data: str) -> CloudConfigFacts:
    """Pick out of maider's cloud-config what a real VM would act on: its host key, root's keys and the .env."""
    if not user_data.lstrip().startswith("#cloud-config"):
        raise ValueError("user data is not a #cloud-config document")
    doc = yaml.safe_load(user_data) or {}
    host_key = ((doc.get("ssh_keys") or {}).get("ed25519_private") or "").strip()
    if not host_key:
        raise ValueError("cloud-config has no ssh_keys.ed25519_private")
    keys = list(doc.get("ssh_authorized_keys") or [])
    users = doc.get("users") or []
    if not keys and users and isinstance(users[0], dict):
        keys = list(users[0].get("ssh_authorized_keys") or [])
    env_text = ""
    for entry in doc.get("write_files") or []:
        if entry.get("path") == vc.ENV_FILE:
            content = entry.get("content") or ""
            if str(entry.get("encoding", "")).lower() in ("b64", "base64"):
                content = base64.b64decode(content).decode()
            env_text = content
    return CloudConfigFacts(host_key + "\n", keys, env_text)


def vm_from_user_data(user_data: str, behaviour: VmBehaviour | None = None, **kwargs: object) -> SimulatedVm:
    """A VM configured exactly by the cloud-config maider sent (not started)."""
    facts = read_cloud_config(user_data)
    return SimulatedVm(facts.host_key_private, facts.authorized_keys, facts.env_file, behaviour or VmBehaviour(),
                       **kwargs)  # type: ignore[arg-type]


class SimulatedVm:
    """One simulated VM: its sshd on 127.0.0.1:``ssh_port`` plus the VM-side state machine behind every command."""

    def __init__(self, host_key_private: str, authorized_keys: list[str], env_file: str, behaviour: VmBehaviour,
                 configured: bool = False, on_env_written: Callable[[str], None] | None = None) -> None:
        self.behaviour = behaviour
        self.env_text = env_file
        self._host_key = load_private_key(new_keypair().private_openssh if behaviour.wrong_host_key
                                          else host_key_private)
        self._authorized = [load_public_key(line) for line in authorized_keys if line.strip()]
        self._on_env_written = on_env_written
        self._lock = threading.RLock()
        self._stopped = threading.Event()
        self._threads: list[threading.Thread] = []
        self._ssh: SshServer | None = None
        self.ssh_port = 0
        self.power = "off"  # off -> booting -> running (-> rebooting -> running); stopped at the end
        self.boot_id = str(uuid.uuid4())
        self.boot_count = 0  # boots completed (SSH answering); a reboot adds one
        self._boot_gen = 0  # bumped by reboot/stop: ends the timeline threads of the previous boot
        self._vllm_gen = 0  # bumped by recreate/reboot/stop: ends the running vLLM "container"
        self._cloud_init_started: float | None = 0.0 if configured else None
        # cloud-init runs at the first boot; a machine without it (app.simulator.bare_host) waits for maider's runner
        self.provisions_at_boot = True
        self._driver_loaded = configured
        self._images_pulled = configured
        self._stack_enabled = configured  # systemd unit started once: containers come back after a reboot
        self.stage: str | None = None
        self.vllm_log: list[str] = []
        self._vllm_exists = False
        self.vllm: FakeVllmServer | None = None
        self.webui: FakeWebUiServer | None = None
        self.weight_cache: set[str] = set()
        # The failsafe: the real script from cloud_init/, run on this VM's files (a private folder stands in for /).
        self.failsafe_root = tempfile.mkdtemp(prefix="maider-sim-vm-")
        self.failsafe_log: list[str] = []  # what the script printed (its journal)
        self._failsafe_script = os.path.join(self.failsafe_root, "maider-failsafe.py")
        with open(self._failsafe_script, "w", encoding="utf-8") as handle:
            handle.write(fill_template((TEMPLATE_DIR / "maider-failsafe.py").read_text()))
        self._commands: dict[str, Callable[[Callable[[], bytes]], ExecResult]] = {
            vc.CMD_BOOT_ID: lambda _in: ExecResult(0, self.boot_id + "\n"),
            vc.CMD_CLOUD_INIT_STATUS: lambda _in: self._cloud_init_status(),
            vc.CMD_CLOUD_INIT_LOG_TAIL: lambda _in: ExecResult(0, "".join(f"{x}\n" for x in self._cloud_init_log())),
            vc.CMD_GPU_QUERY: lambda _in: self._gpu_query(),
            vc.CMD_REBOOT: lambda _in: self._request_reboot(),
            vc.CMD_START_STACK: lambda _in: self._start_stack(),
            vc.CMD_READ_STAGE: lambda _in: ExecResult(0, f"{self.stage}\n" if self.stage else ""),
            vc.CMD_READ_DRIVER_NOTE: lambda _in: ExecResult(0, (
                f"the image already runs NVIDIA driver {self.behaviour.image_driver} (branch 580 or newer): no driver "
                "install, no reboot\n") if self.behaviour.image_driver and self._cloud_init_state() == "done" else ""),
            vc.CMD_VLLM_LOGS: lambda _in: self._docker_logs(),
            vc.CMD_READ_ENV: lambda _in: ExecResult(0, self.env_text),
            vc.CMD_WRITE_ENV: self._write_env,
            vc.CMD_RECREATE_VLLM: lambda _in: self._recreate_vllm(),
            vc.CMD_KEEP_PTY: lambda _in: ExecResult(hold=True),
            CMD_RUN_BENCHMARK: self._python_in_vllm,
            vc.CMD_WRITE_FAILSAFE: self._write_failsafe,
            vc.CMD_TOUCH_HEARTBEAT: lambda _in: self._touch_heartbeat(),
            vc.CMD_DISARM_FAILSAFE: lambda _in: self._disarm_failsafe(),
        }

    def start(self, ssh_port: int = 0) -> None:
        """Power on: the SSH port is reserved now (refusing connections) and answers after ``boot_s``.

        ``ssh_port``: the port this VM had before maider restarted (a "cloud" VM keeps its address); any free port
        when that one is taken."""
        with self._lock:
            try:
                self._ssh = self._new_ssh_server(ssh_port)
            except OSError:
                self._ssh = self._new_ssh_server(0)
            self.ssh_port = self._ssh.port
            self.power = "booting"
            self._spawn(self._boot, self._boot_gen, self.behaviour.boot_s)
            self._spawn(self._failsafe_timer)

    def failsafe_path(self, vm_path: str) -> str:
        """Where a file of the VM's failsafe (e.g. ``vm_contract.FAILSAFE_CONFIG``) lives on this laptop."""
        return self.failsafe_root + vm_path

    def stop(self) -> None:
        """Power off for good: every connection and service ends, every thread is joined."""
        with self._lock:
            self._stopped.set()
            self._boot_gen += 1
            self._vllm_gen += 1
            self.power = "stopped"
            self._stop_services()
            ssh, self._ssh = self._ssh, None
        if ssh is not None:
            ssh.stop()
        for thread in list(self._threads):
            if thread is not threading.current_thread():
                thread.join(5)
        shutil.rmtree(self.failsafe_root, ignore_errors=True)

    @property
    def is_ssh_up(self) -> bool:
        return self.power == "running" and not self.behaviour.ssh_never

    def run_command(self, command: str, read_stdin: Callable[[], bytes]) -> ExecResult:
        """The VM's shell: the exact commands of the contract, anything else is not found."""
        handler = self._commands.get(command.strip())
        if handler is None:
            return ExecResult(127, "", f"bash: line 1: {command.split()[0] if command.split() else ''}: "
                                       "command not found\n")
        return handler(read_stdin)

    def _new_ssh_server(self, port: int) -> SshServer:
        return SshServer(self._host_key, self._authorized, self.run_command, self._forward_port, port=port)

    def _forward_port(self, vm_port: int) -> int | None:
        server = {vc.VLLM_PORT: self.vllm, vc.WEBUI_PORT: self.webui}.get(vm_port)
        return server.port if server is not None else None

    def _spawn(self, target: Callable[..., None], *args: object) -> None:
        self._threads = [t for t in self._threads if t.is_alive()]
        thread = threading.Thread(target=target, args=args, name=f"sim-vm-{target.__name__}", daemon=True)
        thread.start()  # before it is listed: stop() joins only threads that have started
        self._threads.append(thread)

    def _wait(self, seconds: float, still_wanted: Callable[[], bool]) -> bool:
        """Sleep on the simulated clock; False as soon as the caller's boot/container is gone."""
        deadline = time.monotonic() + seconds
        while still_wanted() and not self._stopped.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return True
            time.sleep(min(SLICE_S, remaining))
        return False

    def _boot(self, gen: int, seconds: float) -> None:
        if not self._wait(seconds, lambda: self._boot_gen == gen) or self.behaviour.ssh_never:
            return
        with self._lock:
            if self._boot_gen != gen or self._ssh is None:
                return
            self._ssh.start()
            self.power = "running"
            self.boot_count += 1
            if self._cloud_init_started is None and self.provisions_at_boot:
                self._cloud_init_started = time.monotonic()
            if self._stack_enabled and self._gpu_visible():
                self._vllm_gen += 1
                self._spawn(self._run_stack, self._vllm_gen)

    def _cloud_init_state(self) -> str:
        if self._cloud_init_started is None:
            return "not started"
        if self._cloud_init_started and time.monotonic() - self._cloud_init_started < self.behaviour.configure_s:
            return "running"
        return "error" if self.behaviour.cloud_init_error else "done"

    def _cloud_init_status(self) -> ExecResult:
        state = self._cloud_init_state()
        errors = (["('scripts_user', RuntimeError('Runparts: 1 failures (part-001) in 1 attempted commands'))"]
                  if state == "error" else [])
        body = {"boot_status_code": "enabled-by-generator", "datasource": "linode", "detail": "DataSourceLinode",
                "errors": errors, "extended_status": state, "last_update": _now_text(),
                "recoverable_errors": {}, "status": state}
        return ExecResult(1 if state == "error" else 0, json.dumps(body, indent=1) + "\n")

    def _cloud_init_log(self) -> list[str]:
        started = self._cloud_init_started
        if started is None:
            return []
        elapsed = 1.0 if not started else (time.monotonic() - started) / max(self.behaviour.configure_s, 1e-6)
        return vllm_logs.cloud_init_lines(min(elapsed, 1.0), self._cloud_init_state(), self.behaviour.needs_reboot)

    def _gpu_visible(self) -> bool:
        return self._cloud_init_state() == "done" and (self._driver_loaded or not self.behaviour.needs_reboot)

    def _gpu_query(self) -> ExecResult:
        if self._cloud_init_state() != "done":
            return ExecResult(127, "", "bash: line 1: nvidia-smi: command not found\n")
        if not self._gpu_visible():
            return ExecResult(9, "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
                                 "Make sure that the latest NVIDIA driver is installed and running.\n\n")
        b = self.behaviour
        busy = self.vllm is not None and self.vllm.counters.running > 0
        env = parse_env(self.env_text)
        used = int(b.gpu_memory_mb * float(env.get("VLLM_GPU_MEMORY_UTILIZATION") or 0.9)) if self.vllm else 1
        return ExecResult(0, "".join(f"{i}, {b.gpu_name}, {b.gpu_memory_mb}, {used}, {97 if busy else 0}, "
                                     f"{61 if busy else 34}\n" for i in range(b.gpus - b.hidden_gpus)))

    def _request_reboot(self) -> ExecResult:
        self._spawn(self._reboot)
        return ExecResult(0)

    def _reboot(self) -> None:
        time.sleep(0.05)  # let the reply to `systemctl reboot` leave before the connection drops
        with self._lock:
            if self._stopped.is_set():
                return
            self._boot_gen += 1
            self._vllm_gen += 1
            self.power = "rebooting"
            self.boot_id = str(uuid.uuid4())
            if self._cloud_init_state() == "done":
                self._driver_loaded = True
            self._stop_services()
            old, port = self._ssh, self.ssh_port
        if old is not None:
            old.stop()
        with self._lock:
            if self._stopped.is_set():
                return
            self._ssh = self._new_ssh_server(port)
            self.power = "booting"
            self._spawn(self._boot, self._boot_gen, self.behaviour.reboot_s)

    def _stop_services(self) -> None:
        """Stop the containers (callers hold the lock and have bumped the generations)."""
        vllm, webui, self.vllm, self.webui = self.vllm, self.webui, None, None
        self.stage = None if self.power in ("rebooting", "stopped") else self.stage
        for server in (vllm, webui):
            if server is not None:
                server.stop()

    def _start_stack(self) -> ExecResult:
        with self._lock:
            if not self._gpu_visible():
                return ExecResult(1, "", f"Job for {vc.SYSTEMD_UNIT} failed because the control process exited "
                                         f"with error code.\nSee \"systemctl status {vc.SYSTEMD_UNIT}\" and "
                                         f"\"journalctl -xeu {vc.SYSTEMD_UNIT}\" for details.\n")
            if self._stack_enabled and self.stage is not None:
                return ExecResult(0)  # already active: systemctl start is a no-op
            self._stack_enabled = True
            self._vllm_gen += 1
            self._spawn(self._run_stack, self._vllm_gen)
        return ExecResult(0)

    def _run_stack(self, gen: int) -> None:
        alive = lambda: self._vllm_gen == gen  # noqa: E731
        if not self._images_pulled:
            self.stage = "pulling"
            if not self._wait(self.behaviour.pull_s, alive):
                return
            self._images_pulled = True
        with self._lock:
            if not alive():
                return
            self.stage = "starting"
            self.webui = FakeWebUiServer()
        self._run_vllm(gen)

    def _run_vllm(self, gen: int) -> None:
        """One life of the vLLM container: log, load, then listen or fail as the behaviour says."""
        alive = lambda: self._vllm_gen == gen  # noqa: E731
        env = parse_env(self.env_text)
        model = env.get("MODEL_ID") or "unknown/model"
        max_len = int(env.get("VLLM_MAX_MODEL_LEN") or 32768)
        cached = model in self.weight_cache
        load_s = self.behaviour.load_s * (CACHED_LOAD_FACTOR if cached else 1.0)
        with self._lock:
            self._vllm_exists = True
            self.vllm_log = vllm_logs.header_lines(env)
        failure = vllm_logs.failure_for(self.behaviour, env)
        if failure is not None and failure.stage == "config":
            self.vllm_log += failure.lines
            return
        if not cached:
            self.vllm_log += vllm_logs.download_lines(model)
        if not self._wait(load_s, alive):
            return
        self.vllm_log += vllm_logs.loaded_lines(model, load_s)
        self.weight_cache.add(model)  # the download is on disk now, whatever happens next
        if failure is not None:
            if failure.stage == "hang":
                self._wait(float("inf"), alive)
                return
            self.vllm_log += failure.lines
            return
        config = FakeVllmConfig(model_id=model, served_name=env.get("SERVED_MODEL_NAME") or model,
                                max_model_len=max_len, api_key=env.get("VLLM_API_KEY", ""),
                                ttft_s=self.behaviour.ttft_s, tokens_per_reply=self.behaviour.tokens_per_reply,
                                **gpu_timing(self.behaviour.gpu_name, self.behaviour.gpus, self.behaviour.itl_s,
                                             self.behaviour.prefill_tokens_per_s, self.behaviour.batch_slowdown))
        with self._lock:
            if not alive():
                return
            self.vllm_log += vllm_logs.kv_cache_lines(max_len)
            self.vllm = FakeVllmServer(config)
            self.vllm_log += vllm_logs.ready_lines()
            self.stage = "running"

    def _docker_logs(self) -> ExecResult:
        if not self._vllm_exists:
            return ExecResult(1, f"Error response from daemon: No such container: {vc.VLLM_CONTAINER}\n")
        return ExecResult(0, "".join(f"{line}\n" for line in self.vllm_log[-400:]))

    def _python_in_vllm(self, read_stdin: Callable[[], bytes]) -> ExecResult:
        """``docker exec -i vllm python3 -u -c LOADER``: this laptop's Python stands in for the container's, and the
        fake vLLM's loopback port for the container's 127.0.0.1:8000. It runs while it talks: see ``_pipe_python``."""
        vllm = self.vllm
        if vllm is None:
            return ExecResult(1, "", f"Error response from daemon: container {vc.VLLM_CONTAINER} is not running\n")
        port = vllm.port
        return ExecResult(stream=lambda channel, head: self._pipe_python(channel, head, port))

    def _pipe_python(self, channel: paramiko.Channel, head: bytes, port: int) -> int:
        """Run the program as docker exec -i runs it: stdin piped through as it comes, stdout and stderr back as they
        are written; the client closing the channel ends the program's stdin (as sshd and docker do), and a program
        that does not stop then is killed (the container would be)."""
        process = subprocess.Popen([sys.executable, "-u", "-c", VM_LOADER], stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert process.stdin is not None and process.stdout is not None and process.stderr is not None

        def copy(source, send: Callable[[bytes], object]) -> None:
            for chunk in iter(lambda: source.read1(65536), b""):
                try:
                    send(chunk)
                except (OSError, EOFError, paramiko.SSHException):
                    pass  # the client went away; keep draining so the program is never blocked on a full pipe

        copiers = [threading.Thread(target=copy, args=(process.stdout, channel.sendall), daemon=True),
                   threading.Thread(target=copy, args=(process.stderr, channel.sendall_stderr), daemon=True)]
        for thread in copiers:
            thread.start()
        first_line, received, stdin_open = True, head, True
        try:
            while process.poll() is None and stdin_open:
                if first_line and b"\n" in received:  # the program's line names the VM's vLLM address
                    line, _, rest = received.partition(b"\n")
                    received = line.replace(VM_BASE_URL.encode(), f"http://127.0.0.1:{port}".encode()) + b"\n" + rest
                    first_line = False
                if received and not first_line:
                    process.stdin.write(received)
                    process.stdin.flush()
                    received = b""
                if self._stopped.is_set():
                    break
                if select.select([channel], [], [], 0.1)[0]:
                    chunk = channel.recv(65536)
                    stdin_open = bool(chunk)
                    received += chunk
        except (OSError, EOFError, paramiko.SSHException):
            pass
        finally:
            try:
                process.stdin.close()  # end of input: the benchmark program stops itself at once
            except OSError:
                pass
        try:
            code = process.wait(timeout=5)  # it ended, or its input did and it stops itself now
        except subprocess.TimeoutExpired:
            process.kill()
            code = process.wait()
        for thread in copiers:
            thread.join(5)
        process.stdout.close()
        process.stderr.close()
        return code if code >= 0 else 128 - code  # killed by a signal: the status a shell reports

    def _write_env(self, read_stdin: Callable[[], bytes]) -> ExecResult:
        text = read_stdin().decode("utf-8", "replace")
        with self._lock:
            self.env_text = text
        if self._on_env_written is not None:
            self._on_env_written(text)
        return ExecResult(0)

    def _write_failsafe(self, read_stdin: Callable[[], bytes]) -> ExecResult:
        config = self.failsafe_path(vc.FAILSAFE_CONFIG)
        os.makedirs(os.path.dirname(config), mode=0o700, exist_ok=True)
        with open(os.open(config + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as handle:
            handle.write(read_stdin())
        os.replace(config + ".tmp", config)
        return self._touch_heartbeat()

    def _touch_heartbeat(self) -> ExecResult:
        beat = self.failsafe_path(vc.FAILSAFE_HEARTBEAT)
        os.makedirs(os.path.dirname(beat), exist_ok=True)
        with open(beat, "a", encoding="utf-8"):
            pass
        os.utime(beat)
        return ExecResult(0)

    def _disarm_failsafe(self) -> ExecResult:
        try:
            os.remove(self.failsafe_path(vc.FAILSAFE_CONFIG))
        except FileNotFoundError:
            pass
        return ExecResult(0)

    def _failsafe_timer(self) -> None:
        """The systemd timer: run the failsafe script every ``failsafe_tick_s`` while the VM is up."""
        while not self._stopped.wait(self.behaviour.failsafe_tick_s):
            if self.power != "running":
                continue
            vllm = self.vllm
            env = {**os.environ, "MAIDER_FAILSAFE_ROOT": self.failsafe_root,
                   "MAIDER_FAILSAFE_SPEED": str(self.behaviour.failsafe_speed),
                   "MAIDER_FAILSAFE_METRICS_URL": f"http://127.0.0.1:{vllm.port if vllm else 9}/metrics"}
            try:
                result = subprocess.run([sys.executable, self._failsafe_script], env=env, capture_output=True,
                                        text=True, timeout=120, check=False)
            except (OSError, subprocess.TimeoutExpired) as exc:
                self.failsafe_log.append(f"maider-failsafe: did not run ({type(exc).__name__})")
                continue
            self.failsafe_log += (result.stdout + result.stderr).splitlines()

    def _recreate_vllm(self) -> ExecResult:
        with self._lock:
            self._vllm_gen += 1
            vllm, self.vllm = self.vllm, None
            if vllm is not None:
                vllm.stop()
            self._spawn(self._run_vllm, self._vllm_gen)
        return ExecResult(0, "", f" Container {vc.VLLM_CONTAINER}  Recreate\n Container {vc.VLLM_CONTAINER}  "
                                 f"Recreated\n Container {vc.VLLM_CONTAINER}  Starting\n"
                                 f" Container {vc.VLLM_CONTAINER}  Started\n")


def _now_text() -> str:
    return datetime.now(timezone.utc).strftime("%a, %d %b %Y %H:%M:%S +0000")
