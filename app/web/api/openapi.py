"""The API as an OpenAPI 3.0 document, built from the app's own routes and the request schemas they parse with.

Every ``api.*`` endpoint needs an entry in ``OPERATIONS`` (a module of routes adds its own, as
``app.web.api.benchmarks`` does); ``undocumented`` names any that lack one and a test keeps it empty. Request bodies
come from ``app.web.schemas``, so the document cannot drift from what the routes accept.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from werkzeug.routing import Map, Rule

from app.domain.server_proof import NONCE_RE
from app.models import SessionState
from app.web import schemas

_ARG = re.compile(r"<(?:[^:<>]+:)?([A-Za-z_][A-Za-z0-9_]*)>")
_IGNORED_METHODS = {"HEAD", "OPTIONS"}
_REASONS = {200: "OK", 201: "Created", 202: "Accepted", 400: "Bad request: the message says what to fix",
            401: "Missing or wrong API token", 404: "No such session or orphan VM",
            409: "A live session already has this name", 413: "The body is larger than 2 MiB",
            415: "The body is not JSON (Content-Type: application/json)",
            422: "Well-formed, but maider's rules refuse it now (the message says why)"}
_PATH_PARAMS: dict[str, dict[str, Any]] = {
    "name": schemas.SESSION_NAME.schema(),
    "orphan_id": {"type": "integer", "minimum": 0, "maximum": schemas.MAX_DB_ID},
}


@dataclass(frozen=True)
class Operation:
    """One route's documentation: what it does, what it answers and what it reads."""

    summary: str
    ok: tuple[int, str]  # success status and the response schema's component name
    errors: tuple[int, ...] = ()  # besides 401 (all but health), 404 (path parameters), 400/415 (a body)
    body: schemas.Body | None = None
    query: dict[str, dict[str, Any]] = field(default_factory=dict)
    public: bool = False
    path: dict[str, dict[str, Any]] = field(default_factory=dict)  # path parameters unlike _PATH_PARAMS' ones


OPERATIONS: dict[str, Operation] = {
    "api.health": Operation("Say that this is maider (with ?nonce=, prove it holds the API token)", (200, "Health"),
                            errors=(400,), query={"nonce": {"type": "string", "pattern": f"^{NONCE_RE.pattern}$"}},
                            public=True),
    "api.openapi_document": Operation("This document", (200, "OpenApiDocument")),
    "api.list_sessions": Operation("Live sessions with cost, the spend totals and orphan VMs", (200, "SessionList")),
    "api.create_session": Operation("Request a launch; the workers create the VM", (201, "Session"),
                                    errors=(409, 413, 422), body=schemas.LAUNCH),
    "api.get_session": Operation("One session (the live one with this name, else the newest ended one)",
                                 (200, "Session"), errors=(404,)),
    "api.destroy_session": Operation("Request destruction; the session stays until the provider confirms it",
                                     (202, "Session"), errors=(422,)),
    "api.session_events": Operation("The session's events after ?after=<event id>", (200, "EventList"),
                                    query={"after": schemas.EVENT_ID.schema()}),
    "api.reconnect_tunnel": Operation("Rebuild the session's SSH forwards on the same local ports",
                                      (200, "TunnelState"), errors=(422,)),
    "api.extend_session": Operation("Reset the idle watchdog's timer", (200, "Session"), errors=(422,)),
    "api.switch_model": Operation("Switch the model on a ready VM (checked to fit first)", (202, "Session"),
                                  errors=(413, 422), body=schemas.SWITCH_MODEL),
    "api.aider_files": Operation("aider's files for a ready session (they hold the session's API key)",
                                 (200, "AiderFiles"), errors=(422,)),
    "api.cleanup": Operation("Forget sessions whose VMs the provider confirms gone", (200, "CleanupResult"),
                             errors=(404, 413, 422), body=schemas.CLEANUP),
    "api.list_orphans": Operation("maider-tagged VMs no session owns", (200, "OrphanList")),
    "api.adopt_orphan": Operation("Track an orphan VM as a session", (200, "Session"), errors=(422,)),
    "api.destroy_orphan": Operation("Destroy an orphan VM (tracked as a session until confirmed)", (202, "Session"),
                                    errors=(422,)),
}


def register(operations: dict[str, Operation], schemas: dict[str, Any] | None = None,
             path_params: dict[str, dict[str, Any]] | None = None) -> None:
    """Document a feature's endpoints from its own module (users, benchmarks, checks): one call at import time.

    A name registered twice with a different meaning is a programming error, so it raises instead of one module
    silently overwriting another's schema.
    """
    for table, entries in ((OPERATIONS, operations), (_RESPONSE_SCHEMAS, schemas or {}),
                           (_PATH_PARAMS, path_params or {})):
        for name, value in entries.items():
            if name in table and table[name] != value:
                raise ValueError(f"OpenAPI name {name!r} is already registered with another definition")
            table[name] = value


def _api_rules(url_map: Map) -> list[Rule]:
    return sorted((r for r in url_map.iter_rules() if r.endpoint.startswith("api.")), key=lambda r: r.rule)


def undocumented(url_map: Map) -> list[str]:
    """API endpoints without an entry in OPERATIONS."""
    return [r.endpoint for r in _api_rules(url_map) if r.endpoint not in OPERATIONS]


def document(url_map: Map) -> dict[str, Any]:
    """The OpenAPI 3.0 document of every documented API route."""
    paths: dict[str, dict[str, Any]] = {}
    for rule in _api_rules(url_map):
        operation = OPERATIONS.get(rule.endpoint)
        if operation is None:
            continue
        path = _ARG.sub(r"{\1}", rule.rule)
        for method in sorted(rule.methods - _IGNORED_METHODS):
            paths.setdefault(path, {})[method.lower()] = _operation(rule, method, operation)
    return {
        "openapi": "3.0.3",
        "info": {"title": "maider API", "version": "1",
                 "description": "The JSON API of a maider server: the CLI and scripts launch, follow and destroy "
                                "GPU sessions with it. Every route but /health needs the bearer token from "
                                "MAIDER_HOME/server.json. Errors are {\"error\": message, \"status\": code}; field "
                                "errors add \"fields\" (field → problem) and \"field\" (the first)."},
        "paths": paths,
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
                       "schemas": {**_RESPONSE_SCHEMAS, **{b.title: b.schema() for b in schemas.BODIES}}},
        "security": [{"bearer": []}],
    }


def _operation(rule: Rule, method: str, operation: Operation) -> dict[str, Any]:
    codes = set(operation.errors)
    if not operation.public:
        codes.add(401)
    if rule.arguments:
        codes.add(404)
    if operation.body is not None:
        codes |= {400, 415}
    if operation.query:
        codes.add(400)
    status, schema_name = operation.ok
    responses: dict[str, Any] = {str(status): _response(status, schema_name)}
    for code in sorted(codes):
        responses[str(code)] = _response(code, "Error")
    result: dict[str, Any] = {"operationId": rule.endpoint.removeprefix("api.") + f"_{method.lower()}",
                              "summary": operation.summary, "responses": responses}
    parameters = [{"name": arg, "in": "path", "required": True,
                   "schema": operation.path.get(arg) or _PATH_PARAMS[arg]} for arg in sorted(rule.arguments)]
    parameters += [{"name": name, "in": "query", "required": False, "schema": schema}
                   for name, schema in operation.query.items()]
    if parameters:
        result["parameters"] = parameters
    if operation.body is not None:
        result["requestBody"] = {"required": True, "content": {
            "application/json": {"schema": {"$ref": f"#/components/schemas/{operation.body.title}"}}}}
    if operation.public:
        result["security"] = []
    return result


def _response(status: int, schema_name: str) -> dict[str, Any]:
    return {"description": _REASONS.get(status, "See the message"),
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema_name}"}}}}


def _obj(properties: dict[str, Any], optional: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": [k for k in properties if k not in optional]}


def _t(kind: str, nullable: bool = False, **extra: Any) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": kind, **extra}
    if nullable:
        schema["nullable"] = True
    return schema


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


_TIME = {"type": "string", "format": "date-time"}
_TIME_OR_NULL = {**_TIME, "nullable": True}
_STR, _STR_OR_NULL, _INT, _INT_OR_NULL, _NUM, _BOOL = (
    _t("string"), _t("string", True), _t("integer"), _t("integer", True), _t("number"), _t("boolean"))

_RESPONSE_SCHEMAS: dict[str, Any] = {
    "Error": _obj({"error": _STR, "status": _INT, "field": _STR,
                   "fields": {"type": "object", "additionalProperties": _STR}}, optional=("field", "fields")),
    "Health": _obj({"ok": _BOOL, "service": _t("string", enum=["maider"]), "demo": _BOOL, "proof": _STR},
                   optional=("proof",)),
    "OpenApiDocument": _obj({"openapi": _STR, "info": _t("object"), "paths": _t("object")}),
    "Session": _obj({
        "uid": _STR, "name": _STR, "status": _t("string", enum=[s.value for s in SessionState]),
        "status_label": _STR, "status_reason": _STR_OR_NULL, "status_message": _STR_OR_NULL,
        "stage_detail": _STR_OR_NULL, "provider": _STR, "instance_id": _STR_OR_NULL, "region": _STR, "plan": _STR,
        "gpus": _INT, "gpu_name": _STR_OR_NULL, "model_id": _STR, "served_name": _STR, "hourly_price": _NUM,
        "runtime_seconds": _INT, "cost": _NUM, "created_at": _TIME_OR_NULL, "ready_at": _TIME_OR_NULL,
        "destroyed_at": _TIME_OR_NULL, "api_port": _INT_OR_NULL, "webui_port": _INT_OR_NULL, "tunnel_state": _STR,
        "max_model_len": _INT_OR_NULL, "vllm_config": _t("object", True), "keep_on_failure": _BOOL,
        "heal_attempts": _INT, "destroy_pending": _BOOL, "vm_alive": _BOOL, "workdir": _STR_OR_NULL,
        "ssh_host": _STR_OR_NULL, "ssh_port": _INT_OR_NULL,
        "created_by": _STR, "autostop_seconds": _INT_OR_NULL,
        "autostop_reason": _t("string", True, enum=["idle", "lifetime", "budget", None]),
        "failsafe_minutes": _INT_OR_NULL, "failsafe_deadline": _TIME_OR_NULL,
    }),
    "Orphan": _obj({"id": _INT, "provider": _STR, "instance_id": _STR, "label": _STR, "region": _STR, "plan": _STR,
                    "hourly_price": _NUM, "first_seen_at": _TIME_OR_NULL}),
    "SessionList": _obj({
        "sessions": {"type": "array", "items": _ref("Session")},
        "totals": _obj({"burn_rate": _NUM, "spent_today": _NUM, "spent_total": _NUM}),
        "orphans": {"type": "array", "items": _ref("Orphan")}, "demo": _BOOL}),
    "OrphanList": _obj({"orphans": {"type": "array", "items": _ref("Orphan")}}),
    "EventList": _obj({"events": {"type": "array", "items": _obj({
        "id": _INT, "at": _TIME_OR_NULL, "kind": _STR, "message": _STR, "actor": _STR,
        "detail": _t("object", True)})}}),
    "TunnelState": _obj({"name": _STR, "tunnel_state": _STR, "api_port": _INT_OR_NULL, "webui_port": _INT_OR_NULL}),
    "AiderFiles": _obj({"env_file": _STR, "metadata": _t("object"), "api_base": _STR, "model": _STR}),
    "CleanupResult": _obj({"removed": {"type": "array", "items": _STR},
                           "kept": {"type": "array", "items": _obj({"name": _STR, "why": _STR})}}),
}
