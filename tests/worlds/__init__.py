"""Provider worlds: one real provider class talking to its cloud's fake (or emulator), behind one small interface.

The provider contract suite (``tests/test_provider_contract.py``) and the per-provider journeys run against every
world alike, so a new cloud is covered by writing its world (``tests/worlds/<provider>.py`` with a ``world()``
context manager) and adding its name to ``WORLDS``.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Protocol

from app.providers.base import InstanceSpec, Provider

WORLDS = ("linode", "digitalocean", "aws", "ssh")

# The far side's answers a world can script. Each maps to one typed error (see tests/test_provider_contract.py).
FAULTS = ("auth", "capacity", "rate_limit", "bad_request", "server_error")
OPERATIONS = ("create", "get", "delete")


class World(Protocol):
    """A provider and the fake far side it talks to, with the knobs the contract suite needs."""

    name: str
    provider: Provider  # the real provider class; its retries sleep for no time
    faults: frozenset[str]  # which FAULTS this cloud can answer at all (an SSH host has no capacity or rate limit)

    def spec(self, label: str) -> InstanceSpec:
        """A valid InstanceSpec for a GPU plan this world offers (region, plan, a public key, tiny user data)."""

    def fail_next(self, operation: str, fault: str, times: int = 1) -> None:
        """Make the next ``times`` calls of ``operation`` (``OPERATIONS``) answer with ``fault`` (``FAULTS``)."""

    def heal(self) -> None:
        """Forget every scripted fault still pending: the far side answers normally again."""

    def fail_after_create(self) -> None:
        """The next create really creates, then answers a 5xx (the ambiguous failure idempotency is for)."""

    def creates(self) -> int:
        """How many instances the far side has created in total."""

    def deletes(self) -> int:
        """How many instances the far side has deleted in total."""

    def live(self) -> list[str]:
        """Ids of the instances the far side still has (still billing)."""

    def add_foreign(self, label: str) -> str:
        """Put an instance on the account that maider did not make (no owner tag); return its id."""

    def leftovers(self) -> list[str]:
        """maider's per-session resources still on the account besides instances (keys, security groups, ...)."""

    def boot_vms(self, start_vm: Callable[[str], tuple[str, int]]) -> None:
        """From now on every create calls ``start_vm(user_data)`` (the cloud-config text maider sent), which boots a
        simulated VM and returns its SSH ``(host, port)``; the instance's address becomes that."""

    def project_env(self) -> tuple[str, str]:
        """``(.env, .env.secrets)`` text for a project that launches on this world (PROVIDER, REGION, TYPE, ...)."""


def open_world(name: str, tmp_path: Path) -> AbstractContextManager[World]:
    """The named world's ``world(tmp_path)`` context manager."""
    module = importlib.import_module(f"worlds.{name}")
    return module.world(tmp_path)
