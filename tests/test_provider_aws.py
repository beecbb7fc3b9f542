"""AWS specifics behind the shared contract: the real boto3 client against moto in server mode (tests/worlds/aws.py).

GPU facts from GpuInfo, prices, the Ubuntu image from SSM, the per-session key pair and security group (made once,
gone with the instance), ClientToken, the vCPU-quota refusal and botocore never re-sending a request by itself.
"""
from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from app.errors import ConfigError
from app.providers import aws_catalog
from app.providers.aws import MAX_ATTEMPTS, ROOT_VOLUME_GB, AwsProvider
from app.providers.aws_errors import VcpuQuotaExceeded
from app.providers.base import (
    AuthError, CapacityError, FailsafeUnavailable, InstanceStatus, InvalidRequest, NotFound, ProviderError,
    TransientError,
)
from worlds.aws import ANSWERS, PLAN, REGION, AwsWorld, world as aws_world

STORM = 50


@pytest.fixture
def aws(tmp_path: Path) -> Iterator[AwsWorld]:
    with aws_world(tmp_path) as opened:
        yield opened


def _destroy(aws: AwsWorld, instance_id: str) -> None:
    for _ in range(10):
        aws.provider.delete(instance_id)
        try:
            aws.provider.get(instance_id)
        except NotFound:
            return
    raise AssertionError(f"{instance_id} never confirmed gone")


def test_plans_carry_the_gpu_facts_ec2_reports(aws: AwsWorld) -> None:
    plans = {p.id: p for p in aws.provider.gpu_plans(REGION)}
    g5 = plans["g5.xlarge"]
    assert (g5.gpus, g5.gpu.key, g5.vram_gb_per_gpu, g5.vcpus, g5.memory_mb) == (1, "a10g", 24.0, 4, 16384)
    assert g5.regions == (REGION,) and g5.hourly_price == 1.006
    assert plans["g6.xlarge"].gpu.key == "l4" and plans["g6e.xlarge"].gpu.key == "l40s"
    # AWS names both A100s "A100": the reported memory tells p4d's 40 GB from p4de's 80 GB
    assert (plans["p4d.24xlarge"].gpus, plans["p4d.24xlarge"].gpu.key) == (8, "a100-40")
    assert plans["p4de.24xlarge"].gpu.key == "a100-80"
    assert not [p for p in plans if p.startswith("g5g.")], "Arm hosts cannot run maider's amd64 image"
    assert all(p.gpus >= 1 for p in plans.values())


def test_prices_come_from_the_dated_table_or_the_price_cache(aws: AwsWorld, tmp_path: Path) -> None:
    unpriced = {p.id: p for p in aws.provider.gpu_plans("eu-west-1")}
    assert unpriced["g5.xlarge"].hourly_price == 0.0, "no figure for the region: unknown, never a guess"
    cache = tmp_path / "aws-prices.json"
    cache.write_text(json.dumps({"fetched_at": "2026-12-01T00:00:00+00:00",
                                 "prices": {"eu-west-1": {"g5.xlarge": 1.123}}}))
    cached = AwsProvider(REGION, endpoint_url=aws.endpoint, session=aws.provider._session, price_cache=cache)
    assert {p.id: p for p in cached.gpu_plans("eu-west-1")}["g5.xlarge"].hourly_price == 1.123


def test_a_pricing_api_record_reads_as_its_hourly_price() -> None:
    """The shape of a GetProducts PriceList entry (moto has no Pricing API, so refresh_prices is checked this far)."""
    record = json.dumps({
        "product": {"attributes": {"instanceType": "g5.xlarge", "regionCode": "us-east-1", "operatingSystem": "Linux"}},
        "terms": {"OnDemand": {"ABC.JRTCKXETXF": {"priceDimensions": {"ABC.JRTCKXETXF.6YS6EN2CT7": {
            "unit": "Hrs", "pricePerUnit": {"USD": "1.0060000000"}, "description": "$1.006 per On Demand Linux"}}}}},
    })
    assert aws_catalog.on_demand_usd(record) == 1.006
    assert aws_catalog.on_demand_usd(json.dumps({"terms": {}})) is None
    fields = {f["Field"]: f["Value"] for f in aws_catalog.pricing_filters("us-west-2", "g6.xlarge")}
    assert fields["regionCode"] == "us-west-2" and fields["capacitystatus"] == "Used"


def test_a_failed_price_refresh_keeps_the_table(aws: AwsWorld) -> None:
    with pytest.raises(ProviderError):
        aws.provider.refresh_prices(instance_types=["g5.xlarge"])  # moto does not speak the Pricing API
    assert {p.id: p for p in aws.provider.gpu_plans(REGION)}["g5.xlarge"].hourly_price == 1.006


def test_the_vm_runs_canonicals_ubuntu_from_ssm_with_a_large_gp3_root(aws: AwsWorld) -> None:
    instance = aws.provider.create(aws.spec("maider-aws-image"))
    raw = aws.ec2.describe_instances(InstanceIds=[instance.id])["Reservations"][0]["Instances"][0]
    assert raw["ImageId"] == aws.image_id
    sent = aws.layer.run_requests[-1]
    assert sent["BlockDeviceMapping.1.DeviceName"] == ["/dev/sda1"]
    assert sent["BlockDeviceMapping.1.Ebs.VolumeType"] == ["gp3"]
    assert int(sent["BlockDeviceMapping.1.Ebs.VolumeSize"][0]) == ROOT_VOLUME_GB >= 100
    assert sent["InstanceInitiatedShutdownBehavior"] == ["terminate"], "a poweroff on the VM must end the billing"


def test_one_key_pair_and_one_ssh_only_security_group_per_label_gone_with_the_instance(aws: AwsWorld) -> None:
    spec = aws.spec("maider-aws-session")
    first = aws.provider.create(spec)
    assert aws.provider.create(spec).id == first.id
    assert sorted(aws.leftovers()) == ["key pair maider-aws-session", "security group maider-aws-session"]
    group = aws.ec2.describe_security_groups(GroupNames=[spec.label])["SecurityGroups"][0]
    assert [(p["IpProtocol"], p["FromPort"], p["ToPort"]) for p in group["IpPermissions"]] == [("tcp", 22, 22)]
    raw = aws.ec2.describe_instances(InstanceIds=[first.id])["Reservations"][0]["Instances"][0]
    assert raw["KeyName"] == spec.label
    assert [g["GroupId"] for g in raw["SecurityGroups"]] == [group["GroupId"]]
    _destroy(aws, first.id)
    assert aws.leftovers() == [] and aws.live() == []


@pytest.mark.parametrize("fault", ["capacity", "bad_request", "vcpu_limit", "server_error"])
def test_a_refused_create_leaves_no_key_pair_or_security_group(aws: AwsWorld, fault: str) -> None:
    aws.layer.fail(["RunInstances"], ANSWERS[fault], times=STORM)
    with pytest.raises(ProviderError):
        aws.provider.create(aws.spec(f"maider-aws-{fault}"))
    assert aws.live() == [] and aws.leftovers() == []


def test_run_instances_carries_the_label_as_client_token(aws: AwsWorld) -> None:
    aws.provider.create(aws.spec("maider-aws-token"))
    assert aws.layer.run_requests[-1]["ClientToken"] == ["maider-aws-token"]
    long_label = "maider-" + "x" * 70  # over EC2's 64 characters: a digest of it, still one per label
    aws.provider.create(aws.spec(long_label))
    token = aws.layer.run_requests[-1]["ClientToken"][0]
    assert len(token) == 64 and token != long_label[:64]


def test_a_vcpu_quota_refusal_says_how_to_ask_for_more(aws: AwsWorld) -> None:
    aws.layer.fail(["RunInstances"], ANSWERS["vcpu_limit"])
    with pytest.raises(VcpuQuotaExceeded) as raised:
        aws.provider.create(aws.spec("maider-aws-quota"))
    message = str(raised.value)
    assert isinstance(raised.value, InvalidRequest) and not raised.value.retryable
    assert "0 vCPUs for G and P instances" in message and "Running On-Demand G and VT instances" in message
    assert "Service Quotas" in message and REGION in message


@pytest.mark.parametrize("fault", ["server_error", "rate_limit"])
def test_botocore_never_sends_run_instances_again_by_itself(aws: AwsWorld, fault: str) -> None:
    aws.layer.fail(["RunInstances"], ANSWERS[fault], times=STORM)
    with pytest.raises(TransientError if fault == "server_error" else ProviderError):
        aws.provider.create(aws.spec(f"maider-aws-once-{fault}"))
    assert aws.layer.seen.count("RunInstances") == MAX_ATTEMPTS, "one request per maider attempt, no SDK re-sends"
    assert aws.live() == []


def test_a_capacity_answer_is_a_capacity_error_naming_the_plan(aws: AwsWorld) -> None:
    aws.layer.fail(["RunInstances"], ANSWERS["capacity"])
    with pytest.raises(CapacityError) as raised:
        aws.provider.create(aws.spec("maider-aws-capacity"))
    assert raised.value.plan == PLAN and raised.value.region == REGION


def test_a_security_group_still_in_use_means_not_gone_yet(aws: AwsWorld) -> None:
    instance = aws.provider.create(aws.spec("maider-aws-eni"))
    aws.layer.fail(["DeleteSecurityGroup"], ANSWERS["dependency"], times=2)  # the network interface is detaching
    aws.provider.delete(instance.id)
    assert aws.provider.get(instance.id).status == InstanceStatus.DELETING
    assert aws.leftovers() == ["security group maider-aws-eni"]
    with pytest.raises(NotFound):  # detached now: the group goes, and with it the last of the session
        aws.provider.get(instance.id)
    assert aws.leftovers() == [] and aws.deletes() == 1
    aws.provider.delete(instance.id)


def test_a_vm_that_terminated_outside_maider_reads_as_gone_and_leaves_nothing(aws: AwsWorld) -> None:
    """How the engine notices a vanished VM: it is no longer listed, and get says NotFound."""
    instance = aws.provider.create(aws.spec("maider-aws-poweroff"))
    aws.ec2.terminate_instances(InstanceIds=[instance.id])  # what a poweroff on the VM leads to
    assert aws.provider.list_owned() == []
    with pytest.raises(NotFound):
        aws.provider.get(instance.id)
    assert aws.leftovers() == []
    aws.provider.delete(instance.id)  # the engine's teardown after that: nothing left to do, no error


def test_refused_credentials_say_how_to_configure_them(aws: AwsWorld) -> None:
    instance = aws.provider.create(aws.spec("maider-aws-auth"))
    aws.fail_next("get", "auth")
    with pytest.raises(AuthError) as raised:
        aws.provider.get(instance.id)
    assert "aws configure" in str(raised.value) and "AWS_PROFILE" in str(raised.value)
    aws.layer.fail(["DescribeInstances"], ANSWERS["unauthorized"])
    with pytest.raises(AuthError) as raised:
        aws.provider.get(instance.id)
    assert "ec2:DescribeInstances" in str(raised.value)


def test_no_credentials_at_all_is_an_auth_error_saying_where_they_come_from(aws: AwsWorld,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance-metadata probe from this laptop
    bare = AwsProvider(REGION, endpoint_url=aws.endpoint, session=boto3.Session(region_name=REGION))
    with pytest.raises(AuthError) as raised:
        bare.list_owned()
    assert "no AWS credentials" in str(raised.value) and "aws configure" in str(raised.value)


def test_the_region_defaults_to_boto3s_and_is_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-west-2")
    assert AwsProvider(None).region == "us-west-2"
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    with pytest.raises(ConfigError) as raised:
        AwsProvider(None)
    assert raised.value.variable == "REGION" and "us-east-1" in str(raised.value)
    monkeypatch.setenv("AWS_PROFILE", "no-such-profile")
    with pytest.raises(ConfigError) as raised:
        AwsProvider(None)
    assert raised.value.variable == "AWS_PROFILE" and "no-such-profile" in str(raised.value)


def test_a_spec_for_another_region_is_refused_before_anything_is_made(aws: AwsWorld) -> None:
    spec = aws.spec("maider-aws-elsewhere")
    with pytest.raises(InvalidRequest) as raised:
        aws.provider.create(type(spec)(**{**spec.__dict__, "region": "eu-west-1"}))
    assert raised.value.field == "region" and aws.live() == [] and aws.leftovers() == []


def test_the_user_data_reaches_the_vm_intact_and_oversized_user_data_creates_nothing(aws: AwsWorld) -> None:
    received: list[str] = []

    def start_vm(user_data: str) -> tuple[str, int]:
        received.append(user_data)
        return "127.0.0.1", 2222

    aws.boot_vms(start_vm)
    spec = aws.spec("maider-aws-userdata")
    instance = aws.provider.create(spec)
    assert received == [spec.user_data]
    assert (instance.ssh_host, instance.ssh_port) == ("127.0.0.1", 2222)
    huge = aws.spec("maider-aws-huge")
    with pytest.raises(InvalidRequest) as raised:
        aws.provider.create(type(huge)(**{**huge.__dict__, "user_data": secrets.token_hex(40_000)}))
    assert raised.value.field == "user_data" and "EC2" in str(raised.value)
    assert aws.creates() == 1
    assert sorted(aws.leftovers()) == ["key pair maider-aws-userdata", "security group maider-aws-userdata"]


def test_no_failsafe_token_on_aws_and_the_reason_is_given(aws: AwsWorld) -> None:
    from datetime import datetime

    with pytest.raises(FailsafeUnavailable) as raised:
        aws.provider.mint_session_token("maider-aws-failsafe", datetime(2030, 1, 1))
    assert "not available on AWS" in str(raised.value)
    aws.provider.revoke_session_token("anything")
    assert aws.provider.deleted_at("i-0123456789abcdef0") is None


def test_regions_say_where_gpus_are_offered(aws: AwsWorld) -> None:
    regions = {r.id: r for r in aws.provider.regions()}
    home = regions[REGION]
    assert (home.label, home.country, home.has_gpus, home.has_metadata) == ("US East (N. Virginia)", "us", True, True)


def test_a_launch_on_aws_reaches_ready_and_records_why_there_is_no_failsafe(app, aws: AwsWorld) -> None:
    from app.extensions import db
    from app.models import Session, SessionState
    from app.simulator.vm import VmBehaviour, vm_from_user_data
    from engine_helpers import FAST_TIMINGS, drive, in_state, launch, write_project

    vms: list = []

    def start_vm(user_data: str) -> tuple[str, int]:
        vm = vm_from_user_data(user_data, VmBehaviour.fast())
        vm.start()
        vms.append(vm)
        return "127.0.0.1", vm.ssh_port

    aws.boot_vms(start_vm)
    app.config["MAIDER_PROVIDER_FACTORY"] = lambda name, settings, home: aws.provider
    app.config["MAIDER_TIMINGS"] = FAST_TIMINGS
    workdir = Path(app.config["MAIDER_WORKDIR"])
    write_project(workdir, *aws.project_env())
    try:
        launch(app, "aws-no-failsafe", workdir)
        ready = drive(app, "aws-no-failsafe", in_state(SessionState.READY, SessionState.FAILED), timeout=60)
        assert ready.status == "ready", ready.status_message
        with app.app_context():
            warnings = [e.message for e in db.session.get(Session, ready.id).events if e.kind == "warning"]
        assert any("failsafe not armed" in w and "not available on AWS" in w for w in warnings), warnings
        assert ready.hourly_price == 1.006
    finally:
        from app.engine.runtime import runtime

        runtime(app).close()
        for vm in vms:
            vm.stop()


def test_the_registry_builds_a_provider_from_boto3s_own_chain(aws: AwsWorld, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Credentials and endpoint from the environment boto3 reads itself; maider's settings give only the region."""
    from app.config import load_settings
    from app.providers import get_provider

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing-env")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing-env-secret")
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws.endpoint)
    workdir = tmp_path / "registry-project"
    workdir.mkdir()
    (workdir / ".env").write_text(aws.project_env()[0])
    provider = get_provider("aws", load_settings(workdir), tmp_path / "home")
    assert provider.name == "aws" and provider.region == REGION
    assert PLAN in {p.id for p in provider.gpu_plans(REGION)}
    instance = provider.create(aws.spec("maider-aws-registry"))
    assert aws.live() == [instance.id] and "testing-env-secret" not in repr(provider)


def test_an_instance_aws_does_not_list_yet_is_not_believed_gone(aws: AwsWorld) -> None:
    # EC2 is eventually consistent: right after RunInstances, DescribeInstances may say InvalidInstanceID.NotFound
    instance = aws.provider.create(aws.spec("maider-aws-lag"))
    lag = (400, "InvalidInstanceID.NotFound", f"The instance ID '{instance.id}' does not exist")
    aws.layer.fail(["DescribeInstances"], lag, times=50)
    with pytest.raises(TransientError, match="does not list"):
        aws.provider.get(instance.id)  # a destroy clicked now must not call the VM deleted while it bills
    with pytest.raises(TransientError):
        aws.provider.delete(instance.id)
    aws.layer.clear()
    assert aws.provider.get(instance.id).id == instance.id and instance.id in aws.live()


def test_each_session_is_asked_about_in_its_own_region(app) -> None:
    """A project's REGION may change after a launch; the session's VM is still looked for where it was made."""
    from app.engine.runtime import runtime
    from app.models import Session
    from engine_helpers import write_project

    asked: list[str | None] = []
    app.config["MAIDER_PROVIDER_FACTORY"] = lambda name, settings, home: asked.append(settings.region) or object()
    workdir = Path(app.config["MAIDER_WORKDIR"])
    write_project(workdir, "PROVIDER=aws\nREGION=us-west-2\n")
    session = Session(uid="u" * 32, name="old", provider="aws", label="maider-old", region="us-east-1",
                      workdir=str(workdir))
    runtime(app).provider_for(session)
    runtime(app).provider_for(session)  # cached: asked once
    runtime(app).provider("aws", str(workdir))  # the project's own region, for new launches and orphan scans
    assert asked == ["us-east-1", "us-west-2"]


def test_a_region_of_another_cloud_is_not_taken_for_an_aws_one(tmp_path: Path, monkeypatch) -> None:
    """PROVIDER=linode with REGION=us-ord and AWS credentials: listing AWS plans asks AWS's default region, not a
    non-existent ec2.us-ord endpoint."""
    from app.config import load_settings
    from app.providers import get_provider
    from engine_helpers import write_project

    write_project(tmp_path, "PROVIDER=linode\nREGION=us-ord\n")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    assert get_provider("aws", load_settings(tmp_path), tmp_path).region == "eu-west-1"
    write_project(tmp_path, "PROVIDER=aws\nREGION=us-west-2\n")
    assert get_provider("aws", load_settings(tmp_path), tmp_path).region == "us-west-2"


def test_a_destroy_after_a_crash_before_the_launch_leaves_no_key_pair_or_group(app, aws: AwsWorld) -> None:
    """maider stopped between making the session's key pair and group and RunInstances: no instance id, no
    instance; destroying the session still deletes both."""
    from app.extensions import db
    from app.models import Session, SessionState
    from engine_helpers import FAST_TIMINGS, drive, in_state, write_project

    spec = aws.spec("maider-crashed-early")
    aws.provider._resources.ensure_key_pair(spec.label, spec.authorized_keys[0])
    aws.provider._resources.ensure_security_group(spec.label)
    assert len(aws.leftovers()) == 2
    app.config["MAIDER_PROVIDER_FACTORY"] = lambda name, settings, home: aws.provider
    app.config["MAIDER_TIMINGS"] = FAST_TIMINGS
    workdir = Path(app.config["MAIDER_WORKDIR"])
    write_project(workdir, *aws.project_env())
    with app.app_context():
        db.session.add(Session(uid="c" * 32, name="crashed", provider="aws", label=spec.label, region="us-east-1",
                               plan="g5.xlarge", model_id="m/m", served_name="coder", workdir=str(workdir),
                               status=SessionState.DESTROYING.value, status_reason="user_requested"))
        db.session.commit()
    gone = drive(app, "crashed", in_state(SessionState.DESTROYED, SessionState.FAILED), timeout=30)
    assert gone.status == "destroyed" and aws.leftovers() == [] and aws.live() == []
