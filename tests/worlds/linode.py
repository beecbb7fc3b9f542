"""Linode's world: the real ``linode_api4`` SDK against ``tests/fakes/linode_api.py``."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from app.providers.base import InstanceSpec
from app.providers.linode import LinodeProvider
from app.remote import new_keypair
from fakes.linode_api import NO_AVAILABILITY_REASON, FakeLinodeApi

TOKEN = "fake-linode-token-for-the-contract-suite"
_INSTANCES = r"^/v4/linode/instances$"
_INSTANCE = r"^/v4/linode/instances/\d+$"
_STATUS = {"auth": 401, "capacity": 403, "rate_limit": 429, "bad_request": 400, "server_error": 500}
_BODY = {"capacity": {"errors": [{"reason": NO_AVAILABILITY_REASON}]},
         "bad_request": {"errors": [{"field": "type", "reason": "A valid plan type by that ID was not found"}]}}


class LinodeWorld:
    name = "linode"
    faults = frozenset(_STATUS)

    def __init__(self, api: FakeLinodeApi) -> None:
        self.api = api
        self.provider = LinodeProvider(TOKEN, base_url=api.base_url, sleep=lambda _s: None)
        self._key = new_keypair().public_openssh

    def spec(self, label: str) -> InstanceSpec:
        return InstanceSpec(label=label, region="us-ord", plan="g2-gpu-rtx4000a1-s", user_data="#cloud-config\n{}\n",
                            authorized_keys=(self._key,))

    def fail_next(self, operation: str, fault: str, times: int = 1) -> None:
        method, path = {"create": ("POST", _INSTANCES), "get": ("GET", _INSTANCE),
                        "delete": ("DELETE", _INSTANCE)}[operation]
        self.api.fail(method, path, _STATUS[fault], times=times, body=_BODY.get(fault),
                      retry_after=0 if fault == "rate_limit" else None)
        if fault == "auth":  # a token that is really bad fails everywhere, the profile check included
            self.api.fail("GET", r"^/v4/profile$", 401, times=times)

    def heal(self) -> None:
        self.api.clear_faults()

    def fail_after_create(self) -> None:
        self.api.fail("POST", _INSTANCES, 502, after_effect=True)

    def creates(self) -> int:
        return len(self.api.create_bodies)

    def deletes(self) -> int:
        return len(self.api.deletions)

    def live(self) -> list[str]:
        return [str(i) for i in self.api.instances]

    def add_foreign(self, label: str) -> str:
        return str(self.api.add_instance(label, tags=["web"])["id"])

    def leftovers(self) -> list[str]:
        return [f"token {t['label']}" for t in self.api.tokens.values()]

    def boot_vms(self, start_vm: Callable[[str], tuple[str, int]]) -> None:
        def on_create(body: dict) -> None:
            host, port = start_vm(body["user_data"])
            self.api.ipv4 = host
            self.provider.ssh_port = port
        self.api.on_create = on_create

    def project_env(self) -> tuple[str, str]:
        return ("PROVIDER=linode\nREGION=us-ord\nTYPE=g2-gpu-rtx4000a1-s\n"
                "MODEL_ID=Qwen/Qwen2.5-Coder-7B-Instruct-AWQ\nVLLM_MAX_MODEL_LEN=8192\n", f"LINODE_TOKEN={TOKEN}\n")


@contextmanager
def world(tmp_path: Path) -> Iterator[LinodeWorld]:
    with FakeLinodeApi(token=TOKEN) as api:
        yield LinodeWorld(api)
