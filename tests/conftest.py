"""Shared fixtures, flaskr-style: a real app on a real SQLite file in a temporary MAIDER_HOME."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from app import create_app
from app.extensions import db
from app.providers.linode import LinodeProvider
from app.remote import KeyPair, new_keypair
from app.simulator.vm import VmBehaviour, vm_from_user_data
from engine_helpers import FAST_TIMINGS, LINODE_TOKEN, sign_in_owner, write_project
from fakes.linode_api import FakeLinodeApi

CHROMIUM = os.environ.get("MAIDER_CHROMIUM", "/usr/bin/chromium")


@pytest.fixture(autouse=True)
def _isolated_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads the developer's real config, tokens or data dir."""
    for variable in ("LINODE_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN", "MAIDER_LINODE_API_URL", "MAIDER_PORT",
                     "REGION", "TYPE", "MODEL_ID", "MAIDER_PROVIDER", "PROVIDER", "DIGITALOCEAN_TOKEN",
                     "MAIDER_DIGITALOCEAN_API_URL", "AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                     "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_ENDPOINT_URL",
                     "AWS_ENDPOINT_URL_EC2", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "home" / ".config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "home" / ".local" / "share"))
    monkeypatch.setenv("MAIDER_HOME", str(tmp_path / "maider-home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    workdir = tmp_path / "project"
    workdir.mkdir()
    monkeypatch.chdir(workdir)


@pytest.fixture
def app(tmp_path: Path):
    """The app on a file database in a fresh MAIDER_HOME, schema from the Alembic migrations."""
    app = create_app({
        "TESTING": True,
        "MAIDER_HOME": str(tmp_path / "maider-home"),
        "MAIDER_WORKDIR": str(tmp_path / "project"),
        "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'maider-home' / 't.db'}",
    })
    yield app
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def client(app):
    """A browser signed in as the laptop's owner (admin), through the one-time link as ``maider serve`` prints it."""
    client = app.test_client()
    sign_in_owner(app, client)
    return client


@pytest.fixture
def anon_client(app):
    """A browser that never signed in."""
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    """Playwright drives Debian's Chromium (Playwright's own browser download cannot work offline)."""
    return {
        **browser_type_launch_args,
        "executable_path": CHROMIUM,
        "args": ["--no-sandbox", "--disable-gpu", "--headless=new", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"],
    }


@pytest.fixture
def keys() -> tuple[KeyPair, KeyPair]:
    """A host key pair and a client key pair, as maider makes them for each session."""
    return new_keypair(), new_keypair()


@pytest.fixture
def linode_world(app, tmp_path):
    """A fake Linode whose create call boots a simulated VM from the submitted user data."""
    api = FakeLinodeApi(token=LINODE_TOKEN)
    api.start()
    provider = LinodeProvider(LINODE_TOKEN, base_url=api.base_url, sleep=lambda _s: None)
    vms = []
    behaviour = {"value": VmBehaviour.fast()}

    def on_create(body):
        vm = vm_from_user_data(body["user_data"], behaviour["value"])
        vm.start()
        vms.append(vm)
        provider.ssh_port = vm.ssh_port  # the VM's sshd, published on a loopback port
        return None

    api.on_create = on_create
    app.config["MAIDER_PROVIDER_FACTORY"] = lambda name, settings, home: provider
    app.config["MAIDER_TIMINGS"] = FAST_TIMINGS
    workdir = Path(app.config["MAIDER_WORKDIR"])
    write_project(workdir, "REGION=us-ord\nTYPE=g2-gpu-rtx4000a1-s\nMODEL_ID=Qwen/Qwen2.5-Coder-7B-Instruct-AWQ\n"
                           "VLLM_MAX_MODEL_LEN=8192\n", f"LINODE_TOKEN={LINODE_TOKEN}\n")
    yield {"api": api, "provider": provider, "vms": vms, "behaviour": behaviour, "workdir": workdir}
    from app.engine.runtime import runtime

    runtime(app).close()
    for vm in vms:
        vm.stop()
    api.stop()
