"""The engine's in-process objects: timings, providers, SSH connections and tunnels, one set per app.

Rows in the database are the state; this runtime only holds what cannot live in a row (open sockets, clients).
Everything here can be rebuilt from the database after a restart.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from datetime import datetime, timedelta
from pathlib import Path

from flask import Flask

from app.config import Settings, load_settings
from app.models import Session, utcnow
from app.providers import get_provider
from app.providers.base import Provider
from app.remote import RemoteHost, load_private_key, load_public_key

ProviderFactory = Callable[[str, Settings, Path], Provider]


@dataclass(frozen=True)
class Timings:
    """Deadlines and polling for each waiting stage. Tests shrink them via app.config["MAIDER_TIMINGS"] (seconds)."""

    create_deadline: timedelta = timedelta(minutes=10)
    boot_deadline: timedelta = timedelta(minutes=15)
    configure_deadline: timedelta = timedelta(minutes=30)
    reboot_deadline: timedelta = timedelta(minutes=10)
    start_deadline: timedelta = timedelta(minutes=45)
    switch_deadline: timedelta = timedelta(minutes=30)
    poll_first: timedelta = timedelta(seconds=1)  # fast at first ...
    poll_max: timedelta = timedelta(seconds=15)  # ... backing off to this
    destroy_retry_max: timedelta = timedelta(minutes=2)
    health_interval: timedelta = timedelta(seconds=5)
    reconcile_interval: timedelta = timedelta(minutes=2)
    ssh_connect_timeout: timedelta = timedelta(seconds=10)
    http_timeout: timedelta = timedelta(seconds=10)

    @classmethod
    def from_config(cls, overrides: dict[str, float] | None) -> Timings:
        known = {f.name for f in fields(cls)}
        values = {k: timedelta(seconds=v) for k, v in (overrides or {}).items() if k in known}
        return replace(cls(), **values)


class EngineRuntime:
    """Shared by every worker thread of one app."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.home = Path(app.config["MAIDER_HOME"])
        self.timings = Timings.from_config(app.config.get("MAIDER_TIMINGS"))
        self.clock: Callable[[], datetime] = app.config.get("MAIDER_CLOCK") or utcnow
        self._provider_factory: ProviderFactory = app.config.get("MAIDER_PROVIDER_FACTORY") or get_provider
        self._lock = threading.Lock()
        self._providers: dict[tuple[str, str], Provider] = {}
        self._remotes: dict[str, RemoteHost] = {}
        self._tunnels = None

    @property
    def tunnels(self):
        """The TunnelSupervisor, created on first use (tests that never tunnel never start its threads)."""
        from app.engine.tunnels import TunnelSupervisor

        with self._lock:
            if self._tunnels is None:
                self._tunnels = TunnelSupervisor()
            return self._tunnels

    def settings_for(self, session: Session) -> Settings:
        return load_settings(session.workdir or self.app.config["MAIDER_WORKDIR"])

    def provider_for(self, session: Session) -> Provider:
        """The provider that made this session's VM, in the session's own region: the project's REGION may have
        changed since, and a regional API (AWS) asked about an instance in another region answers "not found"."""
        return self.provider(session.provider, session.workdir or self.app.config["MAIDER_WORKDIR"],
                             region=session.region)

    def provider(self, name: str, workdir: str, region: str | None = None) -> Provider:
        """One provider object per (cloud, project, region), so its client and caches are reused; ``region``
        overrides the project's REGION."""
        key = (name, workdir, region)
        with self._lock:
            if key not in self._providers:
                settings = load_settings(workdir)
                if region:
                    settings = replace(settings, region=region)
                self._providers[key] = self._provider_factory(name, settings, self.home)
            return self._providers[key]

    def forget_provider(self, name: str, workdir: str | None) -> None:
        """Drop cached providers after their credentials were refused, so a corrected token is read next time."""
        workdir = workdir or self.app.config["MAIDER_WORKDIR"]
        with self._lock:
            for key in [k for k in self._providers if k[:2] == (name, workdir)]:
                del self._providers[key]

    def remote(self, uid: str, host: str, port: int, host_public: str, client_private: str) -> RemoteHost:
        """The VM's one shared SSH connection (host key pinned), connected; reconnects when it died.

        Takes plain values, not a Session, so tunnel threads can call it without touching ORM objects.
        """
        with self._lock:
            remote = self._remotes.get(uid)
            if remote is not None and (remote.host, remote.port) != (host, port):
                remote.close()
                remote = None
            if remote is None:
                remote = RemoteHost(host, port, load_public_key(host_public), load_private_key(client_private),
                                    connect_timeout=self.timings.ssh_connect_timeout.total_seconds())
                self._remotes[uid] = remote
        if not remote.is_alive():
            remote.connect()
        return remote

    def drop_remote(self, uid: str) -> None:
        with self._lock:
            remote = self._remotes.pop(uid, None)
        if remote is not None:
            remote.close()

    def close(self) -> None:
        """Close every connection and tunnel (server shutdown)."""
        with self._lock:
            remotes, self._remotes = list(self._remotes.values()), {}
            tunnels = self._tunnels
        for remote in remotes:
            remote.close()
        if tunnels is not None:
            tunnels.close_all()


def runtime(app: Flask) -> EngineRuntime:
    """The app's engine runtime, created on first use."""
    existing = app.extensions.get("maider_engine")
    if existing is None:
        existing = app.extensions.setdefault("maider_engine", EngineRuntime(app))
    return existing
