"""How much latency maider's SSH tunnel adds, next to a direct connection and OpenSSH's own ``ssh -N -L``.

Run: ``.venv/bin/python bench/tunnel.py [--requests N]``. Loopback only, bounded loops, under a minute.

Paths measured against one fake vLLM (20 ms between streamed tokens):
- direct: straight to the fake vLLM's port;
- maider -> paramiko sshd: ``TunnelSupervisor`` over paramiko to the simulated VM's SSH server (with the Host check
  on each connection's first request head, as every session's API forward has it);
- ssh -L -> paramiko sshd: the OpenSSH client forwarding through the same server;
- and, when OpenSSH's sshd is installed and we are root, both tunnels again through a real sshd on loopback,
  where the 44 ms Nagle/delayed-ACK stall shows unless TCP_NODELAY is set on both ends (maider's pty session).
For each: median/p90 of a small GET on a new connection and on a kept-alive one, and the streamed-token gaps.
"""
from __future__ import annotations

import argparse
import logging
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from loopback import free_port, percentile  # noqa: E402

from app.engine.tunnels import ForwardSpec, TunnelSupervisor  # noqa: E402
from app.remote import KeyPair, RemoteHost, load_private_key, load_public_key, new_keypair  # noqa: E402
from app.simulator.fake_vllm import FakeVllmConfig, FakeVllmServer  # noqa: E402
from app.simulator.ssh_server import ExecResult, SshServer  # noqa: E402

API_KEY = "sk-bench"
TOKEN_GAP_S = 0.02
TOKENS = 20
STREAMS = 3
SSHD = "/usr/sbin/sshd"


def wait_listening(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def time_new_connections(port: int, n: int) -> list[float]:
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/health")
        conn.getresponse().read()
        samples.append(time.perf_counter() - started)
        conn.close()
    return samples


def time_keepalive(port: int, n: int) -> list[float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", "/health")
    conn.getresponse().read()  # warm: connection and channel open
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        conn.request("GET", "/health")
        conn.getresponse().read()
        samples.append(time.perf_counter() - started)
    conn.close()
    return samples


def time_stream(port: int) -> tuple[list[float], list[float]]:
    """TTFTs and inter-chunk gaps over STREAMS streamed chat completions (vLLM bench's definitions)."""
    ttfts, gaps = [], []
    body = json.dumps({"model": "coder", "messages": [{"role": "user", "content": "hi"}], "stream": True})
    for _ in range(STREAMS):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        started = time.perf_counter()
        conn.request("POST", "/v1/chat/completions", body,
                     {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"})
        response = conn.getresponse()
        previous = None
        for line in iter(response.readline, b""):
            if not line.startswith(b"data: {"):
                continue
            now = time.perf_counter()
            if previous is None:
                ttfts.append(now - started)
            else:
                gaps.append(now - previous)
            previous = now
        conn.close()
    return ttfts, gaps


def measure(name: str, port: int, n: int) -> dict[str, object]:
    fresh = time_new_connections(port, n)
    kept = time_keepalive(port, n)
    ttfts, gaps = time_stream(port)
    return {"path": name, "new_conn": fresh, "keepalive": kept, "ttft": ttfts, "gaps": gaps}


@contextmanager
def openssh_forward(local: int, ssh_port: int, remote_port: int, keys: KeyPair, host_public: str,
                    workdir: Path) -> Iterator[None]:
    """``ssh -N -L`` with the host key pinned through a known_hosts file, no agent, no user config."""
    identity = workdir / f"id_{ssh_port}"
    identity.write_text(keys.private_openssh)
    identity.chmod(0o600)
    known_hosts = workdir / f"known_hosts_{ssh_port}"
    known_hosts.write_text(f"[127.0.0.1]:{ssh_port} {host_public}\n")
    process = subprocess.Popen(
        ["ssh", "-N", "-F", "/dev/null", "-i", str(identity), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
         "-o", f"UserKnownHostsFile={known_hosts}", "-o", "StrictHostKeyChecking=yes", "-o", "ExitOnForwardFailure=yes",
         "-o", "IdentityAgent=none", "-L", f"127.0.0.1:{local}:127.0.0.1:{remote_port}", "-p", str(ssh_port),
         "root@127.0.0.1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_listening(local)
        yield
    finally:
        process.terminate()
        process.wait(5)


@contextmanager
def openssh_server(host: KeyPair, client: KeyPair, workdir: Path) -> Iterator[int]:
    """OpenSSH's sshd on a free loopback port (recipe in reference/testing-recipes.md)."""
    port = free_port()
    Path("/run/sshd").mkdir(exist_ok=True)
    (workdir / "sshd_host_key").write_text(host.private_openssh)
    (workdir / "sshd_host_key").chmod(0o600)
    (workdir / "authorized_keys").write_text(client.public_openssh + "\n")
    config = workdir / "sshd_config"
    config.write_text(f"Port {port}\nListenAddress 127.0.0.1\nHostKey {workdir / 'sshd_host_key'}\n"
                      f"AuthorizedKeysFile {workdir / 'authorized_keys'}\nPidFile {workdir / 'sshd.pid'}\n"
                      "UsePAM no\nStrictModes no\nPasswordAuthentication no\nAllowTcpForwarding yes\n"
                      "PermitRootLogin prohibit-password\n")
    process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        wait_listening(port)
        yield port
    finally:
        process.terminate()
        process.wait(5)


def report(results: list[dict[str, object]]) -> None:
    direct = results[0]

    def med(result: dict[str, object], key: str) -> float:
        return statistics.median(result[key]) * 1000  # type: ignore[arg-type]

    def p90(result: dict[str, object], key: str) -> float:
        return percentile(result[key], 0.9) * 1000  # type: ignore[arg-type]

    print(f"{'path':34} {'new conn med/p90 ms':>20} {'added':>7} {'keep-alive med/p90 ms':>22} {'added':>7} "
          f"{'x direct':>8} {'TTFT med ms':>11} {'gap mean/med ms':>16}")
    for result in results:
        gaps: list[float] = result["gaps"]  # type: ignore[assignment]
        print(f"{result['path']:34} {med(result, 'new_conn'):9.3f}/{p90(result, 'new_conn'):<9.3f} "
              f"{med(result, 'new_conn') - med(direct, 'new_conn'):+7.3f} "
              f"{med(result, 'keepalive'):10.3f}/{p90(result, 'keepalive'):<10.3f} "
              f"{med(result, 'keepalive') - med(direct, 'keepalive'):+7.3f} "
              f"{med(result, 'keepalive') / med(direct, 'keepalive'):8.1f} {med(result, 'ttft'):11.2f} "
              f"{statistics.mean(gaps) * 1000:7.2f}/{statistics.median(gaps) * 1000:<7.2f}")


def serve_vm() -> None:
    """Child process: the 'VM' (fake vLLM + paramiko sshd), so it does not share the measuring process's GIL."""
    keys = json.loads(sys.stdin.readline())
    vllm = FakeVllmServer(FakeVllmConfig("Qwen/Qwen2.5-Coder-7B-Instruct", "coder", api_key=API_KEY,
                                         ttft_s=0.0, itl_s=TOKEN_GAP_S, tokens_per_reply=TOKENS))
    sshd = SshServer(load_private_key(keys["host_private"]), [load_public_key(keys["client_public"])],
                     lambda command, _stdin: ExecResult(hold=True) if command == "sleep infinity"
                     else ExecResult(127, "", "command not found\n"),
                     lambda port: vllm.port if port == 8000 else None)
    sshd.start()
    print(json.dumps({"vllm": vllm.port, "ssh": sshd.port}), flush=True)
    sys.stdin.readline()  # the parent closes our stdin when it is done
    sshd.stop()
    vllm.stop()


@contextmanager
def vm_process(host: KeyPair, client: KeyPair) -> Iterator[dict[str, int]]:
    child = subprocess.Popen([sys.executable, __file__, "--serve-vm"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    assert child.stdin is not None and child.stdout is not None
    child.stdin.write(json.dumps({"host_private": host.private_openssh, "client_public": client.public_openssh})
                      + "\n")
    child.stdin.flush()
    try:
        yield json.loads(child.stdout.readline())
    finally:
        child.stdin.close()
        child.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=200, help="requests per measurement (default 200)")
    parser.add_argument("--serve-vm", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    # A VM-side connection reset at the end of a measurement is expected; paramiko would print it as an error.
    logging.getLogger("paramiko.transport").setLevel(logging.CRITICAL)
    if args.serve_vm:
        serve_vm()
        return
    n = max(10, min(args.requests, 2000))
    host, client = new_keypair(), new_keypair()
    host_key, client_key = load_public_key(host.public_openssh), load_private_key(client.private_openssh)
    results: list[dict[str, object]] = []
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="maider-bench-")))
        vm = stack.enter_context(vm_process(host, client))
        tunnels = TunnelSupervisor()
        stack.callback(tunnels.close_all)

        def maider_tunnel(key: str, ssh_port: int, remote_port: int) -> int:
            def factory() -> RemoteHost:
                return RemoteHost("127.0.0.1", ssh_port, host_key, client_key)

            # front="http": the Host check every session's API forward does on each connection's first request
            return tunnels.open(key, factory, [ForwardSpec("api", remote_port, free_port(), front="http")])["api"]

        results.append(measure("direct", vm["vllm"], n))
        results.append(measure("maider -> paramiko sshd", maider_tunnel("sim", vm["ssh"], 8000), n))
        if shutil.which("ssh"):
            local = free_port()
            with openssh_forward(local, vm["ssh"], 8000, client, host.public_openssh, workdir):
                results.append(measure("ssh -L -> paramiko sshd", local, n))
        if os.path.exists(SSHD) and os.geteuid() == 0 and shutil.which("ssh"):
            with openssh_server(host, client, workdir) as real_port:
                results.append(measure("maider -> OpenSSH sshd", maider_tunnel("real", real_port, vm["vllm"]), n))
                local = free_port()
                with openssh_forward(local, real_port, vm["vllm"], client, host.public_openssh, workdir):
                    results.append(measure("ssh -L -> OpenSSH sshd", local, n))
    print(f"{n} requests per measurement, {STREAMS} streams of {TOKENS} tokens {TOKEN_GAP_S * 1000:.0f} ms apart; "
          "'added' = median minus direct's median; the VM side runs in its own process")
    report(results)


if __name__ == "__main__":
    main()
