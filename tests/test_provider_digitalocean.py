"""DigitalOceanProvider through the real pydo SDK, over HTTP, against the fake DigitalOcean API.

The contract suite (tests/test_provider_contract.py) covers what every cloud shares; this covers DigitalOcean's own
ways: sizes with ``gpu_info``, keys registered by fingerprint, its 422 wordings, paging, and pydo never re-sending.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import pytest

from app.config import Secret
from app.domain.gpu_catalog import H100_80, RTX4000_ADA
from app.providers.base import (
    OWNER_TAG, AuthError, CapacityError, InstanceSpec, InstanceStatus, InvalidRequest, NotFound, Provider,
    ProviderError, RateLimited, TransientError,
)
from app.providers.digitalocean import (
    GPU_IMAGE, GPU_IMAGE_8X, USER_DATA_MAX_BYTES, DigitalOceanProvider, DropletLimitReached,
    SessionTokensUnsupported, key_fingerprint,
)
from app.remote import new_keypair
from fakes.digitalocean_api import (
    DROPLET_LIMIT_MESSAGE, SIZE_UNAVAILABLE_MESSAGE, USER_KEY, USER_KEY_NAME, FakeDigitalOceanApi, fingerprint,
)

DROPLETS = "/v2/droplets"
KEYS = "/v2/account/keys"
KEY = new_keypair().public_openssh


@pytest.fixture
def api() -> Iterator[FakeDigitalOceanApi]:
    fake = FakeDigitalOceanApi().start()
    yield fake
    fake.stop()


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def provider(api: FakeDigitalOceanApi, sleeps: list[float]) -> DigitalOceanProvider:
    return DigitalOceanProvider(api.token, api.base_url, sleep=sleeps.append)


def _spec(label: str = "maider-3f2a", **overrides: object) -> InstanceSpec:
    values: dict[str, object] = {
        "label": label, "region": "tor1", "plan": "gpu-4000adax1-20gb",
        "user_data": "#cloud-config\nwrite_files: []\n", "authorized_keys": (KEY,),
        "tags": (OWNER_TAG, "maider-session-3f2a"),
    }
    values.update(overrides)
    return InstanceSpec(**values)  # type: ignore[arg-type]


def _maiders_keys(api: FakeDigitalOceanApi) -> list[dict]:
    return [k for k in api.keys.values() if k["name"] != USER_KEY_NAME]


def test_is_a_provider(provider: DigitalOceanProvider) -> None:
    assert isinstance(provider, Provider)


def test_regions_are_those_with_gpu_sizes(provider: DigitalOceanProvider) -> None:
    regions = {r.id: r for r in provider.regions()}
    assert set(regions) == {"nyc2", "tor1", "atl1"}  # ams3 and fra1 have no GPU size
    assert regions["tor1"].label == "Toronto 1" and regions["tor1"].country == "ca"
    assert regions["nyc2"].country == "us" and all(r.has_metadata for r in regions.values())


def test_gpu_plans_carry_gpu_facts_and_hourly_prices(provider: DigitalOceanProvider) -> None:
    plans = {p.id: p for p in provider.gpu_plans()}
    assert "s-1vcpu-1gb" not in plans and "s-4vcpu-8gb" not in plans
    ada = plans["gpu-4000adax1-20gb"]
    assert ada.gpu == RTX4000_ADA and ada.gpus == 1 and ada.hourly_price == 0.76
    assert ada.memory_mb == 32768 and ada.vcpus == 8 and ada.regions == ("atl1", "tor1")
    assert plans["gpu-h100x1-80gb"].hourly_price == 3.39 and plans["gpu-h200x1-141gb"].vram_gb_per_gpu == 141.0
    eight = plans["gpu-h100x8-640gb"]
    assert eight.gpu == H100_80 and eight.gpus == 8 and eight.vram_gb_total == 640.0
    assert plans["gpu-6000adax1-48gb"].vram_gb_per_gpu == 48.0 and plans["gpu-l40sx1-48gb"].vram_gb_per_gpu == 48.0


def test_a_gpu_maider_has_no_facts_for_stays_unknown(provider: DigitalOceanProvider) -> None:
    amd = next(p for p in provider.gpu_plans() if p.id == "gpu-mi300x1-192gb")
    assert amd.gpu is None and amd.vram_gb_per_gpu == 0.0 and amd.gpus == 1  # never guessed from the slug


def test_gpu_plans_for_a_region_are_only_those_offered_there(provider: DigitalOceanProvider,
                                                             api: FakeDigitalOceanApi) -> None:
    assert {p.id for p in provider.gpu_plans("nyc2")} == {"gpu-h100x1-80gb", "gpu-h100x8-640gb"}
    next(s for s in api.sizes if s["slug"] == "gpu-h100x8-640gb")["available"] = False
    assert {p.id for p in provider.gpu_plans("nyc2")} == {"gpu-h100x1-80gb"}


def test_lists_follow_every_page(api: FakeDigitalOceanApi, provider: DigitalOceanProvider) -> None:
    for n in range(450):  # DigitalOcean answers at most 200 a page
        api.add_droplet(f"maider-old-{n}", tags=[OWNER_TAG])
    api.add_droplet("someone-elses", tags=["web"])
    owned = provider.list_owned()
    assert len(owned) == 450 and {i.label for i in owned} == {f"maider-old-{n}" for n in range(450)}
    pages = sorted(r.query["page"] for r in api.matching("GET", DROPLETS) if r.query.get("type") == "gpus")
    assert pages == ["1", "2", "3"]


def test_create_sends_plain_user_data_tags_image_and_the_registered_key(
        provider: DigitalOceanProvider, api: FakeDigitalOceanApi) -> None:
    instance = provider.create(_spec())
    body = api.create_bodies[int(instance.id)]
    key = next(k for k in api.keys.values() if k["name"] == "maider-3f2a")
    assert key["fingerprint"] == key_fingerprint(KEY) == fingerprint(KEY)
    assert body["ssh_keys"] == [key["id"]]
    assert body["name"] == "maider-3f2a" and body["region"] == "tor1" and body["size"] == "gpu-4000adax1-20gb"
    assert body["user_data"] == "#cloud-config\nwrite_files: []\n"  # DigitalOcean takes the text as it is
    assert body["tags"] == [OWNER_TAG, "maider-session-3f2a"] and body["monitoring"] is False
    assert body["image"] == GPU_IMAGE
    assert instance.status is InstanceStatus.PROVISIONING and instance.ssh_host is None
    assert instance.hourly_price == 0.76 and instance.plan == "gpu-4000adax1-20gb" and instance.region == "tor1"


def test_the_image_follows_the_gpu_count_unless_one_is_given(provider: DigitalOceanProvider,
                                                             api: FakeDigitalOceanApi) -> None:
    eight = provider.create(_spec("maider-eight", plan="gpu-h100x8-640gb"))
    own = provider.create(_spec("maider-own", authorized_keys=(new_keypair().public_openssh,),
                                image="ubuntu-24-04-x64"))
    assert api.create_bodies[int(eight.id)]["image"] == GPU_IMAGE_8X
    assert api.create_bodies[int(own.id)]["image"] == "ubuntu-24-04-x64"


def test_create_twice_registers_one_key_and_makes_one_droplet(provider: DigitalOceanProvider,
                                                              api: FakeDigitalOceanApi) -> None:
    first = provider.create(_spec())
    second = provider.create(_spec())
    assert first.id == second.id and len(api.droplets) == 1
    assert api.count("POST", DROPLETS) == 1 and api.count("POST", KEYS) == 1


def test_a_key_already_on_the_account_is_used_and_left_there(provider: DigitalOceanProvider,
                                                             api: FakeDigitalOceanApi) -> None:
    instance = provider.create(_spec(authorized_keys=(USER_KEY,)))
    assert api.count("POST", KEYS) == 0
    provider.delete(instance.id)
    assert [k["name"] for k in api.keys.values()] == [USER_KEY_NAME]  # not maider's to remove


def test_delete_removes_the_droplet_then_its_key_and_tolerates_a_gone_droplet(
        provider: DigitalOceanProvider, api: FakeDigitalOceanApi) -> None:
    instance = provider.create(_spec())
    provider.delete(instance.id)
    assert api.droplets == {} and _maiders_keys(api) == []
    provider.delete(instance.id)  # gone already: succeeds
    assert api.count("DELETE", f"{DROPLETS}/{instance.id}", status=204) == 1
    with pytest.raises(NotFound):
        provider.get(instance.id)


def test_a_key_that_cannot_be_removed_keeps_the_delete_pending(provider: DigitalOceanProvider,
                                                               api: FakeDigitalOceanApi) -> None:
    instance = provider.create(_spec())
    api.fail("DELETE", r"^/v2/account/keys/\d+$", 500, times=50)
    with pytest.raises(TransientError, match="SSH key"):  # the engine retries the delete before calling it done
        provider.delete(instance.id)
    assert api.droplets == {} and len(_maiders_keys(api)) == 1  # the Droplet, which bills, is gone at once
    api.clear_faults()
    provider.delete(instance.id)  # the retry removes the key
    assert _maiders_keys(api) == []


def test_a_502_after_the_create_makes_one_droplet_without_a_second_post(provider: DigitalOceanProvider,
                                                                         api: FakeDigitalOceanApi) -> None:
    api.fail("POST", f"^{DROPLETS}$", 502, after_effect=True)
    instance = provider.create(_spec())
    assert api.count("POST", DROPLETS) == 1 and list(api.droplets) == [int(instance.id)]


def test_a_5xx_before_the_create_is_retried_by_maider_alone(provider: DigitalOceanProvider,
                                                            api: FakeDigitalOceanApi, sleeps: list[float]) -> None:
    api.fail("POST", f"^{DROPLETS}$", 503)
    provider.create(_spec())
    # one refused POST, one that worked: pydo's own retry policy is off, so nothing else was sent
    assert api.count("POST", DROPLETS) == 2 and len(api.droplets) == 1 and len(sleeps) == 1


def test_a_create_that_timed_out_and_landed_late_still_makes_one_droplet(api: FakeDigitalOceanApi,
                                                                          sleeps: list[float]) -> None:
    provider = DigitalOceanProvider(api.token, api.base_url, sleep=sleeps.append, request_timeout_s=0.5)
    api.fail("POST", f"^{DROPLETS}$", None, after_effect=True, delay=1.5)
    provider.create(_spec())
    deadline = time.monotonic() + 5
    while api.count("POST", DROPLETS) == 0 and time.monotonic() < deadline:  # the late answer is logged when sent
        time.sleep(0.05)
    assert api.count("POST", DROPLETS) == 1 and len(api.droplets) == 1


def test_size_not_available_in_the_region_is_a_capacity_error_naming_other_regions(
        provider: DigitalOceanProvider, api: FakeDigitalOceanApi, sleeps: list[float]) -> None:
    with pytest.raises(CapacityError) as raised:
        provider.create(_spec(region="nyc2"))  # the RTX 4000 Ada is sold in tor1 and atl1 only
    assert SIZE_UNAVAILABLE_MESSAGE in str(raised.value) and "atl1, tor1" in str(raised.value)
    assert raised.value.region == "nyc2" and raised.value.plan == "gpu-4000adax1-20gb"
    assert api.count("POST", DROPLETS) == 1 and sleeps == []  # not retried
    assert _maiders_keys(api) == []  # the key registered for it went again


def test_the_droplet_limit_says_how_to_raise_it(provider: DigitalOceanProvider, api: FakeDigitalOceanApi) -> None:
    api.fail("POST", f"^{DROPLETS}$", 422, body={"id": "unprocessable_entity", "message": DROPLET_LIMIT_MESSAGE})
    with pytest.raises(DropletLimitReached) as raised:
        provider.create(_spec())
    assert isinstance(raised.value, InvalidRequest) and not isinstance(raised.value, CapacityError)
    assert "droplet_limit_increase" in str(raised.value) and DROPLET_LIMIT_MESSAGE in str(raised.value)


def test_an_invalid_size_is_an_invalid_request(provider: DigitalOceanProvider) -> None:
    with pytest.raises(InvalidRequest, match="invalid size"):
        provider.create(_spec(plan="gpu-nonesuch"))


def test_a_refused_token_says_how_to_fix_it_and_never_shows_the_token(api: FakeDigitalOceanApi) -> None:
    planted = "dop_v1_planted-token-7f3c9e1d"
    provider = DigitalOceanProvider(Secret(planted, "DIGITALOCEAN_TOKEN", "test"), api.base_url, sleep=lambda _s: None)
    with pytest.raises(AuthError) as raised:
        provider.gpu_plans()
    assert "cloud.digitalocean.com/account/api/tokens" in str(raised.value)
    assert planted not in str(raised.value) and planted not in repr(provider)


def test_a_forbidden_request_names_the_scopes(provider: DigitalOceanProvider, api: FakeDigitalOceanApi) -> None:
    api.fail("POST", f"^{KEYS}$", 403, body={"id": "forbidden", "message": "You are not authorized to perform "
                                                                          "this operation"})
    with pytest.raises(AuthError, match="ssh_key"):
        provider.create(_spec())
    assert api.droplets == {}


def test_no_token_fails_at_first_use_with_the_fix(api: FakeDigitalOceanApi) -> None:
    provider = DigitalOceanProvider(None, api.base_url)
    with pytest.raises(AuthError, match="DIGITALOCEAN_TOKEN"):
        provider.regions()


def test_plain_http_is_refused_beyond_this_machine() -> None:
    provider = DigitalOceanProvider("dop_v1_x", "http://api.example.com")
    with pytest.raises(InvalidRequest, match="https"):
        provider.regions()


def test_user_data_over_64_kib_is_refused_before_anything_is_sent(provider: DigitalOceanProvider,
                                                                   api: FakeDigitalOceanApi) -> None:
    with pytest.raises(InvalidRequest) as raised:
        provider.create(_spec(user_data="#cloud-config\n" + "x" * USER_DATA_MAX_BYTES))
    assert raised.value.field == "user_data" and str(USER_DATA_MAX_BYTES) in str(raised.value)
    assert api.count("POST", DROPLETS) == 0 and api.count("POST", KEYS) == 0


def test_a_key_not_in_openssh_format_is_refused(provider: DigitalOceanProvider, api: FakeDigitalOceanApi) -> None:
    with pytest.raises(InvalidRequest) as raised:
        provider.create(_spec(authorized_keys=("/home/me/.ssh/id_ed25519.pub",)))
    assert raised.value.field == "authorized_keys" and api.count("POST", KEYS) == 0


def test_get_reports_the_public_address_once_active(provider: DigitalOceanProvider, api: FakeDigitalOceanApi) -> None:
    api.ipv4 = "203.0.113.7"
    instance = provider.create(_spec())
    assert provider.get(instance.id).status is InstanceStatus.PROVISIONING
    active = provider.get(instance.id)
    assert active.status is InstanceStatus.RUNNING and active.ssh_host == "203.0.113.7"  # not the 10.x private one
    assert active.created_at is not None and active.hourly_price == 0.76


@pytest.mark.parametrize(("do_status", "expected"), [("new", InstanceStatus.PROVISIONING),
                                                     ("active", InstanceStatus.RUNNING),
                                                     ("off", InstanceStatus.STOPPED),
                                                     ("archive", InstanceStatus.OTHER)])
def test_droplet_statuses_map_to_maiders(provider: DigitalOceanProvider, api: FakeDigitalOceanApi, do_status: str,
                                         expected: InstanceStatus) -> None:
    droplet = api.add_droplet("maider-x", tags=[OWNER_TAG], status=do_status)
    assert provider.get(str(droplet["id"])).status is expected


def test_a_persistent_500_on_get_is_transient_never_not_found(provider: DigitalOceanProvider,
                                                              api: FakeDigitalOceanApi, sleeps: list[float]) -> None:
    droplet = api.add_droplet("maider-x", tags=[OWNER_TAG])
    api.fail("GET", rf"^{DROPLETS}/\d+$", 500, times=50)
    with pytest.raises(TransientError, match="after 5 attempts"):
        provider.get(str(droplet["id"]))
    assert len(sleeps) == 4


def test_a_429_waits_until_the_ratelimit_reset(provider: DigitalOceanProvider, api: FakeDigitalOceanApi,
                                               sleeps: list[float]) -> None:
    droplet = api.add_droplet("maider-x", tags=[OWNER_TAG])
    api.fail("GET", rf"^{DROPLETS}/\d+$", 429, ratelimit_reset=int(time.time()) + 5,
             body={"id": "too_many_requests", "message": "API Rate limit exceeded."})
    assert provider.get(str(droplet["id"])).id == str(droplet["id"])
    assert len(sleeps) == 1 and 3 <= sleeps[0] <= 5


def test_a_rate_limit_beyond_the_wait_budget_is_reported_with_its_hint(provider: DigitalOceanProvider,
                                                                       api: FakeDigitalOceanApi) -> None:
    droplet = api.add_droplet("maider-x", tags=[OWNER_TAG])
    api.fail("GET", rf"^{DROPLETS}/\d+$", 429, times=50, ratelimit_reset=int(time.time()) + 3600)
    with pytest.raises(RateLimited) as raised:
        provider.get(str(droplet["id"]))
    assert raised.value.retry_after is not None and raised.value.retry_after > 3000


def test_an_unreachable_api_is_a_transient_error(sleeps: list[float]) -> None:
    provider = DigitalOceanProvider("dop_v1_x", "http://127.0.0.1:9", sleep=sleeps.append)
    with pytest.raises(TransientError, match="could not reach"):
        provider.get("123")


def test_the_failsafe_gets_no_token_and_is_told_why(provider: DigitalOceanProvider) -> None:
    from datetime import datetime

    with pytest.raises(SessionTokensUnsupported) as raised:
        provider.mint_session_token("maider-3f2a-failsafe", datetime(2030, 1, 1))
    assert isinstance(raised.value, ProviderError) and not isinstance(raised.value, AuthError)
    assert "one Droplet" in str(raised.value)
    provider.revoke_session_token("anything")  # nothing to revoke: no error
    assert provider.deleted_at("123") is None


def test_the_token_never_reaches_the_log_and_the_sdk_does_not_flood_it(api: FakeDigitalOceanApi,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    provider = DigitalOceanProvider(Secret(api.token, "DIGITALOCEAN_TOKEN", "test"), api.base_url)
    with caplog.at_level(logging.DEBUG):
        provider.delete(provider.create(_spec()).id)
    assert api.token not in caplog.text
    assert not [r for r in caplog.records if r.name.startswith("azure") and r.levelno < logging.WARNING]
    assert "creating maider-3f2a" in caplog.text  # maider's own lines stay


def test_the_registry_builds_it_from_the_projects_secrets(api: FakeDigitalOceanApi, tmp_path) -> None:
    from app.config import load_settings
    from app.providers import get_provider

    workdir = tmp_path / "do-project"
    workdir.mkdir()
    (workdir / ".env").write_text("PROVIDER=digitalocean\nREGION=tor1\nTYPE=gpu-4000adax1-20gb\n")
    (workdir / ".env.secrets").write_text(f"DIGITALOCEAN_TOKEN={api.token}\n"
                                          f"MAIDER_DIGITALOCEAN_API_URL={api.base_url}/v2\n")
    provider = get_provider("digitalocean", load_settings(workdir, environ={}), tmp_path)
    assert isinstance(provider, DigitalOceanProvider) and api.token not in repr(provider)
    assert "gpu-4000adax1-20gb" in {p.id for p in provider.gpu_plans("tor1")}  # "/v2" on the URL is tolerated


def test_a_key_left_when_maider_restarted_after_its_droplet_went_is_released_by_label(
        provider: DigitalOceanProvider, api: FakeDigitalOceanApi) -> None:
    instance = provider.create(_spec())
    api.fail("DELETE", r"^/v2/account/keys/\d+$", 500, times=50)
    with pytest.raises(TransientError):
        provider.delete(instance.id)  # the Droplet went; its key did not
    api.clear_faults()
    restarted = DigitalOceanProvider(api.token, api.base_url, sleep=lambda _s: None)  # knows no labels
    restarted.delete(instance.id)  # gone: nothing to say which key was its
    assert len(_maiders_keys(api)) == 1
    restarted.release_label(instance.label)  # what the engine calls with the session's label
    assert _maiders_keys(api) == []
