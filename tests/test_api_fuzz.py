"""schemathesis against the published /api/v1/openapi.json, through the real app in demo mode (no VM I/O can hang):
every answer is a documented status with a body that matches its schema, never a 5xx, and no request creates a
session unless it was a launch the server accepted (201) with a body valid under the launch schema (or an orphan
VM taken into maider's books).

Requests go to random names and ids, and to seeded rows (a ready session, a failed one with its VM kept, an ended
one, an orphan VM), so the bodies and parameters reach the services, not only the 404 of an unknown name.
"""
from __future__ import annotations

import uuid
from datetime import timedelta

import jsonschema_rs
import pytest
import schemathesis
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.config import SchemathesisConfig

from app.engine.identity import ensure_identity
from app.extensions import db
from app.models import OrphanInstance, Session, utcnow
from app.web import schemas
from app.web.api.openapi import OPERATIONS

TOKEN = "fuzz-token-for-the-api"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
EXAMPLES_PER_OPERATION = 60  # both modes, every operation: well under two minutes on 2 cores
# A request valid under the published schema may only be refused by maider's rules (422), a missing session (404)
# or a taken name (409): never 400, so the schema is exactly as strict as the server's parser.
CONFIG = SchemathesisConfig.from_dict({"checks": {"positive_data_acceptance": {
    "expected-statuses": ["2XX", "404", "409", "422"]}}})
LAUNCH_BODY = jsonschema_rs.validator_for(
    {**schemas.LAUNCH.schema(), "$schema": "http://json-schema.org/draft-04/schema#"})
# Routes that add a session row when they succeed: the launch, and the two that take an orphan VM into the books.
CREATES = {("POST", "/api/v1/sessions"): 201, ("POST", "/api/v1/orphans/{orphan_id}/adopt"): 200,
           ("DELETE", "/api/v1/orphans/{orphan_id}"): 202}


def _seed(app, tag: str) -> dict[str, list]:
    """Rows the fuzzer's requests can reach: sessions in three states and two orphan VMs (fresh for each route, as
    a destroy or a cleanup changes them)."""
    now = utcnow()
    names, orphan_ids = [], []
    with app.app_context():
        for status, extra in (("ready", {"api_port": 18000, "webui_port": 13000, "tunnel_state": "up",
                                         "ready_at": now, "max_model_len": 32768}),
                              ("failed", {"status_reason": "vllm_failed"}),
                              ("destroyed", {"status_reason": "user_requested", "destroyed_at": now})):
            uid = uuid.uuid4().hex
            db.session.add(Session(
                uid=uid, name=f"{tag}-{status}", provider="simulated", label=f"maider-{uid[:12]}", region="us-ord",
                plan="g2-gpu-rtx4000a1-s", gpus=1, model_id="Qwen/Qwen2.5-Coder-7B-Instruct-AWQ",
                served_name="coder", hourly_price=0.52, status=status, instance_id=f"{tag}-{status}",
                created_at=now - timedelta(minutes=5), provider_created_at=now - timedelta(minutes=4),
                workdir=app.config["MAIDER_WORKDIR"], **extra))
            ensure_identity(app.config["MAIDER_HOME"], uid)
            names.append(f"{tag}-{status}")
        for number in (1, 2):
            orphan = OrphanInstance(provider="simulated", instance_id=f"{tag}-{number}", label=f"maider-{tag}-{number}",
                                    region="us-ord", plan="g2-gpu-rtx4000a1-s", hourly_price=0.52)
            db.session.add(orphan)
            db.session.flush()
            orphan_ids.append(orphan.id)
        db.session.commit()
        db.session.remove()
    return {"name": names, "orphan_id": orphan_ids}


@pytest.fixture
def fuzzed_app(app):
    app.config.update(MAIDER_API_TOKEN=TOKEN, MAIDER_DEMO=True)
    yield app
    from app.engine.runtime import runtime

    runtime(app).close()


def _sessions(app) -> int:
    with app.app_context():
        count = db.session.scalar(sa.select(sa.func.count()).select_from(Session))
        db.session.remove()
        return count


def _check(app, case) -> None:
    """One generated request: schemathesis's checks, no 5xx, and a session created only by an accepted creation."""
    before = _sessions(app)
    response = case.call_and_validate(headers=AUTH)
    created = _sessions(app) - before
    assert response.status_code < 500
    route = (case.operation.method.upper(), case.operation.path)
    if CREATES.get(route) == response.status_code:
        assert created == 1
        if route == ("POST", "/api/v1/sessions"):
            assert case.media_type == "application/json" and isinstance(case.body, dict)
            assert LAUNCH_BODY.is_valid({k: v for k, v in case.body.items() if v is not None}), case.body
    else:
        assert created == 0, f"{case.operation.label} answered {response.status_code} and created a session"


def _strategy(operation, mode: GenerationMode, seeded: dict[str, list]):
    """Random values everywhere, and the same requests aimed at each seeded row."""
    strategies = [operation.as_strategy(generation_mode=mode)]
    for parameter, values in seeded.items():
        if "{" + parameter + "}" in operation.path:
            strategies += [operation.as_strategy(generation_mode=mode, path_parameters={parameter: value})
                           for value in values]
    return st.one_of(strategies)


@pytest.mark.slow
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_every_answer_follows_the_schema_and_only_valid_launches_create_sessions(fuzzed_app, mode):
    api = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", fuzzed_app, headers=AUTH, config=CONFIG)
    operations = [result.ok() for result in api.get_all_operations()]
    assert len(operations) == len(OPERATIONS) - 1  # schemathesis leaves out the route of the document itself
    for number, operation in enumerate(operations):
        seeded = _seed(fuzzed_app, f"op{number}")

        @given(case=_strategy(operation, mode, seeded))
        @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        def fuzz(case) -> None:
            _check(fuzzed_app, case)

        fuzz()
