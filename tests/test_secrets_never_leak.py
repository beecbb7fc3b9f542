"""A planted Linode token, HF token and the session's vLLM API key appear in no page, API answer, error page, log
line or database file -- only in .env.secrets, the VM's /opt/llm/.env and the user's .aider-env."""
from __future__ import annotations

from pathlib import Path

from app.engine.identity import load_identity
from app.extensions import db
from app.models import SessionState
from engine_helpers import LINODE_TOKEN, drive, in_state, launch

HF_TOKEN = "hf_planted_secret_0123456789"


def test_no_secret_in_pages_api_errors_logs_or_database(app, client, linode_world, caplog):
    caplog.set_level("DEBUG")
    workdir = linode_world["workdir"]
    (workdir / ".env.secrets").write_text(f"LINODE_TOKEN={LINODE_TOKEN}\nHUGGING_FACE_HUB_TOKEN={HF_TOKEN}\n")
    app.config["MAIDER_API_TOKEN"] = "api-token"
    launch(app, "leaky", workdir)
    ready = drive(app, "leaky", in_state(SessionState.READY, SessionState.FAILED))
    assert ready.status == "ready", ready.status_message
    with app.app_context():
        api_key = load_identity(Path(app.config["MAIDER_HOME"]), ready.uid).api_key
    vm_env = linode_world["vms"][0].env_text
    assert HF_TOKEN in vm_env and api_key in vm_env  # the VM does get them ...

    headers = {"Authorization": "Bearer api-token"}
    bodies = []
    for url in ["/", "/settings/", "/history/", "/setup/", f"/sessions/{ready.name}", "/no/such/page"]:
        bodies.append(client.get(url).get_data(as_text=True))
    for url in ["/api/v1/sessions", f"/api/v1/sessions/{ready.name}", f"/api/v1/sessions/{ready.name}/events"]:
        bodies.append(client.get(url, headers=headers).get_data(as_text=True))
    bodies.append(client.post("/api/v1/sessions", json={"name": "leaky"}, headers=headers).get_data(as_text=True))
    text = "\n".join(bodies)
    for secret in (LINODE_TOKEN, HF_TOKEN, api_key):
        assert secret not in text, "a secret reached a page or an API answer"
        assert secret not in caplog.text, "a secret reached the log"

    database = Path(app.config["SQLALCHEMY_DATABASE_URI"].removeprefix("sqlite:///"))
    with app.app_context():
        db.session.remove()
        db.engine.dispose()
    raw = b"".join(p.read_bytes() for p in database.parent.glob(database.name + "*"))
    for secret in (LINODE_TOKEN, HF_TOKEN, api_key):
        assert secret.encode() not in raw, "a secret reached the database"
