"""Your own GPU machine as a provider: maider provisions and cleans up over SSH, never creates or powers off.

A "plan" is a host the user registered with ``maider host add`` (``host_registry``); the one region is ``own``.
``create`` logs in as the user (pinned host key, their SSH agent/keys or ``--identity``), authorises the session's
key for root with a ``maider:<label>`` marker, records the deployment on the host (``host_contract.DEPLOYMENT_FILE``:
that file is the instance, so create is idempotent by label and ``get`` answers NotFound only when the host says
there is no such deployment) and starts ``cloud_init/apply-cloud-config.py``, which applies the same cloud-config a
cloud VM gets, minus anything that would change the machine's SSH identity or users. ``delete`` stops and removes
maider's containers, units and files and the session's key line; the machine keeps running.

Failures are typed like a cloud's: a refused login or ``sudo`` that wants a password is ``AuthError``, a host key
other than the pinned one is ``HostKeyChanged`` (an ``AuthError`` with both fingerprints), an unreachable host is
``TransientError``; none of them ever means "gone".
"""
from __future__ import annotations

import json
import logging
import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import paramiko
import yaml

from app.domain import host_contract as hc
from app.domain.cloud_init import TEMPLATE_DIR
from app.domain.gpu_catalog import GpuModel, gpu_by_name
from app.providers.base import (
    OWNER_TAG, AuthError, CapacityError, GpuPlan, Instance, InstanceSpec, InstanceStatus, InvalidRequest, NotFound,
    NoFailsafeNeeded, ProviderError, Region, SessionToken, TransientError,
)
from app.providers.host_registry import HostRegistry, SshHost
from app.remote import (
    CommandResult, HostKeyMismatch, RemoteError, RemoteHost, SshAuthError, SshUnreachable, load_public_key,
)

log = logging.getLogger(__name__)

REGION = Region("own", "your machines", "", True, True)
_LABEL = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
CONNECT_TIMEOUT_S = 10.0


class HostKeyChanged(AuthError):
    """The host presented a key other than the one pinned at ``maider host add``: maider refuses to log in."""

    def __init__(self, message: str, expected: str, presented: str) -> None:
        super().__init__(message)
        self.expected = expected
        self.presented = presented


class _RefuseUnknownKey(paramiko.MissingHostKeyPolicy):
    """The host showed a key of another type than the pinned one: treated like a changed key."""

    def __init__(self, pinned: paramiko.PKey) -> None:
        self.pinned = pinned

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        raise HostKeyMismatch(f"{hostname} presented host key {key.fingerprint}, expected {self.pinned.fingerprint}",
                              self.pinned.fingerprint, key.fingerprint)


class UserLogin(RemoteHost):
    """An SSH connection as the user's own login: pinned host key, their agent and ~/.ssh keys or one key file.

    A subclass of ``RemoteHost`` for its command runner; only how the transport authenticates differs (the engine's
    connections offer the session's key only)."""

    def __init__(self, host: str, port: int, host_key: paramiko.PKey, user: str, identity: str | None,
                 connect_timeout: float = CONNECT_TIMEOUT_S) -> None:
        super().__init__(host, port, host_key, None, username=user,  # type: ignore[arg-type]
                         connect_timeout=connect_timeout)
        self.identity = identity
        self._client: paramiko.SSHClient | None = None

    def _open_transport(self) -> paramiko.Transport:
        where = f"{self.username}@{self.host}:{self.port}"
        client = paramiko.SSHClient()
        known = self.host if self.port == 22 else f"[{self.host}]:{self.port}"
        client.get_host_keys().add(known, self.host_key.get_name(), self.host_key)
        client.set_missing_host_key_policy(_RefuseUnknownKey(self.host_key))
        try:
            client.connect(self.host, self.port, username=self.username, key_filename=self.identity,
                           allow_agent=self.identity is None, look_for_keys=self.identity is None,
                           timeout=self.connect_timeout, banner_timeout=self.connect_timeout,
                           auth_timeout=self.connect_timeout, channel_timeout=self.connect_timeout)
        except HostKeyMismatch:
            client.close()
            raise
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise HostKeyMismatch(f"{where} presented host key {exc.key.fingerprint}, expected "
                                  f"{self.host_key.fingerprint}", self.host_key.fingerprint,
                                  exc.key.fingerprint) from None
        except paramiko.PasswordRequiredException:
            client.close()
            raise SshAuthError(f"the key file {self.identity} is protected by a passphrase: add it to your SSH agent "
                               "(ssh-add) and leave out --identity") from None
        except paramiko.AuthenticationException:
            client.close()
            offered = f"the key {self.identity}" if self.identity else "your SSH agent's and ~/.ssh keys"
            raise SshAuthError(f"{where} refused the login with {offered}") from None
        except (paramiko.SSHException, OSError, EOFError) as exc:
            client.close()
            raise SshUnreachable(f"cannot reach SSH at {where} ({type(exc).__name__}: {exc})") from None
        self._client = client
        transport = client.get_transport()
        assert transport is not None
        return transport

    def close(self) -> None:
        super().close()
        if self._client is not None:
            self._client.close()


def scan_host_key(address: str, port: int, timeout: float = CONNECT_TIMEOUT_S) -> paramiko.PKey:
    """The host key ``address:port`` presents, before any login (shown to the user to confirm at ``host add``)."""
    where = f"{address}:{port}"
    try:
        sock = socket.create_connection((address, port), timeout=timeout)
    except OSError as exc:
        raise TransientError(f"cannot reach SSH at {where}: {exc.strerror or type(exc).__name__}") from None
    transport = paramiko.Transport(sock)
    try:
        transport.start_client(timeout=timeout)
        return transport.get_remote_server_key()
    except (paramiko.SSHException, OSError, EOFError) as exc:
        raise TransientError(f"SSH handshake with {where} failed ({type(exc).__name__})") from None
    finally:
        transport.close()


def login_for(host: SshHost, connect_timeout: float = CONNECT_TIMEOUT_S) -> UserLogin:
    return UserLogin(host.address, host.port, load_public_key(host.host_key_line), host.user, host.identity,
                     connect_timeout)


def provider_error(exc: RemoteError, host: SshHost) -> ProviderError:
    """The typed provider error for an SSH failure on ``host``."""
    if isinstance(exc, HostKeyMismatch):
        return HostKeyChanged(
            f"host '{host.name}' ({host.login}) presented SSH host key {exc.presented}, but {exc.expected} was "
            "confirmed at 'maider host add': refusing to log in. If the machine was reinstalled, run 'maider host "
            f"remove {host.name}' and add it again", exc.expected, exc.presented)
    if isinstance(exc, SshAuthError):
        return AuthError(f"host '{host.name}': {exc}. Check that this key may log in as {host.user} "
                         f"(ssh {host.login})")
    return TransientError(f"host '{host.name}' ({host.login}) is unreachable: {exc}")


def runner_source() -> bytes:
    return (TEMPLATE_DIR / hc.RUNNER_NAME).read_bytes()


def plan_for(host: SshHost) -> GpuPlan:
    """One plan per host: its GPUs as nvidia-smi listed them, the price the user gave."""
    models = [gpu_by_name(g.name) for g in host.gpus]
    known = [m for m in models if m is not None]
    gpu: GpuModel | None = None
    if known and len(known) == len(models):
        gpu = min(known, key=lambda m: m.vram_gb)  # mixed cards: size for the smallest
    names = sorted({g.name for g in host.gpus})
    label = f"{host.name}: {len(host.gpus)}x {' + '.join(names) or 'GPU'} ({host.login})"
    return GpuPlan(id=host.name, label=label, gpus=max(len(host.gpus), 1), gpu=gpu, hourly_price=host.price,
                   memory_mb=0, vcpus=0, regions=(REGION.id,))


class SshHostProvider:
    """Machines the user already runs (see the Provider contract in ``app.providers.base``)."""

    name = "ssh"
    catalog_is_local = True  # plans come from hosts.json, no network
    reboots_allowed = False  # never reboot a machine maider did not create (see app.engine.configure)

    def __init__(self, home: Path, connect_timeout: float = CONNECT_TIMEOUT_S) -> None:
        self.registry = HostRegistry(home)
        self.connect_timeout = connect_timeout

    def regions(self) -> list[Region]:
        return [REGION]

    def gpu_plans(self, region: str | None = None) -> list[GpuPlan]:
        if region not in (None, REGION.id):
            return []
        return [plan_for(h) for h in self.registry.all()]

    def create(self, spec: InstanceSpec) -> Instance:
        host = self._host(spec.plan, field="type")
        if spec.region != REGION.id:
            raise InvalidRequest(f"region '{spec.region}' does not exist for your own machines: use "
                                 f"'{REGION.id}'", field="region")
        if not _LABEL.match(spec.label):
            raise InvalidRequest(f"label '{spec.label}' must be lower-case letters, digits, dashes and underscores",
                                 field="label")
        cloud_config = _cloud_config(spec.user_data)
        key_lines = [_marked_key(k, spec.label) for k in spec.authorized_keys if k.strip()]
        tags = list(dict.fromkeys((*spec.tags, OWNER_TAG)))
        with self._login(host) as remote:
            deployment = self._deployment(remote, host)
            if deployment.get("label") == spec.label:
                self.registry.add_session(host.name, spec.label)
                return self._instance(host, deployment)
            if deployment:
                raise CapacityError(f"host '{host.name}' already runs maider session '{deployment.get('label')}': "
                                    "destroy it first, or add another machine", region=REGION.id, plan=host.name)
            record = {"label": spec.label, "tags": tags, "host": host.name,
                      "started_at": _utcnow().isoformat(timespec="seconds")}
            payload = json.dumps({"deployment": record, "cloud_config": cloud_config}, default=str).encode()
            self.registry.add_session(host.name, spec.label)  # from here on 'maider host remove' checks the host
            try:
                for line in key_lines:
                    self._root(remote, host, hc.ROOT_AUTHORIZE_KEY, line.encode())
                self._root(remote, host, hc.ROOT_INSTALL_RUNNER, runner_source())
                result = self._root(remote, host, hc.ROOT_START_BOOTSTRAP, payload, check=False)
            except TransientError:
                raise  # the start may have happened: the caller's retry finds the deployment
            except ProviderError:
                self._undo_start(remote, host, spec.label)
                raise
            if result.exit_code != 0:
                self._undo_start(remote, host, spec.label)
            if result.exit_code == 3:  # another session got there first
                raise CapacityError(f"host '{host.name}' already runs another maider session: {result.stderr.strip()}",
                                    region=REGION.id, plan=host.name)
            if result.exit_code != 0:
                raise InvalidRequest(f"host '{host.name}' could not start maider's provisioning (exit "
                                     f"{result.exit_code}): {(result.stderr or result.stdout).strip()[:300]}")
            return self._instance(host, record)

    def get(self, instance_id: str) -> Instance:
        host, label = self._split(instance_id)
        with self._login(host) as remote:
            deployment = self._deployment(remote, host)
        if deployment.get("label") != label:
            raise NotFound(f"host '{host.name}' runs no maider session '{label}'")
        return self._instance(host, deployment)

    def delete(self, instance_id: str) -> None:
        """Stop and remove maider's containers, units and files, and the session's key; never power off."""
        host, label = self._split(instance_id)
        with self._login(host) as remote:
            if self._deployment(remote, host).get("label") == label:
                self._root(remote, host, hc.ROOT_TEARDOWN)
            self._root(remote, host, hc.root_remove_key(label))
        self.registry.drop_session(host.name, label)

    def list_owned(self) -> list[Instance]:
        """maider's deployments on every registered host; an unreachable host is skipped with a warning."""
        found = []
        for host in self.registry.all():
            try:
                with self._login(host) as remote:
                    deployment = self._deployment(remote, host)
            except ProviderError as exc:
                log.warning("skipping host %s while listing maider's sessions: %s", host.name, exc)
                continue
            if deployment and OWNER_TAG in deployment.get("tags", []):
                found.append(self._instance(host, deployment))
        return found

    def mint_session_token(self, label: str, expires_at: datetime) -> SessionToken:
        raise NoFailsafeNeeded("no failsafe on your own machine: it bills nobody by the hour, and maider never deletes "
                            "or powers off a machine it did not create")

    def revoke_session_token(self, token_id: str) -> None:
        return None

    def deleted_at(self, instance_id: str) -> datetime | None:
        return None

    def _undo_start(self, remote: UserLogin, host: SshHost, label: str) -> None:
        """A start that surely did not happen: take back the key line and the registry entry (best effort)."""
        try:
            self._root(remote, host, hc.root_remove_key(label))
        except ProviderError as exc:
            log.warning("host %s: could not take back session %s's key: %s", host.name, label, exc)
        self.registry.drop_session(host.name, label)

    def _host(self, name: str, field: str | None = None) -> SshHost:
        host = self.registry.get(name)
        if host is None:
            known = ", ".join(h.name for h in self.registry.all()) or "none yet"
            raise InvalidRequest(f"no registered host named '{name}' (registered: {known}); add it with "
                                 "'maider host add NAME user@address'", field=field)
        return host

    def _split(self, instance_id: str) -> tuple[SshHost, str]:
        name, _, label = str(instance_id).partition("/")
        if not label:
            raise InvalidRequest(f"'{instance_id}' is not an SSH-host instance id (host/label)")
        host = self.registry.get(name)
        if host is None:  # not NotFound: the machine may still run the session, maider just lost its address
            raise ProviderError(f"host '{name}' is no longer registered, so maider cannot reach session '{label}' "
                                f"on it: add the machine again with 'maider host add {name} user@address'")
        return host, label

    @contextmanager
    def _login(self, host: SshHost) -> Iterator[UserLogin]:
        remote = login_for(host, self.connect_timeout)
        try:
            try:
                remote.connect()
            except RemoteError as exc:
                raise provider_error(exc, host) from None
            yield remote
        finally:
            remote.close()

    def _root(self, remote: UserLogin, host: SshHost, command: str, stdin: bytes | None = None,
              check: bool = True) -> CommandResult:
        try:
            result = remote.run(hc.as_root(command, host.user), stdin=stdin, timeout=120)
        except RemoteError as exc:
            raise provider_error(exc, host) from None
        if result.exit_code == -1:  # the connection ended before the command's answer: it may or may not have run
            raise TransientError(f"host '{host.name}' ({host.login}) hung up before answering a maider command")
        if result.exit_code != 0 and "sudo:" in result.stderr:
            raise AuthError(f"host '{host.name}': sudo refused {host.user} without a password "
                            f"({result.stderr.strip()[:200]}); allow it (NOPASSWD) or log in as root")
        if check and result.exit_code != 0:
            raise TransientError(f"host '{host.name}': a maider command failed (exit {result.exit_code}): "
                                 f"{(result.stderr or result.stdout).strip()[:300]}")
        return result

    def _deployment(self, remote: UserLogin, host: SshHost) -> dict[str, Any]:
        result = self._root(remote, host, hc.ROOT_READ_DEPLOYMENT)
        try:
            body = json.loads(result.stdout or "{}")
        except ValueError:
            raise TransientError(f"host '{host.name}': {hc.DEPLOYMENT_FILE} is not JSON") from None
        return body if isinstance(body, dict) else {}

    def _instance(self, host: SshHost, deployment: dict[str, Any]) -> Instance:
        started = deployment.get("started_at")
        return Instance(id=f"{host.name}/{deployment['label']}", label=deployment["label"],
                        status=InstanceStatus.RUNNING, region=REGION.id, plan=host.name, ssh_host=host.address,
                        ssh_port=host.port, created_at=datetime.fromisoformat(started) if started else None,
                        hourly_price=host.price, tags=tuple(deployment.get("tags", (OWNER_TAG,))),
                        host_key=host.host_key_line)


def _cloud_config(user_data: str) -> dict[str, Any]:
    if not user_data.lstrip().startswith("#cloud-config"):
        raise InvalidRequest("user data is not a #cloud-config document", field="metadata")
    try:
        config = yaml.safe_load(user_data) or {}
    except yaml.YAMLError as exc:
        raise InvalidRequest(f"user data is not valid YAML ({exc})", field="metadata") from None
    if not isinstance(config, dict):
        raise InvalidRequest("user data is not a cloud-config mapping", field="metadata")
    return config


def _marked_key(line: str, label: str) -> str:
    """The key as it goes into root's authorized_keys: type and blob, then the session's marker."""
    parts = line.split()
    try:
        load_public_key(line)
    except RemoteError as exc:
        raise InvalidRequest(f"authorized key is not usable: {exc}", field="authorized_keys") from None
    return f"{parts[0]} {parts[1]} {hc.key_marker(label)}"


def _utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)
