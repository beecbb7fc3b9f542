"""Run the panel: build the app, start the background workers, serve with waitress, advertise the address.

The address goes into ``MAIDER_HOME/server.json`` (0600, with the API token) so CLI commands find the running server,
whatever port or mode it picked.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import secrets
import signal
import ssl
import threading
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from app import create_app
from app.services.users import ensure_owner
from app.web.proxy.routes import close_upstream
from app.database_check import DATABASE_FILE, DatabaseDamaged, check_database

log = logging.getLogger(__name__)
SERVER_FILE = "server.json"
LOCK_FILE = "server.lock"
CATALOG_WARM_INTERVAL = timedelta(minutes=10)  # the cache itself lives 6 h; this only refills a stale one
DEMO_TIMINGS = {"poll_max": 2.0}  # simulated VMs move in seconds: poll them often so the demo feels live


def server_file(home: Path) -> Path:
    return home / SERVER_FILE


def write_server_file(home: Path, url: str, demo: bool, api_token: str) -> None:
    """Advertise the running server to CLI clients (0600: it holds the API token)."""
    path = server_file(home)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump({"url": url, "pid": os.getpid(), "demo": demo, "api_token": api_token}, handle)
    os.replace(tmp, path)


def remove_server_file(home: Path) -> None:
    path = server_file(home)
    try:
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError):
        pass


def secure_home(home: Path) -> None:
    """MAIDER_HOME holds the API token, SSH keys and the database: owner-only (0700/0600), also when the folder was
    made earlier with looser modes (an older maider, a copy, a restore). Symlinks are left alone, never followed."""
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    for path in (home, *home.rglob("*")):
        if path.is_symlink():
            continue
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            path.chmod(mode & 0o700)


def _install_shutdown_signals() -> None:
    """SIGTERM (kill, systemd, logout) and SIGHUP (terminal closed) stop the server the way Ctrl-C does: the
    ``finally`` of ``run_server`` then removes server.json, stops the workers and releases the lock."""
    if threading.current_thread() is not threading.main_thread():
        return  # signal handlers belong to the main thread (tests may serve from another one)

    def _shutdown(signum: int, _frame: object) -> None:
        for other in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(other, signal.SIG_IGN)  # a second signal must not cut the clean-up short
        log.info("received %s: shutting down", signal.Signals(signum).name)
        raise SystemExit(0)

    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _shutdown)


def _note_stale_server_file(home: Path) -> None:
    """We hold the owner lock, so whoever wrote an existing server.json is gone: say so; it is replaced below."""
    try:
        stale = json.loads(server_file(home).read_text())
    except (OSError, ValueError):
        return
    log.info("replacing a stale server.json (pid %s, %s): that server is no longer running",
             stale.get("pid"), stale.get("url"))


class AlreadyRunning(RuntimeError):
    """Another maider server owns this MAIDER_HOME."""


class ShareRefused(RuntimeError):
    """``--share`` was asked for, but sharing now would expose a panel nobody can sign in to safely."""


@dataclass(frozen=True)
class ShareOptions:
    """Where and how ``--share`` serves HTTPS."""

    host: str  # the address the TLS front binds
    port: int
    names: tuple[str, ...]  # the host names (and addresses) teammates use: the Host guard accepts only these
    cert_path: Path | None = None  # the user's certificate, else a self-signed one is made in MAIDER_HOME
    key_path: Path | None = None

    @property
    def url(self) -> str:
        name = self.names[0]
        return f"https://{'[' + name + ']' if ':' in name and not name.startswith('[') else name}:{self.port}"


def acquire_owner_lock(home: Path):
    """One server per MAIDER_HOME: two sets of workers would race for the same VMs. Returns the open lock file."""
    handle = open(home / LOCK_FILE, "a+")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        try:
            url = json.loads(server_file(home).read_text()).get("url", "")
        except (OSError, ValueError):
            url = ""
        raise AlreadyRunning(f"maider is already running{' at ' + url if url else ''} for {home}") from None
    return handle


def _as_host_header(name: str) -> str:
    """How a Host header names it: an IPv6 address in brackets, everything lower-case."""
    name = name.lower()
    return f"[{name.strip('[]')}]" if ":" in name else name


def _share_front(app, home: Path, share: ShareOptions, backend_port: int):
    """The HTTPS front for ``--share``: only once a teammate can sign in, and only over TLS."""
    from app.services.users import has_teammates
    from app.share_front import PeerMap, RestorePeer, TlsFront, server_context
    from app.tls import own_certificate, self_signed

    with app.app_context():
        if not has_teammates():
            raise ShareRefused(
                "--share needs at least one teammate who can sign in: start 'maider serve' without --share, add one "
                "with 'maider user add NAME --role operator' (it prints their invite link), then restart with "
                "--share.")
    try:
        if share.cert_path is not None and share.key_path is not None:
            cert = own_certificate(share.cert_path, share.key_path)
        else:
            cert = self_signed(home, list(share.names))
    except ValueError as exc:
        raise ShareRefused(f"cannot serve HTTPS: {exc}") from None
    app.config["MAIDER_TLS_FINGERPRINT"] = cert.fingerprint
    peers = PeerMap()
    app.wsgi_app = RestorePeer(app.wsgi_app, peers)
    try:
        context = server_context(str(cert.cert_path), str(cert.key_path))
    except ssl.SSLError as exc:
        raise ShareRefused(f"cannot serve HTTPS: the certificate and key do not belong together ({exc.reason})") \
            from None
    try:
        return TlsFront(share.host, share.port, backend_port, context, peers)
    except OSError as exc:
        raise ShareRefused(f"cannot listen on {share.host}:{share.port} for --share: {exc.strerror or exc}") from None


def release_stale_leases(app) -> None:
    """This process now owns every session: leases held by a killed predecessor are void."""
    from app.extensions import db
    from app.models import Session

    with app.app_context():
        db.session.execute(db.update(Session).values(lease_token=None, lease_expires_at=None))
        db.session.commit()


def run_server(home: Path, host: str, port: int, demo: bool, start_workers: bool = True, threads: int = 8,
               share: ShareOptions | None = None) -> None:
    """Serve until interrupted; workers stop with the server."""
    from waitress import create_server

    os.umask(0o077)  # everything the server writes (database, keys, logs, caches) is the owner's alone
    secure_home(home)
    lock = acquire_owner_lock(home)
    _note_stale_server_file(home)
    data_home = home / "demo" if demo else home
    try:
        check_database(data_home / DATABASE_FILE)
    except DatabaseDamaged:
        lock.close()
        raise
    api_token = secrets.token_urlsafe(32)
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
    config = {"MAIDER_HOME": str(data_home), "MAIDER_DEMO": demo, "MAIDER_API_TOKEN": api_token,
              "MAIDER_PORT": port, "MAIDER_LOCAL_URL": url}
    if demo:
        config["MAIDER_TIMINGS"] = DEMO_TIMINGS
    if share is not None:
        config.update(MAIDER_PUBLIC_URL=share.url, MAIDER_ALLOWED_HOSTS=[_as_host_header(n) for n in share.names])
    app = create_app(config)
    try:
        front = _share_front(app, home, share, port) if share is not None else None
    except ShareRefused:
        lock.close()
        raise
    release_stale_leases(app)
    with app.app_context():
        ensure_owner()  # before the first request: concurrent first requests need not race to create it
    supervisor = None
    if start_workers:
        from app.engine.supervisor import Supervisor, default_loops
        from app.services.catalog import warm_cache

        supervisor = Supervisor(app, {**default_loops(app), "catalog": (warm_cache, CATALOG_WARM_INTERVAL)})
        supervisor.start()
    server = create_server(app, host=host, port=port, threads=threads, ident="maider")  # binds with SO_REUSEADDR
    write_server_file(home, url, demo, api_token)
    print(f"maider panel: {url}/{'  (demo mode)' if demo else ''}", flush=True)
    print(f"Sign in (this link works once; 'maider open' prints another): {url}/login?token="
          f"{app.extensions['maider_login_links'].mint()}", flush=True)
    if front is not None:
        front.start()
        print(f"Shared with your team at {share.url}/ (HTTPS; certificate SHA-256 fingerprint "
              f"{app.config['MAIDER_TLS_FINGERPRINT']}). Teammates sign in with the password they chose from "
              "their invite link.", flush=True)
    _install_shutdown_signals()  # from here on, the ``finally`` below runs on SIGTERM/SIGHUP
    try:
        server.run()
    finally:
        remove_server_file(home)
        if front is not None:
            front.stop()
        server.close()
        close_upstream(app)
        if supervisor is not None:
            supervisor.stop()
        lock.close()
