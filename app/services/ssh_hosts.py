"""Your own GPU machines: register (``maider host add``), list and remove the hosts the SSH-host provider launches on.

Adding a host connects once: it shows the host key for the user to confirm (trust on first use, made explicit; the
key is pinned from then on), checks that root's commands can run (root, or ``sudo -n`` without a password), and lists
the GPUs with ``nvidia-smi``. Nothing is written unless every check passed.
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from app.domain import host_contract as hc
from app.errors import UserError
from app.providers.base import NotFound, ProviderError
from app.providers.host_registry import HOST_NAME, HostGpu, HostRegistry, SshHost, fingerprint
from app.providers.ssh_host import SshHostProvider, UserLogin, provider_error, scan_host_key
from app.remote import RemoteError, load_public_key

_LOGIN = re.compile(r"^(?P<user>[a-z_][a-z0-9_.-]{0,31})@(?P<address>[A-Za-z0-9.:-]+|\[[0-9A-Fa-f:]+\])$")
_GPU_LINE = re.compile(r"^(?P<name>[^,]+),\s*(?P<memory>\d+)\s*MiB$")

# Asked with (fingerprint, key type, "user@address:port") before anything is sent over the connection.
Confirm = Callable[[str, str, str], bool]


class HostError(UserError):
    """A host could not be added or removed; the message says what to do."""


def parse_login(text: str) -> tuple[str, str]:
    """``user@address`` -> (user, address)."""
    match = _LOGIN.match(text.strip())
    if not match:
        raise HostError(f"'{text}' is not user@address (for example ubuntu@192.0.2.10 or root@gpu-box.lan)")
    return match.group("user"), match.group("address").strip("[]")


def add_host(home: Path, name: str, login: str, confirm: Confirm, port: int = 22, price: float = 0.0,
             identity: str | None = None, connect_timeout: float = 10.0) -> SshHost:
    """Check the machine and register it; raise HostError with the fix when anything is wrong."""
    registry = HostRegistry(home)
    if not HOST_NAME.match(name):
        raise HostError(f"host name '{name}' must be 1-40 lower-case letters, digits and dashes")
    if registry.get(name) is not None:
        raise HostError(f"a host named '{name}' is already registered: 'maider host remove {name}' first")
    user, address = parse_login(login)
    if not 1 <= port <= 65535:
        raise HostError(f"port {port} is not a TCP port (1-65535)")
    if not math.isfinite(price) or price < 0:
        raise HostError("the price must be a number of USD per hour, 0 or more")
    if identity is not None:
        path = Path(identity).expanduser()
        if not path.is_file():
            raise HostError(f"identity file {identity} does not exist")
        identity = str(path.resolve())
    try:
        key = scan_host_key(address, port, connect_timeout)
    except ProviderError as exc:
        raise HostError(f"cannot add '{name}': {exc}") from None
    shown = fingerprint(key.get_base64())
    if not confirm(shown, key.get_name(), f"{user}@{address}:{port}"):
        raise HostError(f"not added: the host key {shown} was not confirmed")
    host = SshHost(name=name, user=user, address=address, port=port, host_key_type=key.get_name(),
                   host_key=key.get_base64(), fingerprint=shown, gpus=(), price=float(price), identity=identity)
    host = replace(host, gpus=_probe(host, connect_timeout))
    registry.put(host)
    return host


def _probe(host: SshHost, connect_timeout: float) -> tuple[HostGpu, ...]:
    """Root's commands can run without a prompt, and nvidia-smi lists the GPUs."""
    remote = UserLogin(host.address, host.port, load_public_key(host.host_key_line), host.user, host.identity,
                       connect_timeout)
    try:
        remote.connect()
        if host.user != "root":
            sudo = remote.run(hc.CMD_SUDO_CHECK, timeout=30)
            if sudo.exit_code != 0:
                raise HostError(f"'sudo -n true' failed for {host.user} on {host.address} "
                                f"({(sudo.stderr or sudo.stdout).strip()[:200]}): maider runs its setup as root, so "
                                f"allow {host.user} sudo without a password (NOPASSWD) or add the host as root@...")
        gpus = remote.run(hc.CMD_LIST_GPUS, timeout=60)
    except RemoteError as exc:
        raise HostError(f"cannot add '{host.name}': {provider_error(exc, host)}") from None
    finally:
        remote.close()
    if gpus.exit_code != 0:
        raise HostError(f"nvidia-smi failed on {host.address} ({(gpus.stderr or gpus.stdout).strip()[:300]}): "
                        "maider needs a working NVIDIA driver and does not install or change it on your machine")
    found = []
    for line in gpus.stdout.splitlines():
        match = _GPU_LINE.match(line.strip())
        if match:
            found.append(HostGpu(match.group("name").strip(), int(match.group("memory"))))
    if not found:
        raise HostError(f"nvidia-smi on {host.address} lists no GPU: maider needs at least one NVIDIA GPU")
    return tuple(found)


def list_hosts(home: Path) -> list[SshHost]:
    return sorted(HostRegistry(home).all(), key=lambda h: h.name)


def _running_sessions(home: Path, host: SshHost) -> list[str]:
    """The sessions hosts.json lists for ``host`` that the machine confirms it still runs (a launch that never
    started is forgotten); a machine that cannot answer keeps its sessions, so the removal is refused."""
    provider = SshHostProvider(home)
    running = []
    for label in host.sessions:
        try:
            provider.get(f"{host.name}/{label}")
        except NotFound:
            HostRegistry(home).drop_session(host.name, label)
            continue
        except ProviderError as exc:
            raise HostError(f"cannot check whether session {label} still runs on '{host.name}' ({exc}); try again "
                            "when the machine answers") from None
        running.append(label)
    return running


def remove_host(home: Path, name: str) -> SshHost:
    """Forget a host; refused while a maider session runs on it (destroy that first: it cleans the machine)."""
    registry = HostRegistry(home)
    host = registry.get(name)
    if host is None:
        raise HostError(f"no host named '{name}' is registered (see 'maider host list')")
    running = _running_sessions(home, host)
    if running:
        raise HostError(f"host '{name}' still runs maider session(s) {', '.join(running)}: destroy them first "
                        "('maider down'), so maider cleans the machine up")
    registry.remove(name)
    return host
