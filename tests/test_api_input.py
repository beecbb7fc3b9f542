"""Every bad body the attack on the API tried, refused with a clear 4xx and nothing created; the panel's forms accept
exactly what the API accepts; the OpenAPI document lists every route with the schemas the routes parse with."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import sqlalchemy as sa

from app.extensions import db
from app.models import OrphanInstance, Session
from app.web import schemas
from app.web.api import openapi
from test_web_sessions import make_session

TOKEN = "input-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
LAUNCHES = "/api/v1/sessions"


@pytest.fixture
def api(app, client):
    app.config.update(MAIDER_API_TOKEN=TOKEN, MAIDER_DEMO=True)
    with app.app_context():
        yield client
    from app.engine.runtime import runtime

    runtime(app).close()


def _sessions() -> int:
    db.session.expire_all()
    return db.session.scalar(sa.select(sa.func.count()).select_from(Session))


def _post_raw(client, path: str, data: str | bytes, content_type: str | None):
    headers = dict(AUTH)
    if content_type:
        headers["Content-Type"] = content_type
    return client.post(path, data=data, headers=headers)


@pytest.mark.parametrize("data, content_type, status, words", [
    ('{"name": "x"', "application/json", 400, "not valid JSON"),
    ("", "application/json", 400, "not valid JSON"),
    ('{"name": "ok-1"}', "text/plain", 415, "Content-Type: application/json"),
    ("name=ok-1", "application/x-www-form-urlencoded", 415, "Content-Type: application/json"),
    ('{"name": "ok-1"}', None, 415, "Content-Type: application/json"),
    ('["ok-1"]', "application/json", 400, "must be a JSON object, not a list"),
    ('"ok-1"', "application/json", 400, "must be a JSON object, not a string"),
    ("null", "application/json", 400, "must be a JSON object, not null"),
    ('{"max_model_len": Infinity}', "application/json", 400, "Infinity is not a JSON number"),
    ('{"max_model_len": NaN}', "application/json", 400, "NaN is not a JSON number"),
    ("[" * 100_000 + "]" * 100_000, "application/json", 400, "nested too deeply"),
    ('{"max_model_len": ' + "9" * 5000 + "}", "application/json", 400, "not valid JSON"),
    (b'{"name": "\xff\xfe"}', "application/json", 400, "not valid JSON"),
])
def test_a_body_that_is_not_a_json_object_launches_nothing(api, data, content_type, status, words):
    response = _post_raw(api, LAUNCHES, data, content_type)
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.json["status"] == status and words in response.json["error"]
    assert _sessions() == 0


@pytest.mark.parametrize("body, field, words", [
    ({"name": "trail\n"}, "name", "'trail\\n' is not a valid session name"),
    ({"name": 7}, "name", "must be a string, not a whole number"),
    ({"name": ["a"]}, "name", "must be a string, not a list"),
    ({"name": {"deep": {"er": [1]}}}, "name", "must be a string, not an object"),
    ({"name": "Bad Name"}, "name", "is not a valid session name"),
    ({"name": "a" * 41}, "name", "at most 40 characters"),
    ({"keep_on_failure": "false"}, "keep_on_failure", "must be true or false (a JSON boolean), not a string"),
    ({"keep_on_failure": 0}, "keep_on_failure", "must be true or false"),
    ({"max_model_len": -1}, "max_model_len", "must be between 256 and 10,000,000"),
    ({"max_model_len": 1.9}, "max_model_len", "must be a whole number, not a number with a fraction"),
    ({"max_model_len": 4096.0}, "max_model_len", "must be a whole number"),
    ({"max_model_len": True}, "max_model_len", "must be a whole number, not a boolean"),
    ({"max_model_len": "lots"}, "max_model_len", "must be a whole number, not a string 'lots'"),
    ({"max_model_len": 10 ** 30}, "max_model_len", "must be between"),
    ({"tensor_parallel_size": 0}, "tensor_parallel_size", "must be between 1 and 16"),
    ({"served_name": "<script>alert(1)</script>"}, "served_name", "is not a served model name"),
    ({"served_name": "x" * 10_000}, "served_name", "at most 64 characters, not 10,000"),
    ({"served_name": "coder\u202egnp.exe"}, "served_name", "is not a served model name"),
    ({"served_name": "two words"}, "served_name", "is not a served model name"),
    ({"model_id": "org/model\n"}, "model_id", "is not a model id"),
    ({"model_id": "../../etc/passwd"}, "model_id", "is not a model id"),
    ({"region": "US-ORD"}, "region", "is not a region id"),
    ({"plan": "g2 gpu"}, "plan", "is not a plan id"),
    ({"workdir": "relative/path"}, "workdir", "is not an absolute path"),
    ({"workdir": "/tmp/x\n"}, "workdir", "is not an absolute path"),
    ({"unknown": 1}, "unknown", "is not a field of this request"),
])
def test_a_bad_field_gets_a_400_naming_it_and_launches_nothing(api, body, field, words):
    response = api.post(LAUNCHES, json=body, headers=AUTH)
    assert response.status_code == 400, response.get_data(as_text=True)
    answer = response.json
    assert answer["status"] == 400 and answer["field"] == field and field in answer["fields"]
    assert words in answer["fields"][field] and answer["error"].startswith(f"{field}: ")
    assert _sessions() == 0


def test_every_bad_field_is_named_at_once(api):
    response = api.post(LAUNCHES, json={"name": 1, "max_model_len": "x", "keep_on_failure": "yes"}, headers=AUTH)
    assert response.status_code == 400
    assert set(response.json["fields"]) == {"name", "max_model_len", "keep_on_failure"}


def test_keep_on_failure_is_a_json_boolean(api):
    kept = api.post(LAUNCHES, json={"name": "kept", "keep_on_failure": True}, headers=AUTH)
    plain = api.post(LAUNCHES, json={"name": "plain", "keep_on_failure": False}, headers=AUTH)
    assert kept.status_code == plain.status_code == 201
    assert kept.json["keep_on_failure"] is True and plain.json["keep_on_failure"] is False


def test_workdir_must_be_an_existing_directory_of_the_servers_user(api, tmp_path):
    for path, words in (("/etc", "is a system folder"), ("/", "is a system folder"),
                        ("/usr/lib", "is a system folder"), (str(tmp_path / "missing"), "is not an existing directory"),
                        (str(tmp_path / "project" / ".env"), "is not an existing directory")):
        (tmp_path / "project" / ".env").touch()
        response = api.post(LAUNCHES, json={"workdir": path}, headers=AUTH)
        assert response.status_code == 422 and response.json["field"] == "workdir", path
        assert words in response.json["fields"]["workdir"], (path, response.json)
    assert not Path("/etc/.aider-env").exists()
    assert _sessions() == 0


def test_workdir_of_another_user_is_refused(api, tmp_path):
    if os.geteuid() == 0:
        foreign = tmp_path / "theirs"
        foreign.mkdir()
        os.chown(foreign, 65534, 65534)
    else:
        foreign = Path("/tmp").resolve()  # owned by root
    response = api.post(LAUNCHES, json={"workdir": str(foreign)}, headers=AUTH)
    assert response.status_code == 422 and "belongs to another user" in response.json["fields"]["workdir"]
    assert _sessions() == 0


def test_a_workdir_of_ones_own_is_used_resolved(api, tmp_path):
    own = tmp_path / "mine"
    own.mkdir()
    (tmp_path / "link").symlink_to(own)
    response = api.post(LAUNCHES, json={"name": "mine", "workdir": str(tmp_path / "link")}, headers=AUTH)
    assert response.status_code == 201 and response.json["workdir"] == str(own.resolve())


def test_cleanup_force_must_be_a_boolean_so_a_running_vm_is_never_forgotten(api):
    running = make_session("ready", name="running")
    response = api.post("/api/v1/cleanup", json={"session": "running", "force": "false"}, headers=AUTH)
    assert response.status_code == 400 and response.json["field"] == "force"
    db.session.expire_all()
    kept = db.session.get(Session, running.id)
    assert kept.destroyed_at is None and kept.status == "ready"
    alone = api.post("/api/v1/cleanup", json={"force": True}, headers=AUTH)
    assert alone.status_code == 422 and "--force needs --session" in alone.json["error"]


def test_switch_model_needs_a_model_id_of_the_right_shape(api):
    make_session("ready", name="up")
    for body, field in (({}, "model_id"), ({"model_id": None}, "model_id"), ({"model_id": "x"}, "model_id"),
                        ({"model_id": "a/b", "max_model_len": -5}, "max_model_len")):
        response = api.post("/api/v1/sessions/up/model", json=body, headers=AUTH)
        assert response.status_code == 400 and response.json["field"] == field, (body, response.json)


def test_huge_ids_and_parameters_get_4xx_not_500(api):
    make_session("ready", name="up")
    assert api.post(f"/api/v1/orphans/{10 ** 30}/adopt", headers=AUTH).status_code == 404
    assert api.delete(f"/api/v1/orphans/{2 ** 63}", headers=AUTH).status_code == 404
    assert api.delete("/api/v1/orphans/-1", headers=AUTH).status_code == 404
    for after in (str(10 ** 30), "-1", "1.5", "x"):
        response = api.get(f"/api/v1/sessions/up/events?after={after}", headers=AUTH)
        assert response.status_code == 400 and response.json["field"] == "after", after
    unknown = api.get("/api/v1/sessions?limit=5", headers=AUTH)
    assert unknown.status_code == 400 and unknown.json["field"] == "limit"


def test_a_taken_name_is_409(api):
    assert api.post(LAUNCHES, json={"name": "taken"}, headers=AUTH).status_code == 201
    again = api.post(LAUNCHES, json={"name": "taken"}, headers=AUTH)
    assert again.status_code == 409 and "a session named 'taken' already exists" in again.json["error"]
    assert _sessions() == 1


def test_a_launch_the_rules_refuse_is_422(api):
    response = api.post(LAUNCHES, json={"region": "zz-nowhere"}, headers=AUTH)
    assert response.status_code == 422 and "unknown region 'zz-nowhere'" in response.json["error"]
    assert _sessions() == 0


@pytest.mark.parametrize("rule, good, bad", [
    (schemas.SESSION_NAME, ["a", "qwen-1", "a" * 40], ["", "A", "-a", "a" * 41, "a_b", "a b", "trail\n", "é"]),
    (schemas.MODEL_ID, ["Qwen/Qwen2.5-Coder-7B-Instruct-AWQ", "a/b"],
     ["a", "a/b/c", "/a", "a/", "a/b\n", "a/<b>", "a" * 100 + "/b"]),
    (schemas.REGION, ["us-ord", "de-fra-2", "nyc2", "us-east-1", "own"], ["US-ORD", "us", "us_ord", "us-ord\n"]),
    (schemas.PLAN, ["g2-gpu-rtx4000a1-s", "gpu-l40sx1-48gb", "g6.xlarge"], ["G2", "g2 gpu", "g2\n", "-g2"]),
])
def test_the_panel_form_and_the_api_accept_the_same_values(app, rule, good, bad):
    from app.web.sessions.forms import LaunchForm

    field = {schemas.SESSION_NAME: "name", schemas.MODEL_ID: "model_id", schemas.REGION: "region",
             schemas.PLAN: "plan"}[rule]
    for value in good + bad:
        with app.test_request_context("/sessions", method="POST", data={field: value}):
            form = LaunchForm()
            form_ok = form.validate() or field not in form.errors
        try:
            rule.check(value)
            api_ok = True
        except ValueError:
            api_ok = False
        stripped = value.strip()  # the form strips what the user typed; a JSON body is taken as sent
        expected = value in good or (stripped != value and _valid(rule, stripped))
        assert api_ok == (value in good), value
        assert form_ok == (expected or stripped == ""), value


def _valid(rule, value: str) -> bool:
    try:
        rule.check(value)
        return True
    except ValueError:
        return False


def test_the_openapi_document_lists_every_route_with_the_parsed_schemas(app, client):
    app.config["MAIDER_API_TOKEN"] = TOKEN
    assert client.get("/api/v1/openapi.json").status_code == 401
    document = client.get("/api/v1/openapi.json", headers=AUTH).json
    assert document["openapi"].startswith("3.0")
    missing = openapi.undocumented(app.url_map)
    assert missing == [], f"API routes without an openapi.Operation (see app/web/api/benchmarks.py): {missing}"
    operations = {(method.upper(), path) for path, item in document["paths"].items() for method in item}
    routes = {(method, openapi._ARG.sub(r"{\1}", rule.rule)) for rule in app.url_map.iter_rules()
              if rule.endpoint.startswith("api.") for method in rule.methods - {"HEAD", "OPTIONS"}}
    assert operations == routes
    launch = document["paths"]["/api/v1/sessions"]["post"]
    assert set(launch["responses"]) >= {"201", "400", "401", "409", "415", "422"}
    assert launch["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/LaunchRequest")
    assert document["components"]["schemas"]["LaunchRequest"] == schemas.LAUNCH.schema()
    name = document["components"]["schemas"]["LaunchRequest"]["properties"]["name"]
    assert name["pattern"] == f"^(?:{schemas.SESSION_NAME.pattern})$" and name["maxLength"] == 40
    assert document["paths"]["/api/v1/health"]["get"]["security"] == []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if path != "/api/v1/health":
                assert "401" in operation["responses"], (method, path)
            if "requestBody" in operation:
                assert {"400", "415"} <= set(operation["responses"]), (method, path)


def test_orphan_routes_still_work_with_bounded_ids(api):
    orphan = OrphanInstance(provider="simulated", instance_id="4242", label="maider-x", region="us-ord",
                            plan="g2-gpu-rtx4000a1-s")
    db.session.add(orphan)
    db.session.commit()
    response = api.post(f"/api/v1/orphans/{orphan.id}/adopt", headers=AUTH)
    assert response.status_code == 200 and response.json["instance_id"] == "4242"
    assert json.loads(response.get_data())["name"] == "orphan-4242"


def test_a_body_over_the_size_limit_is_413(api):
    response = _post_raw(api, LAUNCHES, '{"name": "' + "a" * (3 * 1024 * 1024) + '"}', "application/json")
    assert response.status_code == 413 and response.json["status"] == 413
    assert _sessions() == 0
