"""Per-session secrets kept in files under MAIDER_HOME, never in the database.

Each session gets: the VM's SSH host key (maider generates it, injects it through cloud-init and pins it, so there is
no trust-on-first-use), a client key that only this VM accepts, the vLLM API key and Open WebUI's secret. Files are
0600 in a 0700 folder and are removed once the VM is confirmed deleted.
"""
from __future__ import annotations

import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

from app.files import write_private
from app.redaction import register_secret
from app.remote import RemoteError, load_public_key, new_keypair

SESSIONS_DIR = "sessions"
_FILES = ("host_key", "host_key.pub", "client_key", "client_key.pub", "api_key", "webui_secret")


@dataclass(frozen=True)
class SessionIdentity:
    host_private: str  # OpenSSH private key text of the VM's host key
    host_public: str  # "ssh-ed25519 AAAA..." -- the only key maider accepts from this VM
    client_private: str  # OpenSSH private key text maider logs in with
    client_public: str  # authorised on the VM for root
    api_key: str  # vLLM --api-key
    webui_secret: str  # Open WebUI WEBUI_SECRET_KEY

    def __repr__(self) -> str:
        return "<SessionIdentity (secrets hidden)>"


def identity_dir(home: Path, uid: str) -> Path:
    return Path(home) / SESSIONS_DIR / uid


def ensure_identity(home: Path, uid: str) -> SessionIdentity:
    """Create the session's keys once; later calls (a resumed launch) return the same ones."""
    folder = identity_dir(home, uid)
    if all((folder / name).is_file() for name in _FILES):
        return load_identity(home, uid)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(folder, 0o700)
    host, client = new_keypair(), new_keypair()
    values = {
        "host_key": host.private_openssh, "host_key.pub": host.public_openssh,
        "client_key": client.private_openssh, "client_key.pub": client.public_openssh,
        "api_key": "sk-maider-" + secrets.token_urlsafe(24), "webui_secret": secrets.token_urlsafe(32),
    }
    for name, text in values.items():
        write_private(folder / name, text)
    return load_identity(home, uid)


def load_identity(home: Path, uid: str) -> SessionIdentity:
    """Read the session's keys; FileNotFoundError if they were never created or already removed."""
    folder = identity_dir(home, uid)
    read = lambda name: (folder / name).read_text().strip()  # noqa: E731
    register_secret(read("api_key"))
    return SessionIdentity(read("host_key"), read("host_key.pub"), read("client_key"), read("client_key.pub"),
                           read("api_key"), read("webui_secret"))


def pin_host_key(home: Path, uid: str, host_public: str) -> None:
    """Pin the key a machine already has (the provider knew it: a host the user runs keeps its own identity)
    instead of the one maider generated for cloud-init; every later connection accepts only this one."""
    line = host_public.strip()
    try:
        load_public_key(line)
    except RemoteError:
        raise ValueError("a host key must be one OpenSSH public key line") from None
    if "\n" in line:
        raise ValueError("a host key must be one OpenSSH public key line")
    write_private(identity_dir(home, uid) / "host_key.pub", line + "\n")


def remove_identity(home: Path, uid: str) -> None:
    """Forget a destroyed VM's keys (they open nothing any more)."""
    shutil.rmtree(identity_dir(home, uid), ignore_errors=True)
