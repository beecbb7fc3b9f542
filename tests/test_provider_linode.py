"""LinodeProvider through the real linode_api4 SDK, over HTTP, against the fake Linode API."""
from __future__ import annotations

import base64
import gzip
import logging
import time
from collections.abc import Iterator
from datetime import datetime

import pytest

from app.config import Secret
from app.errors import SecretResolutionError
from app.providers.base import (
    OWNER_TAG, AuthError, CapacityError, InstanceSpec, InstanceStatus, InvalidRequest, NotFound, Provider,
    RateLimited, TransientError,
)
from app.providers.linode import MAX_ATTEMPTS, NO_TOKEN_MESSAGE, LinodeProvider
from fakes.linode_api import FakeLinodeApi

INSTANCES = "/v4/linode/instances"
PLANTED_TOKEN = "maider-planted-token-7f3c9e1d"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHk3b2n0tR3aLkEyJustATestKeyForMaider maider-session"


@pytest.fixture
def api() -> Iterator[FakeLinodeApi]:
    fake = FakeLinodeApi().start()
    yield fake
    fake.stop()


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def provider(api: FakeLinodeApi, sleeps: list[float]) -> LinodeProvider:
    return LinodeProvider(api.token, api.base_url, sleep=sleeps.append)


def _spec(label: str = "maider-3f2a", **overrides: object) -> InstanceSpec:
    values: dict[str, object] = {
        "label": label, "region": "us-ord", "plan": "g2-gpu-rtx4000a1-s",
        "user_data": "#cloud-config\nwrite_files: []\n", "authorized_keys": (KEY,), "firewall_id": "4242",
    }
    values.update(overrides)
    return InstanceSpec(**values)  # type: ignore[arg-type]


def test_is_a_provider(provider: LinodeProvider) -> None:
    assert isinstance(provider, Provider)


def test_regions_are_the_gpu_regions_with_their_metadata_support(provider: LinodeProvider) -> None:
    regions = {r.id: r for r in provider.regions()}
    assert "us-ord" in regions and "us-east" in regions
    assert "us-central" not in regions and "gb-lon" not in regions  # no "GPU Linodes" capability
    assert regions["us-ord"].label == "Chicago, IL" and regions["us-ord"].country == "us"
    assert regions["us-ord"].has_metadata and not regions["ap-west"].has_metadata


def test_gpu_plans_use_maiders_vram_and_leave_out_non_gpu_types(provider: LinodeProvider) -> None:
    plans = {p.id: p for p in provider.gpu_plans()}
    assert len(plans) == 12
    assert "g1-accelerated-netint-vpu-t1u1-s" not in plans and "g6-standard-2" not in plans
    ada, turing = plans["g2-gpu-rtx4000a2-s"], plans["g1-gpu-rtx6000-2"]
    assert (ada.gpus, ada.gpu.name, ada.vram_gb_per_gpu, ada.vram_gb_total) == (2, "RTX 4000 Ada", 20.0, 40.0)
    assert (turing.gpu.name, turing.vram_gb_per_gpu, turing.vram_gb_total) == ("Quadro RTX 6000", 24.0, 48.0)
    assert all(p.gpu is not None and p.gpu.vram_gb != 48 for p in plans.values())
    assert (ada.memory_mb, ada.vcpus, ada.hourly_price) == (32768, 8, 1.05)


def test_gpu_plan_prices_prefer_the_region_price_over_the_base_price(provider: LinodeProvider) -> None:
    osaka = {p.id: p.hourly_price for p in provider.gpu_plans("jp-osa")}
    chicago = {p.id: p.hourly_price for p in provider.gpu_plans("us-ord")}
    mumbai = {p.id: p.hourly_price for p in provider.gpu_plans("ap-west")}
    assert osaka["g2-gpu-rtx4000a1-s"] == 0.62 and chicago["g2-gpu-rtx4000a1-s"] == 0.52
    assert osaka["g2-gpu-rtx4000a1-l"] == chicago["g2-gpu-rtx4000a1-l"] == 0.96
    assert mumbai["g1-gpu-rtx6000-1"] == 1.8


def test_gpu_plans_know_their_regions_from_availability_internal_names(provider: LinodeProvider,
                                                                        api: FakeLinodeApi) -> None:
    plans = {p.id: p for p in provider.gpu_plans()}
    assert plans["g1-gpu-rtx6000-1"].regions == ("ap-south", "ap-west", "eu-central", "us-east", "us-southeast")
    assert "us-ord" in plans["g2-gpu-rtx4000a1-s"].regions and "us-east" not in plans["g2-gpu-rtx4000a1-s"].regions
    # for a region: only the plans offered there
    assert {p.id[:6] for p in provider.gpu_plans("us-east")} == {"g1-gpu"}
    assert {p.id[:6] for p in provider.gpu_plans("us-ord")} == {"g2-gpu"}
    # a plan Linode marks unavailable in a region is not offered there
    for entry in api.availability:
        if entry["region"] == "fr-par" and entry["plan"] == "g2-gpu-rtx4000a4-m":
            entry["available"] = False
    assert "g2-gpu-rtx4000a4-m" not in {p.id for p in provider.gpu_plans("fr-par")}


def test_gpu_plans_without_availability_list_every_plan(provider: LinodeProvider, api: FakeLinodeApi) -> None:
    api.availability_broken = True
    plans = provider.gpu_plans("us-east")
    assert len(plans) == 12 and all(p.regions == () for p in plans)


def test_gpu_plans_follow_pagination_with_the_class_filter_on_every_page(sleeps: list[float]) -> None:
    with FakeLinodeApi(max_page_size=5) as api:
        plans = LinodeProvider(api.token, api.base_url, sleep=sleeps.append).gpu_plans()
        type_requests = api.matching("GET", "/v4/linode/types")
    assert len(plans) == 12
    assert len(type_requests) == 3  # 12 GPU types, 5 a page
    assert all(r.x_filter == {"class": "gpu"} for r in type_requests)


def test_create_sends_label_tags_user_data_and_keys(provider: LinodeProvider, api: FakeLinodeApi,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    seen: list[dict] = []
    api.on_create = lambda body: seen.append(body) or {"ipv4": ["192.168.130.7", "203.0.113.9"]}

    instance = provider.create(_spec())

    body = api.matching("POST", INSTANCES)[0].json
    assert body["label"] == "maider-3f2a" and body["region"] == "us-ord" and body["type"] == "g2-gpu-rtx4000a1-s"
    assert body["image"] == "linode/ubuntu24.04" and body["booted"] is True
    assert body["tags"] == [OWNER_TAG] and body["authorized_keys"] == [KEY] and body["firewall_id"] == 4242
    sent = gzip.decompress(base64.b64decode(body["metadata"]["user_data"]))
    assert sent.decode() == "#cloud-config\nwrite_files: []\n"
    assert seen[0]["user_data"] == "#cloud-config\nwrite_files: []\n"
    assert len(body["root_pass"]) >= 32
    assert body["root_pass"] not in caplog.text and api.token not in caplog.text
    assert body["root_pass"] not in repr(instance)

    assert instance.id == str(next(iter(api.instances))) and instance.label == "maider-3f2a"
    assert instance.status is InstanceStatus.PROVISIONING
    assert instance.ssh_host == "203.0.113.9" and instance.ssh_port == 22  # Linode's private address skipped
    assert isinstance(instance.created_at, datetime) and instance.created_at.tzinfo is None
    assert instance.hourly_price == 0.52 and instance.tags == (OWNER_TAG,)


def test_each_create_uses_a_fresh_root_password(provider: LinodeProvider, api: FakeLinodeApi) -> None:
    provider.create(_spec("maider-a"))
    provider.create(_spec("maider-b"))
    first, second = (r.json["root_pass"] for r in api.matching("POST", INSTANCES))
    assert first != second


def test_a_502_after_linode_created_the_vm_makes_exactly_one_vm(provider: LinodeProvider,
                                                                api: FakeLinodeApi) -> None:
    api.fail("POST", f"^{INSTANCES}$", 502, after_effect=True)

    instance = provider.create(_spec())

    assert list(api.instances) == [int(instance.id)]
    assert api.count("POST", INSTANCES) == 1 and api.count("POST", INSTANCES, status=502) == 1
    calls = [(r.method, r.status, r.x_filter) for r in api.requests if r.path == INSTANCES]
    label_filter = {"label": "maider-3f2a"}
    assert calls == [("GET", 200, label_filter), ("POST", 502, None), ("GET", 200, label_filter)]


def test_a_post_that_timed_out_and_landed_late_still_makes_one_vm(api: FakeLinodeApi, sleeps: list[float]) -> None:
    provider = LinodeProvider(api.token, api.base_url, sleep=sleeps.append, request_timeout_s=0.2)
    api.fail("POST", f"^{INSTANCES}$", None, delay=0.6)  # slow, then really creates

    instance = provider.create(_spec())
    deadline = time.monotonic() + 3
    while api.count("POST", INSTANCES) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)  # let the slow first POST finish on the server side

    assert list(api.instances) == [int(instance.id)]
    assert api.count("POST", INSTANCES, status=400) >= 1  # the late one hit "label must be unique"


def test_create_twice_with_one_label_makes_one_vm(provider: LinodeProvider, api: FakeLinodeApi) -> None:
    first = provider.create(_spec())
    second = provider.create(_spec())
    assert first.id == second.id and len(api.instances) == 1 and api.count("POST", INSTANCES) == 1


def test_label_already_in_use_returns_the_existing_vm(provider: LinodeProvider, api: FakeLinodeApi) -> None:
    api.fail("POST", f"^{INSTANCES}$", 400, after_effect=True,
             body={"errors": [{"field": "label", "reason": "Label must be unique among your linodes"}]})
    instance = provider.create(_spec())
    assert list(api.instances) == [int(instance.id)] and api.count("POST", INSTANCES) == 1


def test_sold_out_is_a_capacity_error_and_not_retried(provider: LinodeProvider, api: FakeLinodeApi,
                                                      sleeps: list[float]) -> None:
    for entry in api.availability:
        if entry["region"] == "us-ord" and entry["plan"] == "g2-gpu-rtx4000a1-s":
            entry["available"] = False
    with pytest.raises(CapacityError) as caught:
        provider.create(_spec())
    assert (caught.value.region, caught.value.plan) == ("us-ord", "g2-gpu-rtx4000a1-s")
    assert api.count("POST", INSTANCES) == 1 and sleeps == [] and not api.instances


def test_an_invalid_plan_is_an_invalid_request_naming_the_field(provider: LinodeProvider,
                                                               api: FakeLinodeApi) -> None:
    with pytest.raises(InvalidRequest) as caught:
        provider.create(_spec(plan="g9-no-such-plan"))
    assert caught.value.field == "type" and api.count("POST", INSTANCES) == 1


def test_a_refused_token_says_how_to_fix_it_and_never_shows_the_token(
        api: FakeLinodeApi, sleeps: list[float], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    provider = LinodeProvider(PLANTED_TOKEN, api.base_url, sleep=sleeps.append)
    for call in (provider.regions, provider.gpu_plans, provider.list_owned, lambda: provider.get("1"),
                 lambda: provider.create(_spec())):
        with pytest.raises(AuthError) as caught:
            call()
        error = caught.value
        assert str(error) == ("Linode refused the token (401): create a token with Linodes read/write at "
                              "https://cloud.linode.com/profile/tokens and set LINODE_TOKEN")
        chain = [error, error.__cause__, error.__context__]
        assert all(PLANTED_TOKEN not in f"{e} {e!r}" for e in chain if e is not None)
    assert sleeps == [] and PLANTED_TOKEN not in caplog.text and PLANTED_TOKEN not in repr(provider)
    assert api.count("POST", INSTANCES) == 0


def test_a_forbidden_token_is_an_auth_error(provider: LinodeProvider, api: FakeLinodeApi) -> None:
    api.fail("GET", "/v4/regions$", 403, body={"errors": [{"reason": "Unauthorized"}]})
    with pytest.raises(AuthError, match=r"refused the token \(403\)"):
        provider.regions()


def test_no_token_fails_at_first_use_with_the_fix(api: FakeLinodeApi) -> None:
    provider = LinodeProvider(None, api.base_url)
    with pytest.raises(AuthError) as caught:
        provider.regions()
    assert str(caught.value) == NO_TOKEN_MESSAGE and api.requests == []


def test_a_secret_is_revealed_only_when_linode_is_called(api: FakeLinodeApi, monkeypatch: pytest.MonkeyPatch) -> None:
    assert [r.id for r in LinodeProvider(Secret(api.token, "LINODE_TOKEN", "test"), api.base_url).regions()]
    monkeypatch.setenv("PATH", "/nonexistent")  # no 1Password CLI
    provider = LinodeProvider(Secret("op://vault/linode/token", "LINODE_TOKEN", ".env.secrets"), api.base_url)
    with pytest.raises(SecretResolutionError):
        provider.regions()


def test_get_is_always_fresh(provider: LinodeProvider) -> None:
    instance_id = provider.create(_spec()).id
    statuses = [provider.get(instance_id).status for _ in range(3)]
    assert statuses == [InstanceStatus.PROVISIONING, InstanceStatus.BOOTING, InstanceStatus.RUNNING]


def test_get_of_a_missing_instance_is_not_found(provider: LinodeProvider) -> None:
    with pytest.raises(NotFound):
        provider.get("12345")


def test_a_persistent_500_on_get_is_transient_not_not_found(provider: LinodeProvider, api: FakeLinodeApi,
                                                            sleeps: list[float]) -> None:
    instance_id = provider.create(_spec()).id
    api.fail("GET", rf"{INSTANCES}/{instance_id}$", 500, times=100)
    with pytest.raises(TransientError) as caught:
        provider.get(instance_id)
    assert not isinstance(caught.value, NotFound) and caught.value.retryable
    assert api.count("GET", f"{INSTANCES}/{instance_id}") == MAX_ATTEMPTS
    assert len(sleeps) == MAX_ATTEMPTS - 1 and all(b > a for a, b in zip(sleeps, sleeps[1:]))  # backing off


def test_one_500_then_success_returns_the_instance(provider: LinodeProvider, api: FakeLinodeApi,
                                                   sleeps: list[float]) -> None:
    instance_id = provider.create(_spec()).id
    api.fail("GET", rf"{INSTANCES}/{instance_id}$", 500)
    assert provider.get(instance_id).id == instance_id
    assert len(sleeps) == 1


def test_a_429_storm_ends_in_rate_limited_honouring_retry_after(provider: LinodeProvider, api: FakeLinodeApi,
                                                                sleeps: list[float]) -> None:
    api.fail("GET", "/v4/regions$", 429, times=1000, retry_after=7)
    started = time.monotonic()
    with pytest.raises(RateLimited) as caught:
        provider.regions()
    assert caught.value.retry_after == 7 and caught.value.retryable
    assert sleeps == [7.0] * (MAX_ATTEMPTS - 1) and api.count("GET", "/v4/regions") == MAX_ATTEMPTS
    assert time.monotonic() - started < 2


def test_the_wait_budget_bounds_retries(api: FakeLinodeApi, sleeps: list[float]) -> None:
    provider = LinodeProvider(api.token, api.base_url, sleep=sleeps.append, max_wait_s=10)
    api.fail("GET", "/v4/regions$", 429, times=1000, retry_after=4)
    with pytest.raises(RateLimited):
        provider.regions()
    assert sleeps == [4.0, 4.0]


def test_a_429_without_retry_after_backs_off_then_succeeds(provider: LinodeProvider, api: FakeLinodeApi,
                                                           sleeps: list[float]) -> None:
    api.fail("GET", "/v4/regions$", 429, times=2)
    assert provider.regions()
    assert len(sleeps) == 2 and 1 <= sleeps[0] < sleeps[1] <= 2 * 1.25


def test_delete_removes_and_tolerates_a_gone_instance(provider: LinodeProvider, api: FakeLinodeApi) -> None:
    instance_id = provider.create(_spec()).id
    provider.delete(instance_id)
    assert api.instances == {}
    provider.delete(instance_id)  # already gone: still success
    assert api.count("DELETE", f"{INSTANCES}/{instance_id}", status=404) == 1


def test_delete_retries_a_502_that_had_already_deleted(provider: LinodeProvider, api: FakeLinodeApi) -> None:
    instance_id = provider.create(_spec()).id
    api.fail("DELETE", rf"{INSTANCES}/\d+$", 502, after_effect=True)
    provider.delete(instance_id)
    assert api.instances == {}


def test_list_owned_returns_only_maider_tagged_instances_across_pages(sleeps: list[float]) -> None:
    with FakeLinodeApi(max_page_size=2) as api:
        for n in range(4):
            api.add_instance(f"maider-{n}", tags=[OWNER_TAG])
        api.add_instance("webserver", tags=["prod"])
        api.add_instance("untagged")
        api.add_instance("lookalike", tags=["maiderx"])
        owned = LinodeProvider(api.token, api.base_url, sleep=sleeps.append).list_owned()
        assert sorted(i.label for i in owned) == ["maider-0", "maider-1", "maider-2", "maider-3"]
        assert all(r.x_filter == {"tags": {"+contains": OWNER_TAG}} for r in api.matching("GET", INSTANCES))
        assert {i.status for i in owned} == {InstanceStatus.RUNNING}


@pytest.mark.parametrize(("linode_status", "expected"), [
    ("offline", InstanceStatus.STOPPED), ("shutting_down", InstanceStatus.STOPPED),
    ("rebooting", InstanceStatus.BOOTING), ("deleting", InstanceStatus.DELETING),
    ("migrating", InstanceStatus.OTHER), ("billing_suspension", InstanceStatus.OTHER),
])
def test_linode_statuses_map_to_maiders(provider: LinodeProvider, api: FakeLinodeApi, linode_status: str,
                                        expected: InstanceStatus) -> None:
    raw = api.add_instance("maider-x", tags=[OWNER_TAG], status=linode_status)
    assert provider.get(str(raw["id"])).status is expected


def test_a_slow_api_is_a_transient_error_not_a_hang(api: FakeLinodeApi, sleeps: list[float]) -> None:
    provider = LinodeProvider(api.token, api.base_url, sleep=sleeps.append, request_timeout_s=0.2)
    api.fail("GET", "/v4/regions$", None, times=MAX_ATTEMPTS, delay=0.5)
    started = time.monotonic()
    with pytest.raises(TransientError, match="did not answer"):
        provider.regions()
    assert time.monotonic() - started < MAX_ATTEMPTS * 0.2 + 1
    assert len(sleeps) == MAX_ATTEMPTS - 1


def test_an_unreachable_api_is_a_transient_error(api: FakeLinodeApi, sleeps: list[float]) -> None:
    base_url = api.base_url
    api.stop()
    with pytest.raises(TransientError, match="could not reach"):
        LinodeProvider(api.token, base_url, sleep=sleeps.append).regions()
    assert len(sleeps) == MAX_ATTEMPTS - 1


def test_a_custom_ssh_port_is_reported(api: FakeLinodeApi) -> None:
    provider = LinodeProvider(api.token, api.base_url, ssh_port=2222)
    assert provider.create(_spec()).ssh_port == 2222


def test_retry_after_as_an_http_date_with_unknown_zone_is_read_as_utc():
    import requests

    from app.providers.linode import _retry_after_seconds

    response = requests.Response()
    response.headers["Retry-After"] = "Wed, 21 Oct 2015 07:28:00 -0000"  # in the past: retry now
    assert _retry_after_seconds(response) == 0.0
