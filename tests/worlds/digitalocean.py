"""DigitalOcean's world: the real ``pydo`` SDK against ``tests/fakes/digitalocean_api.py``."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from app.providers.base import InstanceSpec
from app.providers.digitalocean import DigitalOceanProvider
from app.remote import new_keypair
from fakes.digitalocean_api import SIZE_UNAVAILABLE_MESSAGE, USER_KEY_NAME, FakeDigitalOceanApi

TOKEN = "dop_v1_fake-digitalocean-token-for-the-contract-suite"
_DROPLETS = r"^/v2/droplets$"
_DROPLET = r"^/v2/droplets/\d+$"
_STATUS = {"auth": 401, "capacity": 422, "rate_limit": 429, "bad_request": 422, "server_error": 500}
_BODY = {"auth": {"id": "Unauthorized", "message": "Unable to authenticate you"},
         "capacity": {"id": "unprocessable_entity", "message": SIZE_UNAVAILABLE_MESSAGE},
         "rate_limit": {"id": "too_many_requests", "message": "API Rate limit exceeded."},
         "bad_request": {"id": "unprocessable_entity", "message": "You specified an invalid size for Droplet creation."}}


class DigitalOceanWorld:
    name = "digitalocean"
    faults = frozenset(_STATUS)

    def __init__(self, api: FakeDigitalOceanApi) -> None:
        self.api = api
        self.provider = DigitalOceanProvider(TOKEN, base_url=api.base_url, sleep=lambda _s: None)
        self._key = new_keypair().public_openssh

    def spec(self, label: str) -> InstanceSpec:
        return InstanceSpec(label=label, region="tor1", plan="gpu-4000adax1-20gb", user_data="#cloud-config\n{}\n",
                            authorized_keys=(self._key,))

    def fail_next(self, operation: str, fault: str, times: int = 1) -> None:
        method, path = {"create": ("POST", _DROPLETS), "get": ("GET", _DROPLET),
                        "delete": ("DELETE", _DROPLET)}[operation]
        self.api.fail(method, path, _STATUS[fault], times=times, body=_BODY.get(fault),
                      retry_after=0 if fault == "rate_limit" else None)

    def heal(self) -> None:
        self.api.clear_faults()

    def fail_after_create(self) -> None:
        self.api.fail("POST", _DROPLETS, 502, after_effect=True)

    def creates(self) -> int:
        return len(self.api.create_bodies)

    def deletes(self) -> int:
        return len(self.api.deleted)

    def live(self) -> list[str]:
        return [str(i) for i in self.api.droplets]

    def add_foreign(self, label: str) -> str:
        return str(self.api.add_droplet(label, tags=["web"])["id"])

    def leftovers(self) -> list[str]:
        return [f"ssh key {k['name']}" for k in self.api.keys.values() if k["name"] != USER_KEY_NAME]

    def boot_vms(self, start_vm: Callable[[str], tuple[str, int]]) -> None:
        def on_create(body: dict) -> None:
            host, port = start_vm(body["user_data"])
            self.api.ipv4 = host
            self.provider.ssh_port = port
        self.api.on_create = on_create

    def project_env(self) -> tuple[str, str]:
        env = ("PROVIDER=digitalocean\nREGION=tor1\nTYPE=gpu-4000adax1-20gb\n"
               "MODEL_ID=Qwen/Qwen2.5-Coder-7B-Instruct-AWQ\nVLLM_MAX_MODEL_LEN=8192\n")
        return env, f"DIGITALOCEAN_TOKEN={TOKEN}\nMAIDER_DIGITALOCEAN_API_URL={self.api.base_url}\n"


@contextmanager
def world(tmp_path: Path) -> Iterator[DigitalOceanWorld]:
    with FakeDigitalOceanApi(token=TOKEN) as api:
        yield DigitalOceanWorld(api)
