"""The OpenAI-compatible proxy, as a teammate's OpenAI client uses it: the panel served by waitress, a real tunnel
to a simulated VM (real SSH, fake vLLM) through the real linode_api4 SDK, and httpx streaming a chat completion."""
from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from app.domain.openai_stream import SseUsageReader
from app.extensions import db
from app.models import Session, SessionState
from app.services import model_proxy
from app.services import users as users_service
from app.simulator.fake_vllm import LoopbackHttpServer
from app.simulator.vm import VmBehaviour
from app.web.proxy.routes import close_upstream
from engine_helpers import csrf_token, drive, in_state, launch, sign_in_owner


@contextmanager
def waitress_in_thread(app) -> Iterator[str]:
    """The panel as ``maider serve`` serves it (waitress), on a free loopback port."""
    server = LoopbackHttpServer(app, threads=4)
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        server.stop()


@pytest.fixture
def ready(app, linode_world):
    """A ready session reached through maider's tunnel; its fake vLLM streams a token every 20 ms."""
    linode_world["behaviour"]["value"] = VmBehaviour.fast(itl_s=0.02, tokens_per_reply=12)
    name = launch(app, "shared", linode_world["workdir"])
    session = drive(app, name, in_state(SessionState.READY, SessionState.FAILED))
    assert session.status == "ready", session.status_message
    yield session
    close_upstream(app)


@pytest.fixture
def keys(app):
    with app.app_context():
        ana = users_service.add_user("ana", "viewer", actor="test").user
        bo = users_service.add_user("bo", "operator", actor="test").user
        return {"ana": users_service.create_api_key(ana, "test"), "bo": users_service.create_api_key(bo, "test")}


def _chat(stream: bool, **extra) -> dict:
    return {"model": "coder", "messages": [{"role": "user", "content": "hi"}], "stream": stream, **extra}


def test_a_chat_completion_streams_through_the_proxy_token_by_token(app, ready, keys):
    with waitress_in_thread(app) as url:
        base = f"{url}/sessions/{ready.name}/openai/v1"
        started = time.monotonic()
        arrivals, events = [], []
        with httpx.stream("POST", f"{base}/chat/completions", json=_chat(True),
                          headers={"Authorization": f"Bearer {keys['ana']}"}, timeout=30) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            for line in response.iter_lines():
                if line.startswith("data: "):
                    arrivals.append(time.monotonic() - started)
                    events.append(line[6:])
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text.startswith("Sure")
    # The client did not ask for usage: the usage-only chunk maider asked vLLM for is not passed on.
    assert all(c["choices"] for c in chunks)
    # Tokens arrive as they are made (20 ms apart), not in one burst at the end: they spread over the reply.
    assert len(arrivals) >= 10 and arrivals[-2] - arrivals[1] > 0.1
    with app.app_context():
        rows = {row.user_name: row for row in model_proxy.usage_for(db.session.get(Session, ready.id))}
        assert rows["ana"].requests == 1 and rows["ana"].prompt_tokens > 0 and rows["ana"].completion_tokens == 12


def test_a_client_that_asks_for_usage_gets_it(app, ready, keys):
    with waitress_in_thread(app) as url:
        response = httpx.post(f"{url}/sessions/{ready.name}/openai/v1/chat/completions",
                              json=_chat(True, stream_options={"include_usage": True}),
                              headers={"Authorization": f"Bearer {keys['bo']}"}, timeout=30)
    chunks = [json.loads(line[6:]) for line in response.text.splitlines()
              if line.startswith("data: ") and line != "data: [DONE]"]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 12


def test_models_and_plain_completions_are_counted_per_user(app, ready, keys, client):
    with waitress_in_thread(app) as url:
        base = f"{url}/sessions/{ready.name}/openai/v1"
        listed = httpx.get(f"{base}/models", headers={"Authorization": f"Bearer {keys['ana']}"})
        assert [m["id"] for m in listed.json()["data"]] == ["coder"]
        for user in ("ana", "bo", "bo"):
            done = httpx.post(f"{base}/chat/completions", json=_chat(False),
                              headers={"Authorization": f"Bearer {keys[user]}"}, timeout=30)
            assert done.status_code == 200 and done.json()["usage"]["completion_tokens"] == 12
    page = client.get(f"/sessions/{ready.name}").get_data(as_text=True)
    assert 'id="proxy-usage"' in page
    rows = {m: page.split(f'id="usage-{m}"')[1].split("</tr>")[0] for m in ("ana", "bo")}
    assert ">2<" in rows["ana"] and ">2<" in rows["bo"]  # requests: models + one chat; two chats
    assert ">24<" in rows["bo"]  # completion tokens


@pytest.mark.parametrize("authorization", [None, "Bearer nope", "Bearer mk-not-a-key", "Basic YTpi"])
def test_a_wrong_or_missing_key_gets_401_in_openai_shape(app, ready, keys, authorization):
    headers = {"Authorization": authorization} if authorization else {}
    with waitress_in_thread(app) as url:
        response = httpx.post(f"{url}/sessions/{ready.name}/openai/v1/chat/completions", json=_chat(False),
                              headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"


def test_a_removed_user_or_a_replaced_key_stops_working_at_once(app, ready, keys):
    with waitress_in_thread(app) as url:
        endpoint = f"{url}/sessions/{ready.name}/openai/v1/models"
        assert httpx.get(endpoint, headers={"Authorization": f"Bearer {keys['ana']}"}).status_code == 200
        with app.app_context():
            users_service.remove_user("ana", actor="test")
            bo = users_service.get_user("bo")
            new_key = users_service.create_api_key(bo, "test")
        assert httpx.get(endpoint, headers={"Authorization": f"Bearer {keys['ana']}"}).status_code == 401
        assert httpx.get(endpoint, headers={"Authorization": f"Bearer {keys['bo']}"}).status_code == 401
        assert httpx.get(endpoint, headers={"Authorization": f"Bearer {new_key}"}).status_code == 200


def test_the_vm_key_never_reaches_the_client(app, ready, keys):
    from app.engine.identity import load_identity
    from pathlib import Path

    with app.app_context():
        vm_key = load_identity(Path(app.config["MAIDER_HOME"]), ready.uid).api_key
    with waitress_in_thread(app) as url:
        response = httpx.post(f"{url}/sessions/{ready.name}/openai/v1/chat/completions", json=_chat(True),
                              headers={"Authorization": f"Bearer {keys['bo']}"}, timeout=30)
    assert vm_key not in response.text and vm_key not in str(response.headers)


def test_a_session_that_is_not_ready_answers_at_once_with_a_clear_error(app, linode_world, keys):
    launch(app, "early", linode_world["workdir"])  # requested: no worker has run yet
    with waitress_in_thread(app) as url:
        response = httpx.post(f"{url}/sessions/early/openai/v1/chat/completions", json=_chat(False),
                              headers={"Authorization": f"Bearer {keys['bo']}"}, timeout=5)
        missing = httpx.get(f"{url}/sessions/nosuch/openai/v1/models",
                            headers={"Authorization": f"Bearer {keys['bo']}"}, timeout=5)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "session_not_ready" and "not ready" in response.json()["error"]["message"]
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "session_not_found"


def test_a_body_that_is_not_json_is_refused(app, ready, keys):
    with waitress_in_thread(app) as url:
        response = httpx.post(f"{url}/sessions/{ready.name}/openai/v1/chat/completions", content=b"stream=true",
                              headers={"Authorization": f"Bearer {keys['bo']}", "Content-Type": "text/plain"})
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_body"


def test_proxied_requests_keep_the_idle_watchdog_away(app, ready, keys):
    from app.models import Session, utcnow
    from datetime import timedelta

    with app.app_context():
        row = db.session.get(Session, ready.id)
        row.last_activity_at = utcnow() - timedelta(hours=2)
        db.session.commit()
    with waitress_in_thread(app) as url:
        base, auth = f"{url}/sessions/{ready.name}/openai/v1", {"Authorization": f"Bearer {keys['bo']}"}
        httpx.get(f"{base}/models", headers=auth)  # listing models is not use
        with app.app_context():
            assert utcnow() - db.session.get(Session, ready.id).last_activity_at > timedelta(hours=1)
        httpx.post(f"{base}/chat/completions", json=_chat(False), headers=auth, timeout=30)
    with app.app_context():
        assert utcnow() - db.session.get(Session, ready.id).last_activity_at < timedelta(minutes=1)


def test_my_api_key_box_shows_a_new_key_once(app, ready, client):
    headers = {"HX-Request": "true", "X-CSRFToken": csrf_token(client)}
    response = client.post("/account/api-key", data={"session": ready.name}, headers=headers)
    body = response.get_data(as_text=True)
    key = body.split("export MAIDER_API_KEY=")[1].split("<")[0]
    assert key.startswith("mk-")
    page = client.get(f"/sessions/{ready.name}").get_data(as_text=True)
    assert key not in page and key[:10] in page  # afterwards only its first characters identify it


def test_sse_reader_passes_events_whole_and_reads_usage_split_anywhere():
    stream = (b'data: {"choices":[{"delta":{"content":"a"}}],"usage":null}\n\n'
              b'data: {"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":7,"total_tokens":12}}\n\n'
              b"data: [DONE]\n\n")
    for cut in range(1, len(stream)):
        reader = SseUsageReader(drop_usage_chunk=True)
        out = reader.feed(stream[:cut]) + reader.feed(stream[cut:]) + reader.flush()
        assert out == stream.replace(stream.split(b"\n\n")[1] + b"\n\n", b"")
        assert (reader.usage.prompt_tokens, reader.usage.completion_tokens) == (5, 7)


def test_stream_must_be_a_json_boolean(app, ready, keys):
    with waitress_in_thread(app) as url:
        response = httpx.post(f"{url}/sessions/{ready.name}/openai/v1/chat/completions", json=_chat("true"),
                              headers={"Authorization": f"Bearer {keys['bo']}"})
    assert response.status_code == 400 and "'stream' must be true or false" in response.json()["error"]["message"]


def test_when_every_proxy_slot_is_busy_the_next_request_gets_429_and_the_panel_still_answers(app, linode_world, keys,
                                                                                           client):
    linode_world["behaviour"]["value"] = VmBehaviour.fast(itl_s=0.1, tokens_per_reply=40)  # a 4 s stream
    slow = drive(app, launch(app, "slow", linode_world["workdir"]), in_state(SessionState.READY, SessionState.FAILED))
    app.config["MAIDER_PROXY_SLOTS"] = 1
    with waitress_in_thread(app) as url:
        base, auth = f"{url}/sessions/{slow.name}/openai/v1", {"Authorization": f"Bearer {keys['bo']}"}
        with httpx.stream("POST", f"{base}/chat/completions", json=_chat(True), headers=auth, timeout=30) as held:
            lines = held.iter_lines()
            next(lines)  # the one slot is taken while this stream runs
            refused = httpx.post(f"{base}/chat/completions", json=_chat(False), headers=auth, timeout=5)
            assert refused.status_code == 429 and refused.json()["error"]["code"] == "too_many_requests"
            assert client.get("/").status_code == 200
            for _ in lines:  # read the stream to its end
                pass
        again = httpx.get(f"{base}/models", headers=auth, timeout=30)
        assert again.status_code == 200  # the slot came back when the stream ended
    close_upstream(app)


def test_a_teammate_on_the_shared_address_gets_the_endpoint_not_a_dead_open_webui_link(app, ready, client):
    local = client.get(f"/sessions/{ready.name}").get_data(as_text=True)
    assert 'id="webui-frame"' in local
    shared = client.get(f"/sessions/{ready.name}", environ_overrides={"maider.shared": True}).get_data(as_text=True)
    assert 'id="webui-frame"' not in shared and "/webui" not in shared
    assert "OpenAI-compatible endpoint" in shared
