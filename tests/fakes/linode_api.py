"""A fake of the Linode API v4 endpoints maider uses, served over real HTTP for the real ``linode_api4`` client.

Shapes follow Linode's: lists are ``{"data": [...], "page", "pages", "results"}``, errors are
``{"errors": [{"field"?, "reason"}]}``, ``X-Filter`` is honoured for equality, ``+contains``, ``+and``/``+or``.
Faults are scripted with ``fail()``; every request is recorded in ``requests`` so tests can assert what was sent.
Personal access tokens minted through ``POST /profile/tokens`` authenticate too, within their scopes and expiry (a
VM's failsafe deletes its own instance with one); ``deletions`` says who deleted what, ``GET /account/events`` when.
"""
from __future__ import annotations

import base64
import gzip
import json
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email.utils import formatdate
from typing import Any

from flask import Flask, Response, g, request

from fakes.serving import LoopbackServer, QuietHandler

DEFAULT_TOKEN = "fake-linode-token-0123456789abcdef"
# Linode's own words (HTTP 403) for a GPU plan a region cannot give now, and for an account not cleared for GPUs.
NO_AVAILABILITY_REASON = "there is no availability for the selected plan in the selected region"
VERIFICATION_REASON = ("Additional verification is required to add this service. Please open a Support ticket "
                       "to request access.")
STATUS_PROGRESSION = ("provisioning", "booting", "running")
MAX_PAGE_SIZE = 500

_ADA_REGIONS = ("us-ord", "de-fra-2", "jp-osa", "fr-par", "us-sea", "sg-sin-2")
_TURING_REGIONS = ("us-east", "us-southeast", "eu-central", "ap-west", "ap-south")
_GPU_CAPS = ["Linodes", "GPU Linodes", "Metadata", "Cloud Firewall"]

# (id, label, country, capabilities)
SEED_REGIONS: tuple[tuple[str, str, str, list[str]], ...] = (
    ("us-ord", "Chicago, IL", "us", _GPU_CAPS),
    ("us-sea", "Seattle, WA", "us", _GPU_CAPS),
    ("us-east", "Newark, NJ", "us", _GPU_CAPS),
    ("us-southeast", "Atlanta, GA", "us", _GPU_CAPS),
    ("de-fra-2", "Frankfurt 2, DE", "de", _GPU_CAPS),
    ("eu-central", "Frankfurt, DE", "de", _GPU_CAPS),
    ("fr-par", "Paris, FR", "fr", _GPU_CAPS),
    ("jp-osa", "Osaka, JP", "jp", _GPU_CAPS),
    ("sg-sin-2", "Singapore 2, SG", "sg", _GPU_CAPS),
    ("ap-west", "Mumbai, IN", "in", ["Linodes", "GPU Linodes"]),  # no Metadata: cloud-init user data unsupported
    ("ap-south", "Singapore, SG", "sg", _GPU_CAPS),
    ("us-central", "Dallas, TX", "us", ["Linodes", "Metadata", "Cloud Firewall"]),
    ("gb-lon", "London 2, UK", "gb", ["Linodes", "Metadata"]),
)

# (id, label, class, gpus, $/h, $/mo, RAM MB, vCPUs, region_prices)
SEED_TYPES: tuple[tuple[str, str, str, int, float, float, int, int, list[dict[str, Any]]], ...] = (
    ("g6-nanode-1", "Nanode 1GB", "nanode", 0, 0.0075, 5.0, 1024, 1, []),
    ("g6-standard-2", "Linode 4GB", "standard", 0, 0.036, 24.0, 4096, 2, []),
    ("g6-dedicated-8", "Dedicated 16GB", "dedicated", 0, 0.216, 144.0, 16384, 8, []),
    ("g2-gpu-rtx4000a1-s", "RTX4000 Ada x1 Small", "gpu", 1, 0.52, 350.0, 16384, 4,
     [{"id": "jp-osa", "hourly": 0.62, "monthly": 414.0}]),
    ("g2-gpu-rtx4000a1-m", "RTX4000 Ada x1 Medium", "gpu", 1, 0.67, 446.0, 32768, 8,
     [{"id": "jp-osa", "hourly": 0.80, "monthly": 533.0}]),
    ("g2-gpu-rtx4000a1-l", "RTX4000 Ada x1 Large", "gpu", 1, 0.96, 638.0, 65536, 16, []),
    ("g2-gpu-rtx4000a1-xl", "RTX4000 Ada x1 X-Large", "gpu", 1, 1.53, 1022.0, 131072, 32, []),
    ("g2-gpu-rtx4000a2-s", "RTX4000 Ada x2 Small", "gpu", 2, 1.05, 700.0, 32768, 8, []),
    ("g2-gpu-rtx4000a2-m", "RTX4000 Ada x2 Medium", "gpu", 2, 1.34, 892.0, 65536, 16, []),
    ("g2-gpu-rtx4000a4-s", "RTX4000 Ada x4 Small", "gpu", 4, 2.96, 1976.0, 98304, 48, []),
    ("g2-gpu-rtx4000a4-m", "RTX4000 Ada x4 Medium", "gpu", 4, 3.57, 2384.0, 131072, 64, []),
    ("g1-gpu-rtx6000-1", "Dedicated 32GB + RTX6000 GPU x1", "gpu", 1, 1.5, 1000.0, 32768, 8,
     [{"id": "ap-west", "hourly": 1.8, "monthly": 1200.0}]),
    ("g1-gpu-rtx6000-2", "Dedicated 64GB + RTX6000 GPU x2", "gpu", 2, 3.0, 2000.0, 65536, 16, []),
    ("g1-gpu-rtx6000-3", "Dedicated 96GB + RTX6000 GPU x3", "gpu", 3, 4.5, 3000.0, 98304, 20, []),
    ("g1-gpu-rtx6000-4", "Dedicated 128GB + RTX6000 GPU x4", "gpu", 4, 6.0, 4000.0, 131072, 24, []),
    ("g1-accelerated-netint-vpu-t1u1-s", "NETINT Quadra T1U x1 Small", "accelerated", 0, 0.42, 280.0, 16384, 8,
     []),
)


def _availability_plan(type_id: str) -> str:
    """Linode's availability list names the RTX 6000 plans by internal names, e.g. ``gpu-rtx6000-1.1``."""
    match = re.fullmatch(r"g1-gpu-rtx6000-(\d)", type_id)
    return f"gpu-rtx6000-{match.group(1)}.1" if match else type_id


def seed_availability() -> list[dict[str, Any]]:
    """Every GPU plan available in its generation's regions, plus non-GPU noise and an unknown internal name."""
    entries: list[dict[str, Any]] = []
    for type_id, *_rest in SEED_TYPES:
        if type_id.startswith("g2-gpu"):
            entries += [{"region": r, "plan": type_id, "available": True} for r in _ADA_REGIONS]
        elif type_id.startswith("g1-gpu"):
            entries += [{"region": r, "plan": _availability_plan(type_id), "available": True} for r in _TURING_REGIONS]
    entries.append({"region": "us-ord", "plan": "g6-standard-2", "available": True})
    entries.append({"region": "us-east", "plan": "gpu-rtx6000-9.9", "available": True})
    return entries


@dataclass
class RecordedRequest:
    method: str
    path: str
    status: int
    json: Any = None  # the request body, parsed
    query: dict[str, str] = field(default_factory=dict)
    x_filter: Any = None  # the parsed X-Filter header, if any
    auth: str = "owner"  # "owner" (the account's token), "token:<id>" (a minted one) or "none"


@dataclass
class Fault:
    method: str
    path_regex: str
    status: int | None  # None: answer normally (only the delay applies)
    times: int
    retry_after: float | str | None
    after_effect: bool  # perform the real effect first, then answer the error
    delay: float
    body: Any


def _error(status: int, reason: str, field_name: str | None = None) -> Response:
    error: dict[str, Any] = {"reason": reason}
    if field_name:
        error["field"] = field_name
    return Response(json.dumps({"errors": [error]}), status=status, mimetype="application/json")


def _ok(payload: Any) -> Response:
    return Response(json.dumps(payload), status=200, mimetype="application/json")


def _matches(obj: dict[str, Any], flt: Any) -> bool:
    """Linode's X-Filter subset: ``{"k": v}``, ``{"k": {"+contains": v}}``, ``+and``/``+or``; ordering keys ignored."""
    if not isinstance(flt, dict):
        return True
    for key, want in flt.items():
        if key in ("+order_by", "+order"):
            continue
        if key == "+and":
            if not all(_matches(obj, sub) for sub in want):
                return False
            continue
        if key == "+or":
            if not any(_matches(obj, sub) for sub in want):
                return False
            continue
        have = obj.get(key)
        if isinstance(want, dict):
            for op, value in want.items():
                if op == "+contains" and not (have is not None and value in have):
                    return False
                if op == "+neq" and have == value:
                    return False
        elif have != want:
            return False
    return True


class FakeLinodeApi:
    """The Linode v4 API, in memory, on ``127.0.0.1:<free port>``."""

    def __init__(self, token: str = DEFAULT_TOKEN, *, ipv4: str = "127.0.0.1", gets_per_status: int = 1,
                 max_page_size: int = MAX_PAGE_SIZE) -> None:
        self.token = token
        self.ipv4 = ipv4  # address given to new instances
        self.gets_per_status = gets_per_status  # GETs of one instance before it moves to the next status
        self.max_page_size = max_page_size  # lower it to force pagination
        self.regions: list[dict[str, Any]] = [
            {"id": rid, "label": label, "country": country, "status": "ok", "capabilities": list(caps),
             "site_type": "core"}
            for rid, label, country, caps in SEED_REGIONS
        ]
        self.types: list[dict[str, Any]] = [
            {"id": tid, "label": label, "class": cls, "gpus": gpus, "memory": mem, "vcpus": vcpus,
             "disk": mem * 20, "transfer": 16000, "network_out": 10000, "successor": None,
             "accelerated_devices": 1 if cls == "accelerated" else 0,
             "price": {"hourly": hourly, "monthly": monthly}, "region_prices": [dict(p) for p in prices],
             "addons": {"backups": {"price": {"hourly": 0.0, "monthly": 0.0}, "region_prices": []}}}
            for tid, label, cls, gpus, hourly, monthly, mem, vcpus, prices in SEED_TYPES
        ]
        self.availability: list[dict[str, Any]] = seed_availability()
        self.availability_broken = False  # True: /regions/availability answers 500
        self.gpu_access_verified = True  # False: creating a GPU Linode answers 403 "verification is required"
        self.instances: dict[int, dict[str, Any]] = {}
        self.create_bodies: dict[int, dict[str, Any]] = {}  # what each POST sent (user_data decoded)
        self.requests: list[RecordedRequest] = []
        self.on_create: Callable[[dict[str, Any]], dict[str, Any] | None] | None = None
        self.on_delete: Callable[[int], None] | None = None  # called after an instance is deleted
        self.tokens: dict[int, dict[str, Any]] = {}  # minted personal access tokens (revoked ones removed)
        self.revoked_tokens: dict[int, dict[str, Any]] = {}
        self.deletions: dict[int, str] = {}  # instance id -> who deleted it ("owner" or "token:<id>")
        self.events: list[dict[str, Any]] = []
        self._next_token_id = 900
        self._faults: list[Fault] = []
        self._gets: dict[int, int] = {}
        self._next_id = 40_000_000
        self.clock_skew = timedelta(0)  # Linode's clock minus this machine's: moves ``Date`` and ``created``
        self._lock = threading.RLock()
        self._server: LoopbackServer | None = None
        self.app = self._build_app()

    # lifecycle

    def start(self) -> FakeLinodeApi:
        fake = self

        class Handler(QuietHandler):
            def date_time_string(self, timestamp: float | None = None) -> str:
                return formatdate((timestamp or time.time()) + fake.clock_skew.total_seconds(), usegmt=True)

        self._server = LoopbackServer(self.app, "fake-linode-api", Handler)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> FakeLinodeApi:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        assert self._server is not None, "start() the fake first"
        return f"http://127.0.0.1:{self._server.port}/v4"

    # scripting and inspection

    def fail(self, method: str, path_regex: str, status: int | None, times: int = 1,
             retry_after: float | str | None = None, after_effect: bool = False, delay: float = 0.0,
             body: Any = None) -> None:
        """Answer the next ``times`` matching requests with ``status`` (None: normal answer, only ``delay``)."""
        with self._lock:
            self._faults.append(Fault(method.upper(), path_regex, status, times, retry_after, after_effect, delay,
                                      body))

    def clear_faults(self) -> None:
        """Forget every scripted failure still pending."""
        with self._lock:
            self._faults.clear()

    def count(self, method: str, path: str | None = None, status: int | None = None) -> int:
        """How many recorded requests match (``path`` exact, e.g. ``/v4/linode/instances``)."""
        return len(self.matching(method, path, status))

    def matching(self, method: str, path: str | None = None, status: int | None = None) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests
                    if r.method == method.upper() and (path is None or r.path == path)
                    and (status is None or r.status == status)]

    def add_instance(self, label: str, *, region: str = "us-ord", plan: str = "g2-gpu-rtx4000a1-s",
                     tags: list[str] | None = None, status: str = "running") -> dict[str, Any]:
        """Put an instance on the account directly (as if made in the Linode console)."""
        with self._lock:
            instance = self._new_instance({"label": label, "region": region, "type": plan, "tags": tags or []})
            instance["status"] = status
            return instance

    # the app

    def _build_app(self) -> Flask:
        app = Flask("fake_linode_api")
        app.before_request(self._before)
        app.after_request(self._after)
        app.add_url_rule("/v4/regions", view_func=self._list_regions)
        app.add_url_rule("/v4/regions/availability", view_func=self._list_availability)
        app.add_url_rule("/v4/linode/types", view_func=self._list_types)
        app.add_url_rule("/v4/linode/instances", view_func=self._list_instances)
        app.add_url_rule("/v4/linode/instances", view_func=self._create_instance, methods=["POST"])
        app.add_url_rule("/v4/linode/instances/<int:instance_id>", view_func=self._get_instance)
        app.add_url_rule("/v4/linode/instances/<int:instance_id>", view_func=self._delete_instance,
                         methods=["DELETE"])
        app.add_url_rule("/v4/profile", view_func=self._get_profile)
        app.add_url_rule("/v4/profile/tokens", view_func=self._create_token, methods=["POST"])
        app.add_url_rule("/v4/profile/tokens/<int:token_id>", view_func=self._delete_token, methods=["DELETE"])
        app.add_url_rule("/v4/account/events", view_func=self._list_events)
        app.register_error_handler(404, lambda _e: _error(404, "Not found"))
        app.register_error_handler(405, lambda _e: _error(405, "Method not allowed"))
        return app

    def _take_fault(self) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.method == request.method and re.search(fault.path_regex, request.path):
                    fault.times -= 1
                    if fault.times <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def _fault_response(self, fault: Fault) -> Response | None:
        if fault.delay:
            time.sleep(fault.delay)
        if fault.status is None:
            return None
        body = fault.body if fault.body is not None else {"errors": [{"reason": f"scripted failure {fault.status}"}]}
        response = Response(json.dumps(body), status=fault.status, mimetype="application/json")
        if fault.retry_after is not None:
            response.headers["Retry-After"] = str(fault.retry_after)
        return response

    def _caller(self) -> str | None:
        """Who the request's token is: the owner, a live minted token allowed here, or None (refused)."""
        header = request.headers.get("Authorization") or ""
        if header == f"Bearer {self.token}":
            return "owner"
        now = self._now()
        with self._lock:
            for token_id, token in self.tokens.items():
                if header != f"Bearer {token['token']}" or token["expiry"] <= now:
                    continue
                scopes = token["scopes"].split()
                writes = request.method not in ("GET", "HEAD")
                if request.path.startswith("/v4/linode/") and (
                        "linodes:read_write" in scopes or (not writes and "linodes:read_only" in scopes)):
                    return f"token:{token_id}"
                return None
        return None

    def _now(self) -> datetime:
        return (datetime.now(timezone.utc) + self.clock_skew).replace(microsecond=0, tzinfo=None)

    def _before(self) -> Response | None:
        g.fault = None
        g.caller = self._caller()
        if g.caller is None:
            g.caller = "none"
            return _error(401, "Invalid Token")
        fault = self._take_fault()
        if fault is None:
            return None
        if fault.after_effect:
            g.fault = fault
            return None
        return self._fault_response(fault)

    def _after(self, response: Response) -> Response:
        fault = g.get("fault")
        if fault is not None:
            g.fault = None
            response = self._fault_response(fault) or response
        try:
            x_filter = json.loads(request.headers.get("X-Filter", "null"))
        except ValueError:
            x_filter = request.headers.get("X-Filter")
        with self._lock:
            self.requests.append(RecordedRequest(
                method=request.method, path=request.path, status=response.status_code,
                json=request.get_json(silent=True), query=dict(request.args), x_filter=x_filter,
                auth=g.get("caller") or "none"))
        return response

    def _page(self, items: list[dict[str, Any]]) -> Response:
        try:
            x_filter = json.loads(request.headers.get("X-Filter") or "{}")
        except ValueError:
            return _error(400, "Invalid JSON in X-Filter")
        items = [i for i in items if _matches(i, x_filter)]
        page = max(int(request.args.get("page", 1)), 1)
        size = min(max(int(request.args.get("page_size", 100)), 1), self.max_page_size)
        pages = max((len(items) + size - 1) // size, 1)
        chunk = items[(page - 1) * size: page * size]
        return _ok({"data": chunk, "page": page, "pages": pages, "results": len(items)})

    def _list_regions(self) -> Response:
        return self._page(self.regions)

    def _list_availability(self) -> Response:
        if self.availability_broken:
            return _error(500, "Internal Server Error")
        return self._page(self.availability)

    def _list_types(self) -> Response:
        return self._page(self.types)

    def _list_instances(self) -> Response:
        with self._lock:
            return self._page([dict(i) for i in self.instances.values()])

    def _get_instance(self, instance_id: int) -> Response:
        with self._lock:
            instance = self.instances.get(instance_id)
            if instance is None:
                return _error(404, "Not found")
            answer = _ok(instance)
            self._advance_status(instance)  # the next GET sees the VM one step further along
            return answer

    def _advance_status(self, instance: dict[str, Any]) -> None:
        """Each ``gets_per_status`` GETs move provisioning -> booting -> running, as a booting VM would."""
        if instance["status"] not in STATUS_PROGRESSION[:-1]:
            return
        seen = self._gets[instance["id"]] = self._gets.get(instance["id"], 0) + 1
        if seen % self.gets_per_status == 0:
            instance["status"] = STATUS_PROGRESSION[STATUS_PROGRESSION.index(instance["status"]) + 1]

    def _delete_instance(self, instance_id: int) -> Response:
        with self._lock:
            if self.instances.pop(instance_id, None) is None:
                return _error(404, "Not found")
            self.deletions[instance_id] = g.caller
            self.events.append({"id": len(self.events) + 1, "action": "linode_delete",
                                "created": self._now().isoformat(), "status": "notification",
                                "entity": {"id": instance_id, "type": "linode", "label": None},
                                "username": "maider-test"})
        if self.on_delete is not None:
            self.on_delete(instance_id)
        return _ok({})  # Linode answers 200 {}; the SDK breaks on a 204

    def _get_profile(self) -> Response:
        return _ok({"username": "maider-test", "email": "maider@example.com", "restricted": False,
                    "two_factor_auth": False, "uid": 1234})

    def _create_token(self) -> Response:
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            return _error(400, "Request body must be JSON")
        if g.caller != "owner":
            return _error(401, "Your OAuth token is not authorized to use this endpoint.")
        try:
            expiry = datetime.fromisoformat(str(body["expiry"])) if body.get("expiry") else None
        except ValueError:
            return _error(400, "expiry must be a datetime", "expiry")
        if expiry is not None and expiry <= self._now():
            return _error(400, "Expiry must be in the future", "expiry")
        with self._lock:
            self._next_token_id += 1
            token = {"id": self._next_token_id, "label": body.get("label") or "", "scopes": body.get("scopes") or "*",
                     "created": self._now().isoformat(), "expiry": expiry or datetime(2999, 1, 1),
                     "token": secrets.token_hex(32)}
            self.tokens[token["id"]] = token
        return _ok({**token, "expiry": token["expiry"].isoformat()})

    def _delete_token(self, token_id: int) -> Response:
        with self._lock:
            token = self.tokens.pop(token_id, None)
            if token is None:
                return _error(404, "Not found")
            self.revoked_tokens[token_id] = token
        return _ok({})

    def _list_events(self) -> Response:
        with self._lock:
            events = [dict(e) for e in self.events]
        try:
            x_filter = json.loads(request.headers.get("X-Filter") or "{}")
        except ValueError:
            return _error(400, "Invalid JSON in X-Filter")
        entity_id = x_filter.pop("entity.id", None) if isinstance(x_filter, dict) else None
        if isinstance(x_filter, dict):
            x_filter.pop("entity.type", None)
        events = [e for e in events if entity_id is None or e["entity"]["id"] == entity_id]
        events = [e for e in events if _matches(e, x_filter)]
        return _ok({"data": events, "page": 1, "pages": 1, "results": len(events)})

    def _create_instance(self) -> Response:
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            return _error(400, "Request body must be JSON")
        with self._lock:
            problem = self._validate_create(body)
            if problem is not None:
                return problem
            instance = self._new_instance(body)
            hook_body = dict(self.create_bodies[instance["id"]])
        if self.on_create is not None:
            patch = self.on_create(hook_body)
            if patch:
                with self._lock:
                    instance.update(patch)
        return _ok(instance)

    def _validate_create(self, body: dict[str, Any]) -> Response | None:
        type_ids = {t["id"] for t in self.types}
        region_ids = {r["id"] for r in self.regions}
        if body.get("type") not in type_ids:
            return _error(400, "A valid plan type by that ID was not found", "type")
        if body.get("region") not in region_ids:
            return _error(400, "region is not valid", "region")
        label = body.get("label")
        if label and any(i["label"] == label for i in self.instances.values()):
            return _error(400, "Label must be unique among your linodes", "label")
        if body.get("image") and not (body.get("root_pass") or body.get("authorized_keys")):
            return _error(400, "root_pass is required when specifying an image", "root_pass")
        gpu_type = next(t for t in self.types if t["id"] == body["type"])["class"] == "gpu"
        if gpu_type and not self.gpu_access_verified:
            return _error(403, VERIFICATION_REASON)
        names = {body["type"], _availability_plan(body["type"])}
        listed = [e for e in self.availability if e["region"] == body["region"] and e["plan"] in names]
        if gpu_type and not any(e["available"] for e in listed):
            return _error(403, NO_AVAILABILITY_REASON)
        if listed and not any(e["available"] for e in listed):
            return _error(403, NO_AVAILABILITY_REASON)
        return None

    def _new_instance(self, body: dict[str, Any]) -> dict[str, Any]:
        self._next_id += 1
        instance_id = self._next_id
        plan = next(t for t in self.types if t["id"] == body["type"])
        now = (datetime.now(timezone.utc) + self.clock_skew).replace(microsecond=0, tzinfo=None).isoformat()
        instance = {
            "id": instance_id, "label": body.get("label") or f"linode{instance_id}", "group": "",
            "status": "provisioning", "type": body["type"], "region": body["region"], "image": body.get("image"),
            "ipv4": [self.ipv4], "ipv6": "2600:3c00::f03c:91ff:fe00:1/128", "tags": list(body.get("tags") or []),
            "created": now, "updated": now, "hypervisor": "kvm", "watchdog_enabled": True,
            "has_user_data": bool((body.get("metadata") or {}).get("user_data")),
            "specs": {"disk": plan["disk"], "memory": plan["memory"], "vcpus": plan["vcpus"], "gpus": plan["gpus"],
                      "transfer": plan["transfer"]},
            "alerts": {}, "backups": {"enabled": False, "available": False, "schedule": {}},
            "capabilities": [], "disk_encryption": "disabled", "lke_cluster_id": None,
        }
        recorded = dict(body)
        user_data = (body.get("metadata") or {}).get("user_data")
        if user_data:
            packed = base64.b64decode(user_data)
            recorded["user_data_bytes"] = len(packed)  # what Linode counts against its limit
            recorded["user_data"] = (gzip.decompress(packed) if packed[:2] == b"\x1f\x8b" else packed).decode()
        self.instances[instance_id] = instance
        self.create_bodies[instance_id] = recorded
        return instance
