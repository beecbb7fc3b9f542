"""AWS's world: the real ``boto3`` client against moto in server mode (a kept library that speaks EC2 and SSM).

moto answers every request; a small WSGI layer in front of it only adds what AWS does that moto cannot be asked to:
scripted refusals (EC2's XML error bodies with AWS's codes and HTTP statuses), a 500 *after* a real RunInstances, and
booting a simulated VM from the user data of a RunInstances. The world observes the account through its own boto3
client, whose requests (signed with ``OBSERVER_KEY``) are never refused.
"""
from __future__ import annotations

import base64
import gzip
import io
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs
from xml.sax.saxutils import escape

import boto3
import requests
from werkzeug.serving import make_server

from app.providers.aws import UBUNTU_AMI_PARAMETER, AwsProvider
from app.providers.base import InstanceSpec
from app.remote import new_keypair

REGION = "us-east-1"
PLAN = "g5.xlarge"
ACCESS_KEY = "testing-maider"  # moto takes any key; these are not secrets
SECRET_KEY = "testing-maider-secret"
OBSERVER_KEY = "testing-observer"
_ACTIONS = {"create": "RunInstances", "get": "DescribeInstances", "delete": "TerminateInstances"}
# fault -> (HTTP status, EC2 error code, message): the answers AWS gives, status and code as AWS sends them
ANSWERS: dict[str, tuple[int, str, str]] = {
    "auth": (401, "AuthFailure", "AWS was not able to validate the provided access credentials"),
    "unauthorized": (403, "UnauthorizedOperation", "You are not authorized to perform this operation."),
    "capacity": (500, "InsufficientInstanceCapacity", "We currently do not have sufficient g5.xlarge capacity in the "
                 "Availability Zone you requested (us-east-1a)."),
    "rate_limit": (503, "RequestLimitExceeded", "Request limit exceeded."),
    "bad_request": (400, "InvalidParameterValue", "Value (g5.xlarge) for parameter instanceType is invalid."),
    "server_error": (500, "InternalError", "An internal error has occurred"),
    "vcpu_limit": (400, "VcpuLimitExceeded", "You have requested more vCPU capacity than your current vCPU limit of 0 "
                   "allows for the instance bucket that the specified instance type belongs to."),
    "dependency": (400, "DependencyViolation", "resource sg-0123 has a dependent object"),
}


@dataclass
class _Fault:
    actions: frozenset[str] | None  # None: every EC2 action
    answer: tuple[int, str, str]
    remaining: int
    after_effect: bool = False


class FaultLayer:
    """WSGI middleware in front of moto: scripted EC2 refusals and a hook on RunInstances; everything else passes."""

    def __init__(self, app: Callable[..., Any]) -> None:
        self.app = app
        self.faults: list[_Fault] = []
        self.seen: list[str] = []  # EC2 actions the provider sent (the observer's are not recorded)
        self.run_requests: list[dict[str, list[str]]] = []  # the provider's RunInstances parameters, as sent
        self.on_run_instances: Callable[[str], None] | None = None
        self._lock = threading.Lock()

    def fail(self, actions: Iterable[str] | None, answer: tuple[int, str, str], times: int = 1,
             after_effect: bool = False) -> None:
        with self._lock:
            self.faults.append(_Fault(frozenset(actions) if actions else None, answer, times, after_effect))

    def clear(self) -> None:
        with self._lock:
            self.faults.clear()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        environ["wsgi.input"] = io.BytesIO(body)
        authorization = environ.get("HTTP_AUTHORIZATION", "")
        if OBSERVER_KEY in authorization or "/ec2/aws4_request" not in authorization:
            return self.app(environ, start_response)
        form = parse_qs(body.decode(errors="replace"))
        action = (form.get("Action") or [""])[0]
        with self._lock:
            self.seen.append(action)
            if action == "RunInstances":
                self.run_requests.append(form)
            fault = self._take(action)
        if fault is not None and not fault.after_effect:
            return self._error(fault.answer, start_response)
        if action == "RunInstances" and self.on_run_instances is not None:
            self.on_run_instances(_user_data(form))
        if fault is not None:  # the effect happens, then the answer is lost
            answer = self.app(environ, lambda *_args, **_kwargs: None)
            b"".join(answer)
            return self._error(fault.answer, start_response)
        return self.app(environ, start_response)

    def _take(self, action: str) -> _Fault | None:
        for fault in self.faults:
            if fault.remaining > 0 and (fault.actions is None or action in fault.actions):
                fault.remaining -= 1
                return fault
        return None

    @staticmethod
    def _error(answer: tuple[int, str, str], start_response: Callable[..., Any]) -> list[bytes]:
        status, code, message = answer
        payload = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>{code}</Code>'
                   f"<Message>{escape(message)}</Message></Error></Errors><RequestID>{uuid.uuid4()}</RequestID>"
                   "</Response>").encode()
        start_response(f"{status} {'Error'}", [("Content-Type", "text/xml;charset=UTF-8"),
                                               ("Content-Length", str(len(payload)))])
        return [payload]


def _user_data(form: dict[str, list[str]]) -> str:
    """The cloud-config text maider sent: RunInstances carries it base64-encoded, and maider gzips it first."""
    raw = base64.b64decode((form.get("UserData") or [""])[0])
    return (gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw).decode()


class AwsWorld:
    name = "aws"
    faults = frozenset({"auth", "capacity", "rate_limit", "bad_request", "server_error"})

    def __init__(self, endpoint: str, layer: FaultLayer) -> None:
        self.endpoint = endpoint
        self.layer = layer
        session = boto3.Session(aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY, region_name=REGION)
        self.provider = AwsProvider(REGION, endpoint_url=endpoint, session=session, sleep=lambda _s: None)
        observer = boto3.Session(aws_access_key_id=OBSERVER_KEY, aws_secret_access_key=SECRET_KEY,
                                 region_name=REGION)
        self.ec2 = observer.client("ec2", endpoint_url=endpoint)
        self._key = new_keypair().public_openssh
        self.image_id = self._publish_ubuntu_image()

    def spec(self, label: str) -> InstanceSpec:
        return InstanceSpec(label=label, region=REGION, plan=PLAN, user_data="#cloud-config\n{}\n",
                            authorized_keys=(self._key,))

    def fail_next(self, operation: str, fault: str, times: int = 1) -> None:
        # refused credentials are refused for every action, as AWS does
        self.layer.fail(None if fault == "auth" else [_ACTIONS[operation]], ANSWERS[fault], times)

    def heal(self) -> None:
        self.layer.clear()

    def fail_after_create(self) -> None:
        self.layer.fail(["RunInstances"], ANSWERS["server_error"], after_effect=True)

    def _instances(self, *filters: dict[str, Any]) -> list[dict[str, Any]]:
        answer = self.ec2.describe_instances(Filters=list(filters)) if filters else self.ec2.describe_instances()
        return [i for r in answer["Reservations"] for i in r["Instances"]]

    def creates(self) -> int:
        return len(self._instances({"Name": "tag-key", "Values": ["maider"]}))

    def deletes(self) -> int:
        return len(self._instances({"Name": "tag-key", "Values": ["maider"]},
                                   {"Name": "instance-state-name", "Values": ["shutting-down", "terminated"]}))

    def live(self) -> list[str]:
        return [i["InstanceId"] for i in self._instances() if i["State"]["Name"] != "terminated"]

    def add_foreign(self, label: str) -> str:
        answer = self.ec2.run_instances(ImageId=self.image_id, InstanceType="t3.micro", MinCount=1, MaxCount=1,
                                        TagSpecifications=[{"ResourceType": "instance", "Tags": [
                                            {"Key": "Name", "Value": label}, {"Key": "team", "Value": "web"}]}])
        return answer["Instances"][0]["InstanceId"]

    def leftovers(self) -> list[str]:
        owned = [{"Name": "tag-key", "Values": ["maider"]}]
        keys = [f"key pair {k['KeyName']}" for k in self.ec2.describe_key_pairs(Filters=owned)["KeyPairs"]]
        groups = [f"security group {g['GroupName']}"
                  for g in self.ec2.describe_security_groups(Filters=owned)["SecurityGroups"]]
        return keys + groups

    def boot_vms(self, start_vm: Callable[[str], tuple[str, int]]) -> None:
        def on_run_instances(user_data: str) -> None:
            host, port = start_vm(user_data)
            self.provider.ssh_host_override = host
            self.provider.ssh_port = port
        self.layer.on_run_instances = on_run_instances

    def project_env(self) -> tuple[str, str]:
        # The credentials and endpoint reach the provider through the world's boto3 session (the journey's engine
        # uses this world's provider object), never through maider's settings.
        return (f"PROVIDER=aws\nREGION={REGION}\nTYPE={PLAN}\nMODEL_ID=Qwen/Qwen2.5-Coder-7B-Instruct-AWQ\n"
                "VLLM_MAX_MODEL_LEN=8192\n", "")

    def _publish_ubuntu_image(self) -> str:
        """An Ubuntu 24.04 image and Canonical's public SSM parameter naming it, as AWS has them.

        moto ships neither, and its PutParameter refuses ``/aws/`` names as AWS does, so the parameter is placed in
        moto's SSM backend directly; the provider still reads it through boto3's GetParameter.
        """
        from moto.core import DEFAULT_ACCOUNT_ID
        from moto.ssm.models import Parameter, ssm_backends

        image_id = self.ec2.register_image(Name="ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server",
                                           Architecture="x86_64", RootDeviceName="/dev/sda1")["ImageId"]
        backend = ssm_backends[DEFAULT_ACCOUNT_ID][REGION]
        backend._parameters[UBUNTU_AMI_PARAMETER].append(Parameter(
            account_id=DEFAULT_ACCOUNT_ID, name=UBUNTU_AMI_PARAMETER, value=image_id, parameter_type="String",
            description=None, allowed_pattern=None, keyid=None, last_modified_date=datetime.now(timezone.utc),
            version=1, data_type="aws:ec2:image"))
        return image_id


@contextmanager
def world(tmp_path: Path) -> Iterator[AwsWorld]:
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app

    class QuietHandler(MotoRequestHandler):
        def log_request(self, *_args: Any, **_kwargs: Any) -> None:
            """One line per request would bury a failing test's output."""

    layer = FaultLayer(DomainDispatcherApplication(create_backend_app))
    server = make_server("127.0.0.1", 0, layer, threaded=True, request_handler=QuietHandler)
    thread = threading.Thread(target=server.serve_forever, name="moto-server", daemon=True)
    thread.start()
    endpoint = f"http://127.0.0.1:{server.server_port}"
    try:
        requests.post(f"{endpoint}/moto-api/reset", timeout=120)  # moto's state is per process: start empty
        yield AwsWorld(endpoint, layer)
    finally:
        try:  # only frees memory (the next world resets anyway): slow under load, never a test error
            requests.post(f"{endpoint}/moto-api/reset", timeout=120)
        except requests.RequestException:
            pass
        server.shutdown()
        thread.join(timeout=10)
