"""What a real Linode answers on create and in its availability list, through the real linode_api4 SDK over HTTP.

Linode answers an impossible GPU plan/region, and an account not yet cleared for GPUs, with HTTP 403, the code it
also uses for a refused token; its availability list names some plans by internal names; its user data is ~16 KB.
"""
from __future__ import annotations

import base64
import gzip
import os
from collections.abc import Iterator

import pytest

from app.domain.cloud_init import USER_DATA_MAX_BYTES, render_user_data
from app.providers.base import AuthError, CapacityError, InstanceSpec, InvalidRequest
from app.providers.linode import GpuAccessRequired, LinodeProvider
from fakes.linode_api import NO_AVAILABILITY_REASON, VERIFICATION_REASON, FakeLinodeApi
from test_cloud_init import _inputs

INSTANCES = "/v4/linode/instances"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHk3b2n0tR3aLkEyJustATestKeyForMaider maider-session"


@pytest.fixture
def api() -> Iterator[FakeLinodeApi]:
    with FakeLinodeApi() as fake:
        yield fake


@pytest.fixture
def provider(api: FakeLinodeApi) -> LinodeProvider:
    return LinodeProvider(api.token, api.base_url, sleep=lambda _s: None)


def _spec(region: str = "us-ord", plan: str = "g2-gpu-rtx4000a1-s", user_data: str = "#cloud-config\n") -> InstanceSpec:
    return InstanceSpec(label="maider-b1", region=region, plan=plan, user_data=user_data, authorized_keys=(KEY,))


# B.1: a 403 is read before it is called a bad token

def test_no_availability_is_a_capacity_error_naming_regions_that_offer_the_plan(provider: LinodeProvider,
                                                                                api: FakeLinodeApi) -> None:
    with pytest.raises(CapacityError) as caught:
        provider.create(_spec(region="us-east"))  # the RTX 4000 Ada plans are not offered in Newark
    message = str(caught.value)
    assert api.count("POST", INSTANCES, 403) == 1 and not api.instances
    assert NO_AVAILABILITY_REASON in message  # Linode's own reason, always
    assert "regions that offer g2-gpu-rtx4000a1-s now: de-fra-2, fr-par, jp-osa, sg-sin-2, us-ord, us-sea" in message
    assert (caught.value.region, caught.value.plan) == ("us-east", "g2-gpu-rtx4000a1-s")
    assert "token" not in message


def test_a_plan_marked_unavailable_is_a_capacity_error_too(provider: LinodeProvider, api: FakeLinodeApi) -> None:
    for entry in api.availability:
        if entry["plan"] == "g2-gpu-rtx4000a2-s" and entry["region"] in ("us-ord", "fr-par"):
            entry["available"] = False
    with pytest.raises(CapacityError, match="regions that offer g2-gpu-rtx4000a2-s now: de-fra-2, jp-osa, sg-sin-2, "
                                            "us-sea$"):
        provider.create(_spec(plan="g2-gpu-rtx4000a2-s"))


def test_an_account_not_cleared_for_gpus_is_told_to_open_a_ticket(provider: LinodeProvider,
                                                                  api: FakeLinodeApi) -> None:
    api.gpu_access_verified = False
    with pytest.raises(GpuAccessRequired) as caught:
        provider.create(_spec())
    message = str(caught.value)
    assert VERIFICATION_REASON in message and "support ticket" in message and "GPU" in message
    assert isinstance(caught.value, InvalidRequest)  # not retried: only Linode's support can change it
    assert not isinstance(caught.value, AuthError) and api.count("POST", INSTANCES) == 1


def test_an_unexplained_403_with_a_working_token_is_not_called_a_bad_token(provider: LinodeProvider,
                                                                           api: FakeLinodeApi) -> None:
    api.fail("POST", "/v4/linode/instances$", 403, body={"errors": [{"reason": "Unauthorized"}]})
    with pytest.raises(InvalidRequest) as caught:
        provider.create(_spec())
    assert not isinstance(caught.value, AuthError)
    assert "Unauthorized" in str(caught.value) and "read/write" in str(caught.value)
    assert api.count("GET", "/v4/profile", 200) == 1  # the token was checked, and it works


def test_a_403_whose_profile_fails_too_is_a_bad_token(provider: LinodeProvider, api: FakeLinodeApi) -> None:
    api.fail("POST", "/v4/linode/instances$", 403, body={"errors": [{"reason": "Unauthorized"}]})
    api.fail("GET", "/v4/profile$", 403, body={"errors": [{"reason": "Unauthorized"}]})
    with pytest.raises(AuthError, match=r"Linode refused the token \(403\).*\(Linode: Unauthorized\)"):
        provider.create(_spec())


# B.2: availability names, both forms, any plan; a plan it does not mention is unknown, not "not offered"

def _rename_availability(api: FakeLinodeApi, rename) -> None:
    for entry in api.availability:
        entry["plan"] = rename(entry["plan"])


def test_internal_availability_names_are_read_for_any_plan(provider: LinodeProvider, api: FakeLinodeApi) -> None:
    # now the Ada plans too are listed by internal name ("gpu-rtx4000a1-s.1"), and one RTX 6000 plan by its type id
    _rename_availability(api, lambda plan: f"{plan[3:]}.1" if plan.startswith("g2-gpu-") else plan)
    for entry in api.availability:
        if entry["plan"] == "gpu-rtx6000-2.1":
            entry["plan"] = "g1-gpu-rtx6000-2"
    plans = {p.id: p for p in provider.gpu_plans()}
    assert plans["g2-gpu-rtx4000a1-s"].regions == ("de-fra-2", "fr-par", "jp-osa", "sg-sin-2", "us-ord", "us-sea")
    assert plans["g1-gpu-rtx6000-2"].regions == ("ap-south", "ap-west", "eu-central", "us-east", "us-southeast")
    in_us_ord = {p.id for p in provider.gpu_plans("us-ord")}
    assert "g2-gpu-rtx4000a4-m" in in_us_ord and "g1-gpu-rtx6000-1" not in in_us_ord


def test_a_plan_availability_does_not_mention_is_unknown_and_still_listed(provider: LinodeProvider,
                                                                         api: FakeLinodeApi) -> None:
    api.availability = [e for e in api.availability if not e["plan"].startswith("gpu-rtx6000")]
    in_us_ord = {p.id: p for p in provider.gpu_plans("us-ord")}
    assert in_us_ord["g1-gpu-rtx6000-1"].regions == ()  # unknown: not refused anywhere
    assert in_us_ord["g2-gpu-rtx4000a1-s"].regions  # the plans it does mention keep their regions
    assert "g2-gpu-rtx4000a1-s" not in {p.id for p in provider.gpu_plans("us-east")}


# B.3: the user data, gzipped then base64, within Linode's 16 KiB

def test_the_real_user_data_goes_gzipped_and_fits_linodes_limit(provider: LinodeProvider, api: FakeLinodeApi) -> None:
    user_data = render_user_data(_inputs())
    assert len(user_data.encode()) > USER_DATA_MAX_BYTES  # as plain text it would not fit
    provider.create(_spec(user_data=user_data))
    sent = api.matching("POST", INSTANCES)[0].json["metadata"]["user_data"]
    packed = base64.b64decode(sent)
    assert len(packed) <= USER_DATA_MAX_BYTES and len(sent) <= USER_DATA_MAX_BYTES
    assert gzip.decompress(packed).decode() == user_data
    recorded = next(iter(api.create_bodies.values()))
    assert recorded["user_data"] == user_data and recorded["user_data_bytes"] == len(packed)


def test_user_data_too_large_even_gzipped_is_refused_before_any_post(provider: LinodeProvider,
                                                                    api: FakeLinodeApi) -> None:
    noise = base64.b64encode(os.urandom(18_000)).decode()
    with pytest.raises(InvalidRequest) as caught:
        provider.create(_spec(user_data="#cloud-config\n# " + noise + "\n"))
    assert caught.value.field == "user_data"
    assert "over Linode's limit of 16,384 bytes" in str(caught.value)
    assert api.count("POST", INSTANCES) == 0 and not api.instances
