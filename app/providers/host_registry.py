"""The machines the user registered with ``maider host add``: MAIDER_HOME/hosts.json (0600, replaced atomically).

Each host keeps its login (user, address, port, the identity file to use or None for the SSH agent and ~/.ssh keys),
the host key the user confirmed (pinned: any other key is refused), the GPUs ``nvidia-smi`` listed, the price the user
gave, and the maider sessions started on it (so ``maider host remove`` can refuse while one runs). No secret is kept:
the identity file is named, never copied. The server (through the SSH-host provider) and the CLI both write the file,
so every change holds an exclusive lock on ``hosts.json.lock``.
"""
from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from app.files import write_private

HOSTS_FILE = "hosts.json"
HOST_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")


@dataclass(frozen=True)
class HostGpu:
    name: str  # as nvidia-smi names it, e.g. "NVIDIA RTX 4000 Ada Generation"
    memory_mb: int  # memory.total, MiB


@dataclass(frozen=True)
class SshHost:
    name: str  # the user's name for the machine; the plan id its sessions launch on
    user: str  # login user (root, or a sudoer without a password prompt)
    address: str  # host name or IP
    port: int
    host_key_type: str  # e.g. "ssh-ed25519"
    host_key: str  # base64 of the public key blob
    fingerprint: str  # "SHA256:..." as OpenSSH prints it
    gpus: tuple[HostGpu, ...]
    price: float = 0.0  # USD/h the user says the machine costs (0: free)
    identity: str | None = None  # private key file to log in with; None: the SSH agent and ~/.ssh keys
    sessions: tuple[str, ...] = field(default_factory=tuple)  # labels of maider sessions started here, not destroyed

    @property
    def login(self) -> str:
        return f"{self.user}@{self.address}" + (f":{self.port}" if self.port != 22 else "")

    @property
    def host_key_line(self) -> str:
        return f"{self.host_key_type} {self.host_key}"


def fingerprint(key_blob_b64: str) -> str:
    """OpenSSH's SHA256 fingerprint of a public key blob."""
    digest = hashlib.sha256(base64.b64decode(key_blob_b64)).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


class HostRegistry:
    """Read and change MAIDER_HOME/hosts.json."""

    def __init__(self, home: Path) -> None:
        self.path = Path(home) / HOSTS_FILE
        self._lock_path = Path(home) / (HOSTS_FILE + ".lock")

    def all(self) -> list[SshHost]:
        return list(self._read().values())

    def get(self, name: str) -> SshHost | None:
        return self._read().get(name)

    def put(self, host: SshHost) -> None:
        with self._changing() as hosts:
            hosts[host.name] = host

    def remove(self, name: str) -> SshHost | None:
        with self._changing() as hosts:
            return hosts.pop(name, None)

    def update(self, name: str, change: Callable[[SshHost], SshHost]) -> None:
        """Apply ``change`` to one host under the lock (nothing when the host is not registered)."""
        with self._changing() as hosts:
            if name in hosts:
                hosts[name] = change(hosts[name])

    def add_session(self, name: str, label: str) -> None:
        self.update(name, lambda h: replace(h, sessions=tuple(dict.fromkeys((*h.sessions, label)))))

    def drop_session(self, name: str, label: str) -> None:
        self.update(name, lambda h: replace(h, sessions=tuple(s for s in h.sessions if s != label)))

    @contextmanager
    def _changing(self) -> Iterator[dict[str, SshHost]]:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            hosts = self._read()
            yield hosts
            body = {"hosts": [asdict(h) for h in sorted(hosts.values(), key=lambda h: h.name)]}
            write_private(self.path, json.dumps(body, indent=1) + "\n")
        finally:
            os.close(fd)

    def _read(self) -> dict[str, SshHost]:
        try:
            body = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except ValueError as exc:
            raise ValueError(f"{self.path} is not valid JSON ({exc}); fix or remove it") from None
        hosts = {}
        for entry in body.get("hosts", []):
            entry = dict(entry)
            entry["gpus"] = tuple(HostGpu(**g) for g in entry.get("gpus", []))
            entry["sessions"] = tuple(entry.get("sessions", []))
            hosts[entry["name"]] = SshHost(**entry)
        return hosts
