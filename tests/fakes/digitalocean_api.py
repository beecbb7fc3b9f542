"""A fake of the DigitalOcean API v2 endpoints maider uses, served over real HTTP for the real ``pydo`` client.

Shapes follow DigitalOcean's API reference: lists are ``{"<things>": [...], "links": {"pages": {...}}, "meta":
{"total": n}}`` paged with ``page``/``per_page`` (at most 200), errors are ``{"id": "...", "message": "..."}``.
``GET /v2/droplets`` lists only non-GPU Droplets unless ``type=gpus``, and refuses ``tag_name`` combined with ``name``
or ``type``, as the reference says. Faults are scripted with ``fail()``; every request is recorded in ``requests``.
"""
from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlencode

from flask import Flask, Response, g, request

from fakes.serving import LoopbackServer

DEFAULT_TOKEN = "dop_v1_fake0123456789abcdef0123456789abcdef0123456789abcdef0123456789ab"
# DigitalOcean's own words (HTTP 422) for a size a region cannot give, and for an account at its Droplet limit.
SIZE_UNAVAILABLE_MESSAGE = "Size is not available in this region."
DROPLET_LIMIT_MESSAGE = "creating this/these droplet(s) will exceed your droplet limit"
KEY_IN_USE_MESSAGE = "SSH Key is already in use on your account"
UNAUTHORIZED_MESSAGE = "Unable to authenticate you"
MAX_PER_PAGE = 200
USER_DATA_MAX_BYTES = 64 * 1024
STATUS_PROGRESSION = ("new", "active")
# A key the account owner registered in the console: never maider's to touch.
USER_KEY_NAME = "my-laptop"
USER_KEY = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGZha2Uta2V5LW9mLXRoZS1hY2NvdW50LW93bmVyMDEy owner@laptop")

_FEATURES = ["backups", "ipv6", "metadata", "install_agent", "storage", "image_transfer"]
# (slug, name, offers GPUs)
SEED_REGIONS: tuple[tuple[str, str, bool], ...] = (
    ("nyc2", "New York 2", True),
    ("tor1", "Toronto 1", True),
    ("atl1", "Atlanta 1", True),
    ("ams3", "Amsterdam 3", False),
    ("fra1", "Frankfurt 1", False),
)
_NON_GPU_REGIONS = [slug for slug, _name, _gpus in SEED_REGIONS]

# (slug, description, $/h, $/mo, RAM MB, vCPUs, disk GB, regions, gpu_info or None)
SEED_SIZES: tuple[tuple[str, str, float, float, int, int, int, list[str], dict[str, Any] | None], ...] = (
    ("s-1vcpu-1gb", "Basic", 0.00893, 6.0, 1024, 1, 25, _NON_GPU_REGIONS, None),
    ("s-4vcpu-8gb", "Basic", 0.07143, 48.0, 8192, 4, 160, _NON_GPU_REGIONS, None),
    ("gpu-4000adax1-20gb", "RTX 4000 Ada GPU - 1X", 0.76, 565.44, 32768, 8, 500, ["tor1", "atl1"],
     {"count": 1, "vram": {"amount": 20, "unit": "gib"}, "model": "nvidia_rtx_4000_ada"}),
    ("gpu-6000adax1-48gb", "RTX 6000 Ada GPU - 1X", 1.57, 1168.08, 65536, 8, 500, ["tor1", "atl1"],
     {"count": 1, "vram": {"amount": 48, "unit": "gib"}, "model": "nvidia_rtx_6000_ada"}),
    ("gpu-l40sx1-48gb", "L40S GPU - 1X", 1.57, 1168.08, 65536, 8, 500, ["tor1", "atl1"],
     {"count": 1, "vram": {"amount": 48, "unit": "gib"}, "model": "nvidia_l40s"}),
    ("gpu-h100x1-80gb", "H100 GPU - 1X", 3.39, 2522.16, 245760, 20, 720, ["nyc2", "tor1", "atl1"],
     {"count": 1, "vram": {"amount": 80, "unit": "gib"}, "model": "nvidia_h100"}),
    ("gpu-h100x8-640gb", "H100 GPU - 8X", 23.92, 17796.48, 1966080, 160, 2046, ["nyc2", "tor1"],
     {"count": 8, "vram": {"amount": 640, "unit": "gib"}, "model": "nvidia_h100"}),
    ("gpu-h200x1-141gb", "H200 GPU - 1X", 3.44, 2559.36, 245760, 24, 720, ["atl1"],
     {"count": 1, "vram": {"amount": 141, "unit": "gib"}, "model": "nvidia_h200"}),
    # A GPU maider has no facts for: listed, never guessed into a VRAM figure.
    ("gpu-mi300x1-192gb", "AMD MI300X - 1X", 1.99, 1480.56, 245760, 20, 720, ["atl1"],
     {"count": 1, "vram": {"amount": 192, "unit": "gib"}, "model": "amd_mi300x"}),
)


def fingerprint(public_key: str) -> str:
    """DigitalOcean's key fingerprint: MD5 of the key blob, as colon-separated hex."""
    blob = base64.b64decode(public_key.split()[1])
    digest = hashlib.md5(blob, usedforsecurity=False).hexdigest()  # DigitalOcean's fingerprint format
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


@dataclass
class RecordedRequest:
    method: str
    path: str
    status: int
    json: Any = None  # the request body, parsed
    query: dict[str, str] = field(default_factory=dict)


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
    ratelimit_reset: int | None  # epoch seconds for the ``ratelimit-reset`` header


def _error(status: int, error_id: str, message: str) -> Response:
    return Response(json.dumps({"id": error_id, "message": message}), status=status, mimetype="application/json")


def _json(payload: Any, status: int = 200) -> Response:
    return Response(json.dumps(payload), status=status, mimetype="application/json")


def _now_iso() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


class FakeDigitalOceanApi:
    """The DigitalOcean v2 API, in memory, on ``127.0.0.1:<free port>``."""

    def __init__(self, token: str = DEFAULT_TOKEN, *, ipv4: str = "127.0.0.1", gets_per_status: int = 1) -> None:
        self.token = token
        self.ipv4 = ipv4  # public address given to new Droplets once they leave "new"
        self.gets_per_status = gets_per_status  # GETs of one Droplet before it moves to the next status
        self.regions: list[dict[str, Any]] = [
            {"slug": slug, "name": name, "features": list(_FEATURES), "available": True,
             "sizes": [s[0] for s in SEED_SIZES if slug in s[7] and (gpus or s[8] is None)]}
            for slug, name, gpus in SEED_REGIONS
        ]
        self.sizes: list[dict[str, Any]] = []
        for slug, description, hourly, monthly, memory, vcpus, disk, regions, gpu_info in SEED_SIZES:
            size: dict[str, Any] = {
                "slug": slug, "memory": memory, "vcpus": vcpus, "disk": disk, "transfer": 15.0 if gpu_info else 1.0,
                "price_monthly": monthly, "price_hourly": hourly, "regions": list(regions), "available": True,
                "description": description,
                "disk_info": [{"type": "local", "size": {"amount": disk, "unit": "gib"}}],
            }
            if gpu_info is not None:
                size["gpu_info"] = json.loads(json.dumps(gpu_info))
            self.sizes.append(size)
        self.droplets: dict[int, dict[str, Any]] = {}
        self.create_bodies: dict[int, dict[str, Any]] = {}  # what each POST /v2/droplets sent
        self.deleted: list[int] = []  # Droplet ids deleted, in order
        self.keys: dict[int, dict[str, Any]] = {}
        self.keys_created = 0
        self.requests: list[RecordedRequest] = []
        self.on_create: Callable[[dict[str, Any]], dict[str, Any] | None] | None = None
        self._faults: list[Fault] = []
        self._gets: dict[int, int] = {}
        self._next_id = 500_000_000
        self._next_key_id = 41_000_000
        self._lock = threading.RLock()
        self._server: LoopbackServer | None = None
        self.app = self._build_app()
        self.add_key(USER_KEY_NAME, USER_KEY)

    # lifecycle

    def start(self) -> FakeDigitalOceanApi:
        self._server = LoopbackServer(self.app, "fake-digitalocean-api")
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> FakeDigitalOceanApi:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """What ``MAIDER_DIGITALOCEAN_API_URL`` holds: the host, without ``/v2`` (pydo's paths carry it)."""
        assert self._server is not None, "start() the fake first"
        return f"http://127.0.0.1:{self._server.port}"

    # scripting and inspection

    def fail(self, method: str, path_regex: str, status: int | None, times: int = 1,
             retry_after: float | str | None = None, after_effect: bool = False, delay: float = 0.0,
             body: Any = None, ratelimit_reset: int | None = None) -> None:
        """Answer the next ``times`` matching requests with ``status`` (None: normal answer, only ``delay``)."""
        with self._lock:
            self._faults.append(Fault(method.upper(), path_regex, status, times, retry_after, after_effect, delay,
                                      body, ratelimit_reset))

    def clear_faults(self) -> None:
        """Forget every scripted failure still pending."""
        with self._lock:
            self._faults.clear()

    def count(self, method: str, path: str | None = None, status: int | None = None) -> int:
        """How many recorded requests match (``path`` exact, e.g. ``/v2/droplets``)."""
        return len(self.matching(method, path, status))

    def matching(self, method: str, path: str | None = None, status: int | None = None) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests
                    if r.method == method.upper() and (path is None or r.path == path)
                    and (status is None or r.status == status)]

    def add_droplet(self, name: str, *, region: str = "tor1", size: str = "gpu-4000adax1-20gb",
                    tags: list[str] | None = None, status: str = "active") -> dict[str, Any]:
        """Put a Droplet on the account directly (as if made in the console)."""
        with self._lock:
            droplet = self._new_droplet({"name": name, "region": region, "size": size, "tags": tags or []})
            droplet["status"] = status
            self._give_address(droplet)
            return droplet

    def add_key(self, name: str, public_key: str) -> dict[str, Any]:
        """Register an SSH key directly (as if added in the console)."""
        with self._lock:
            self._next_key_id += 1
            key = {"id": self._next_key_id, "fingerprint": fingerprint(public_key), "public_key": public_key,
                   "name": name}
            self.keys[key["id"]] = key
            return key

    # the app

    def _build_app(self) -> Flask:
        app = Flask("fake_digitalocean_api")
        app.before_request(self._before)
        app.after_request(self._after)
        app.add_url_rule("/v2/regions", view_func=self._list_regions)
        app.add_url_rule("/v2/sizes", view_func=self._list_sizes)
        app.add_url_rule("/v2/droplets", view_func=self._list_droplets)
        app.add_url_rule("/v2/droplets", view_func=self._create_droplet, methods=["POST"])
        app.add_url_rule("/v2/droplets/<int:droplet_id>", view_func=self._get_droplet)
        app.add_url_rule("/v2/droplets/<int:droplet_id>", view_func=self._delete_droplet, methods=["DELETE"])
        app.add_url_rule("/v2/account/keys", view_func=self._list_keys)
        app.add_url_rule("/v2/account/keys", view_func=self._create_key, methods=["POST"])
        app.add_url_rule("/v2/account/keys/<identifier>", view_func=self._get_key)
        app.add_url_rule("/v2/account/keys/<identifier>", view_func=self._delete_key, methods=["DELETE"])
        app.register_error_handler(404, lambda _e: _error(404, "not_found",
                                                          "The resource you were accessing could not be found."))
        app.register_error_handler(405, lambda _e: _error(405, "method_not_allowed", "Method not allowed"))
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
        body = fault.body if fault.body is not None else {"id": "server_error",
                                                          "message": f"scripted failure {fault.status}"}
        response = Response(json.dumps(body), status=fault.status, mimetype="application/json")
        if fault.retry_after is not None:
            response.headers["Retry-After"] = str(fault.retry_after)
        if fault.ratelimit_reset is not None:
            response.headers["ratelimit-limit"] = "5000"
            response.headers["ratelimit-remaining"] = "0"
            response.headers["ratelimit-reset"] = str(fault.ratelimit_reset)
        return response

    def _before(self) -> Response | None:
        g.fault = None
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return _error(401, "Unauthorized", UNAUTHORIZED_MESSAGE)
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
        with self._lock:
            self.requests.append(RecordedRequest(method=request.method, path=request.path,
                                                 status=response.status_code, json=request.get_json(silent=True),
                                                 query=dict(request.args)))
        return response

    def _page(self, key: str, items: list[dict[str, Any]]) -> Response:
        try:
            page = max(int(request.args.get("page", 1)), 1)
            per_page = min(max(int(request.args.get("per_page", 20)), 1), MAX_PER_PAGE)
        except ValueError:
            return _error(400, "bad_request", "page and per_page must be numbers")
        last = max((len(items) + per_page - 1) // per_page, 1)
        chunk = items[(page - 1) * per_page: page * per_page]

        def link(number: int) -> str:
            query = {k: v for k, v in request.args.items() if k != "page"}
            query["page"] = str(number)
            return f"{request.host_url.rstrip('/')}{request.path}?{urlencode(query)}"

        pages: dict[str, str] = {}
        if page > 1:
            pages.update(first=link(1), prev=link(page - 1))
        if page < last:
            pages.update(next=link(page + 1), last=link(last))
        return _json({key: chunk, "links": {"pages": pages}, "meta": {"total": len(items)}})

    def _list_regions(self) -> Response:
        return self._page("regions", self.regions)

    def _list_sizes(self) -> Response:
        return self._page("sizes", self.sizes)

    def _is_gpu(self, droplet: dict[str, Any]) -> bool:
        return bool(droplet["size"].get("gpu_info"))

    def _list_droplets(self) -> Response:
        tag, name, kind = request.args.get("tag_name"), request.args.get("name"), request.args.get("type")
        if tag is not None and (name is not None or kind is not None):
            return _error(422, "unprocessable_entity", "tag_name can not be combined with name or type")
        with self._lock:
            droplets = [json.loads(json.dumps(d)) for d in self.droplets.values()]
        # The reference: "By default, only non-GPU Droplets are returned"; type=gpus lists only GPU Droplets.
        droplets = [d for d in droplets if self._is_gpu(d) == (kind == "gpus")]
        if tag is not None:
            droplets = [d for d in droplets if tag in d["tags"]]
        if name is not None:
            droplets = [d for d in droplets if d["name"].lower() == name.lower()]
        return self._page("droplets", droplets)

    def _get_droplet(self, droplet_id: int) -> Response:
        with self._lock:
            droplet = self.droplets.get(droplet_id)
            if droplet is None:
                return _error(404, "not_found", "The resource you were accessing could not be found.")
            answer = _json({"droplet": droplet})
            self._advance_status(droplet)  # the next GET sees the Droplet one step further along
            return answer

    def _advance_status(self, droplet: dict[str, Any]) -> None:
        if droplet["status"] != "new":
            return
        seen = self._gets[droplet["id"]] = self._gets.get(droplet["id"], 0) + 1
        if seen % self.gets_per_status == 0:
            droplet["status"] = "active"
            self._give_address(droplet)

    def _give_address(self, droplet: dict[str, Any]) -> None:
        if not droplet["networks"]["v4"]:
            droplet["networks"]["v4"] = [
                {"ip_address": "10.116.0.2", "netmask": "255.255.240.0", "gateway": "", "type": "private"},
                {"ip_address": self.ipv4, "netmask": "255.255.240.0",
                 "gateway": "203.0.113.1", "type": "public"},
            ]

    def _delete_droplet(self, droplet_id: int) -> Response:
        with self._lock:
            if self.droplets.pop(droplet_id, None) is None:
                return _error(404, "not_found", "The resource you were accessing could not be found.")
            self.deleted.append(droplet_id)
        return Response(status=204)

    def _create_droplet(self) -> Response:
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            return _error(400, "bad_request", "The request body must be JSON")
        with self._lock:
            problem = self._validate_create(body)
            if problem is not None:
                return problem
            droplet = self._new_droplet(body)
            hook_body = dict(body)
        if self.on_create is not None:
            patch = self.on_create(hook_body)
            if patch:
                with self._lock:
                    droplet.update(patch)
        return _json({"droplet": droplet, "links": {"actions": [
            {"id": droplet["id"] + 7, "rel": "create", "href": f"{request.host_url}v2/actions/{droplet['id'] + 7}"}]}},
            status=202)

    def _validate_create(self, body: dict[str, Any]) -> Response | None:
        for required in ("name", "region", "size", "image"):
            if not body.get(required):
                return _error(422, "unprocessable_entity", f"{required} is required")
        size = next((s for s in self.sizes if s["slug"] == body["size"]), None)
        if size is None:
            return _error(422, "unprocessable_entity", "You specified an invalid size for Droplet creation.")
        if body["region"] not in {r["slug"] for r in self.regions}:
            return _error(422, "unprocessable_entity", "You specified an invalid region for Droplet creation.")
        if body["region"] not in size["regions"] or not size["available"]:
            return _error(422, "unprocessable_entity", SIZE_UNAVAILABLE_MESSAGE)
        user_data = body.get("user_data")
        if user_data is not None and len(str(user_data).encode()) > USER_DATA_MAX_BYTES:
            return _error(422, "unprocessable_entity", "user_data must be smaller than 64 KiB")
        known = {k["id"] for k in self.keys.values()} | {k["fingerprint"] for k in self.keys.values()}
        for key in body.get("ssh_keys") or ():
            if key not in known:
                return _error(422, "unprocessable_entity", "ssh_keys contains an unknown key")
        for tag in body.get("tags") or ():
            if not re.fullmatch(r"[A-Za-z0-9:_\-]{1,255}", str(tag)):
                return _error(422, "unprocessable_entity", f"tag {tag!r} is not a valid tag name")
        return None

    def _new_droplet(self, body: dict[str, Any]) -> dict[str, Any]:
        self._next_id += 1
        droplet_id = self._next_id
        size = next(s for s in self.sizes if s["slug"] == body["size"])
        region = next(r for r in self.regions if r["slug"] == body["region"])
        droplet = {
            "id": droplet_id, "name": body["name"], "memory": size["memory"], "vcpus": size["vcpus"],
            "disk": size["disk"], "locked": False, "status": "new", "kernel": None, "created_at": _now_iso(),
            "features": ["droplet_agent"] if body.get("with_droplet_agent", True) else [],
            "backup_ids": [], "next_backup_window": None, "snapshot_ids": [],
            "image": {"id": 170000001, "name": "AI/ML Ready", "distribution": "Ubuntu",
                      "slug": body.get("image"), "public": True},
            "volume_ids": [], "size": json.loads(json.dumps(size)), "size_slug": size["slug"],
            "networks": {"v4": [], "v6": []},
            "region": {k: region[k] for k in ("name", "slug", "features", "available", "sizes")},
            "tags": list(body.get("tags") or []), "vpc_uuid": "5a4981aa-9653-4bd1-bef5-d6bff52042e4",
            "gpu_info": size.get("gpu_info"),
        }
        self.droplets[droplet_id] = droplet
        self.create_bodies[droplet_id] = dict(body)
        return droplet

    # SSH keys

    def _find_key(self, identifier: str) -> dict[str, Any] | None:
        for key in self.keys.values():
            if str(key["id"]) == identifier or key["fingerprint"] == identifier:
                return key
        return None

    def _list_keys(self) -> Response:
        with self._lock:
            return self._page("ssh_keys", [dict(k) for k in self.keys.values()])

    def _get_key(self, identifier: str) -> Response:
        with self._lock:
            key = self._find_key(identifier)
        if key is None:
            return _error(404, "not_found", "The resource you were accessing could not be found.")
        return _json({"ssh_key": key})

    def _create_key(self) -> Response:
        body = request.get_json(silent=True)
        if not isinstance(body, dict) or not body.get("name") or not body.get("public_key"):
            return _error(422, "unprocessable_entity", "name and public_key are required")
        try:
            print_ = fingerprint(str(body["public_key"]))
        except (IndexError, ValueError):
            return _error(422, "unprocessable_entity", "Key invalid type, we support 'ssh-rsa', 'ssh-dss', "
                                                       "'ecdsa-sha2-nistp' or 'ssh-ed25519'")
        with self._lock:
            if self._find_key(print_) is not None:
                return _error(422, "unprocessable_entity", KEY_IN_USE_MESSAGE)
            key = self.add_key(str(body["name"]), str(body["public_key"]))
            self.keys_created += 1
        return _json({"ssh_key": key}, status=201)

    def _delete_key(self, identifier: str) -> Response:
        with self._lock:
            key = self._find_key(identifier)
            if key is None:
                return _error(404, "not_found", "The resource you were accessing could not be found.")
            del self.keys[key["id"]]
        return Response(status=204)
