"""The /setup wizard over HTTP: each step's partial, errors next to fields, CSRF, Back, save, no secret in any page."""
from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest
from playwright.sync_api import expect

from app import create_app
from app.extensions import db
from engine_helpers import csrf_token, serve_in_thread, sign_in_owner

QWEN_32B_AWQ = "Qwen/Qwen2.5-Coder-32B-Instruct-AWQ"
QWEN_14B_AWQ = "Qwen/Qwen2.5-Coder-14B-Instruct-AWQ"
STATE = {"tier": "medium", "region": "us-ord", "plan": "g2-gpu-rtx4000a2-s"}
FULL_STATE = {**STATE, "model_id": QWEN_32B_AWQ, "context": "32768", "tp": "2"}
SAVED_LINODE = "saved-linode-token-0123456789"
SAVED_HF = "hf_savedHuggingFaceToken0123"


def make_app(tmp_path: Path, demo: bool):
    app = create_app({
        "TESTING": True, "MAIDER_DEMO": demo,
        "MAIDER_HOME": str(tmp_path / "maider-home"), "MAIDER_WORKDIR": str(tmp_path / "project"),
        "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'maider-home' / 't.db'}",
    })
    if "wizard" not in app.blueprints:  # until app/web registers it
        from app.web.wizard import bp

        app.register_blueprint(bp)
    return app


@pytest.fixture
def demo_app(tmp_path: Path):
    app = make_app(tmp_path, demo=True)
    yield app
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def client(demo_app):
    client = demo_app.test_client()
    sign_in_owner(demo_app, client)
    return client


@pytest.fixture
def csrf(client) -> dict[str, str]:
    return {"X-CSRFToken": csrf_token(client, "/setup/"), "HX-Request": "true"}


def post(client, csrf, path: str, data: dict[str, str]):
    response = client.post(path, data=data, headers=csrf)
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    return response.get_data(as_text=True)


def error_text(html: str, field: str) -> str:
    match = re.search(rf'<div class="error" id="{field}-error"[^>]*>(.*?)</div>', html, re.S)
    assert match, f"no error slot for {field}"
    return match.group(1).strip()


def hidden_state(html: str) -> dict[str, str]:
    return dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', html))


def test_setup_page_starts_at_the_cloud_then_the_tier_with_progress(client, csrf) -> None:
    response = client.get("/setup/")
    html = response.get_data(as_text=True)
    assert response.status_code == 200 and "<html" in html
    assert 'aria-current="step"' in html and "Cloud" in html and "Capability" in html and "Review &amp; save" in html
    assert "Which cloud runs the GPU?" in html
    assert re.search(r'<input type="radio" name="provider" value="simulated" checked>', html)  # demo mode
    assert re.search(r'name="provider" value="linode" disabled', html)
    assert "css/wizard.css" in html and "js/wizard.js" in html

    html = post(client, csrf, "/setup/provider", {"provider": "simulated"})
    assert hidden_state(html) == {"provider": "simulated"}
    assert re.search(r'<input type="radio" name="tier" value="small" checked>', html)
    for tier in ("medium", "large", "custom"):
        assert f'name="tier" value="{tier}"' in html


def test_each_step_returns_the_next_partial_carrying_the_choices(client, csrf) -> None:
    html = post(client, csrf, "/setup/tier", {"tier": "medium"})
    assert "<html" not in html and "Where should the GPU run?" in html
    assert hidden_state(html) == {"tier": "medium"}
    assert 'name="region" value="us-ord"' in html and "recommended" in html

    html = post(client, csrf, "/setup/region", {"tier": "medium", "region": "us-ord"})
    assert "Which GPU plan?" in html and hidden_state(html) == {"tier": "medium", "region": "us-ord"}
    recommended_row = re.search(r'value="g2-gpu-rtx4000a2-s" checked>.*?</label>', html, re.S).group(0)
    assert "recommended" in recommended_row and "$1.05" in recommended_row and "40 GB total" in recommended_row
    assert "too small for medium models" in html
    assert "g1-gpu-rtx6000" not in html  # not offered in us-ord

    html = post(client, csrf, "/setup/plan", STATE)
    assert "Which model?" in html and hidden_state(html) == STATE
    assert f'name="model" value="{QWEN_32B_AWQ}" checked' in html

    html = post(client, csrf, "/setup/model", {**STATE, "model": QWEN_32B_AWQ, "max_model_len": ""})
    assert "Review and save" in html and hidden_state(html) == FULL_STATE
    assert "Checks passed" in html and "tokens are optional" in html


def test_missing_choice_is_shown_next_to_the_field_with_status_200(client, csrf) -> None:
    html = post(client, csrf, "/setup/tier", {})
    assert error_text(html, "tier") == "Pick a capability tier."
    assert 'aria-invalid="true"' in html
    html = post(client, csrf, "/setup/plan", {"tier": "medium", "region": "us-ord"})
    assert error_text(html, "plan") == "Pick a GPU plan."


def test_a_plan_from_another_region_is_refused_next_to_the_field(client, csrf) -> None:
    html = post(client, csrf, "/setup/plan", {**STATE, "plan": "g1-gpu-rtx6000-1"})
    assert "Which GPU plan?" in html
    assert "plan &#39;g1-gpu-rtx6000-1&#39; is not offered in us-ord" in error_text(html, "plan")


def test_oversize_context_is_refused_next_to_the_context_field(client, csrf) -> None:
    data = {"tier": "small", "region": "us-ord", "plan": "g2-gpu-rtx4000a1-s", "model": QWEN_14B_AWQ,
            "max_model_len": "32768"}
    html = post(client, csrf, "/setup/model", data)
    assert "Which model?" in html
    message = error_text(html, "max_model_len")
    assert "largest context that fits: 29,696" in message
    assert "cheapest plan that fits 32K: g2-gpu-rtx4000a2-s at $1.05/h" in message
    assert 'value="32768"' in html  # what was typed stays in the field


def test_other_model_needs_an_id_and_an_unsizable_one_needs_a_context(client, csrf) -> None:
    html = post(client, csrf, "/setup/model", {**STATE, "model": "custom", "custom_model_id": ""})
    assert "Type a Hugging Face model id" in error_text(html, "custom_model_id")
    html = post(client, csrf, "/setup/model", {**STATE, "model": "custom", "custom_model_id": "someone/new-coder"})
    assert "could not be sized" in error_text(html, "max_model_len")
    html = post(client, csrf, "/setup/model", {**STATE, "model": "custom", "custom_model_id": "someone/new-coder",
                                               "max_model_len": "8192"})
    assert "Review and save" in html
    assert "sizing skipped: could not reach Hugging Face to size someone/new-coder" in html
    assert "was not checked" in html and "Checks passed" not in html  # never claim a fit that was not sized


def test_back_returns_to_the_previous_step_with_the_choice_kept(client, csrf) -> None:
    html = post(client, csrf, "/setup/step/region", FULL_STATE)
    assert "Where should the GPU run?" in html
    assert 'name="region" value="us-ord" checked' in html
    shown = hidden_state(html)
    assert shown == {**{k: v for k, v in FULL_STATE.items() if k != "region"}, "previous": "us-ord"}
    html = post(client, csrf, "/setup/region", {**shown, "region": "us-ord"})  # Next, same region: keeps the rest
    assert hidden_state(html)["model_id"] == QWEN_32B_AWQ
    html = post(client, csrf, "/setup/step/review", {"tier": "medium"})  # not reached yet: back to the start
    assert "How capable should the model be?" in html


def test_a_changed_answer_starts_the_later_steps_over(client, csrf) -> None:
    html = post(client, csrf, "/setup/step/plan", FULL_STATE)  # back to the plan step, then pick a 1-GPU plan
    shown = hidden_state(html)
    assert shown["previous"] == "g2-gpu-rtx4000a2-s"
    html = post(client, csrf, "/setup/plan", {**shown, "plan": "g2-gpu-rtx4000a1-s"})
    state = hidden_state(html)
    assert "model_id" not in state and "tp" not in state and "context" not in state
    html = post(client, csrf, "/setup/step/tier", FULL_STATE)
    html = post(client, csrf, "/setup/tier", {**hidden_state(html), "tier": "small"})
    assert set(hidden_state(html)) <= {"tier", "previous"}


def test_posts_without_the_csrf_token_are_refused(client, tmp_path: Path) -> None:
    response = client.post("/setup/tier", data={"tier": "small"})
    assert response.status_code == 400
    assert b"CSRF" in response.data
    # htmx gets the refusal without a swap (the panel shows it as a message), never the next step.
    response = client.post("/setup/save", data=FULL_STATE, headers={"HX-Request": "true"})
    assert "HX-Redirect" not in response.headers
    assert response.status_code == 200 and response.headers.get("HX-Reswap") == "none"
    assert "CSRF" in response.headers.get("HX-Trigger", "")
    assert not (tmp_path / "project" / ".env").exists()


def test_save_redirects_to_the_dashboard_with_a_flash_and_writes_0600_files(client, csrf, tmp_path: Path) -> None:
    workdir = tmp_path / "project"
    (workdir / ".env").write_text("# mine\nFOO=bar\n")
    response = client.post("/setup/save", data={**FULL_STATE, "linode_token": "", "hf_token": "hf_typedToken12345"},
                           headers=csrf)
    assert response.status_code == 200 and response.headers["HX-Redirect"] == "/"
    with client.session_transaction() as session:
        flashes = session.get("_flashes", [])
    assert any("Saved .env and .env.secrets" in message and "ready to launch" in message
               for _category, message in flashes)
    assert (workdir / ".env").read_text().startswith("# mine\nFOO=bar\nREGION=us-ord\n")
    assert "HUGGING_FACE_HUB_TOKEN=hf_typedToken12345" in (workdir / ".env.secrets").read_text()
    assert stat.S_IMODE((workdir / ".env.secrets").stat().st_mode) == 0o600


def test_save_without_htmx_answers_303(client, csrf) -> None:
    response = client.post("/setup/save", data=FULL_STATE, headers={"X-CSRFToken": csrf["X-CSRFToken"]})
    assert response.status_code == 303 and response.headers["Location"] == "/"


def test_no_token_value_ever_appears_in_a_response(client, csrf, tmp_path: Path) -> None:
    workdir = tmp_path / "project"
    (workdir / ".env.secrets").write_text(f"LINODE_TOKEN={SAVED_LINODE}\nHUGGING_FACE_HUB_TOKEN={SAVED_HF}\n")
    typed = "typed-secret-token-987654321"
    pages = [client.get("/setup/").get_data(as_text=True),
             post(client, csrf, "/setup/model", {**STATE, "model": QWEN_32B_AWQ}),
             post(client, csrf, "/setup/step/review", FULL_STATE)]
    # A refused save (context too long) re-renders the step: the typed token must not come back either.
    refused = post(client, csrf, "/setup/save", {**FULL_STATE, "context": "65536", "linode_token": typed})
    pages.append(refused)
    assert "Nothing was saved" in refused and "VLLM_MAX_MODEL_LEN" in refused
    assert "token found in .env.secrets" in pages[1]
    for html in pages:
        for secret in (SAVED_LINODE, SAVED_HF, typed):
            assert secret not in html
    assert typed not in (workdir / ".env.secrets").read_text()


def test_a_malformed_token_is_an_error_next_to_its_field(client, csrf) -> None:
    html = post(client, csrf, "/setup/save", {**FULL_STATE, "hf_token": "op://just-a-vault"})
    assert "op://vault/item/field" in error_text(html, "hf_token")
    assert "op://just-a-vault" not in html


@pytest.fixture
def real_client(tmp_path: Path):
    app = make_app(tmp_path, demo=False)
    client = app.test_client()
    sign_in_owner(app, client)
    yield client
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


def test_without_a_linode_token_the_region_step_explains_instead_of_failing(real_client) -> None:
    token = csrf_token(real_client, "/setup/")
    response = real_client.post("/setup/tier", data={"tier": "small"},
                                headers={"X-CSRFToken": token, "HX-Request": "true"})
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "could not list regions from linode: no Linode token" in html
    assert "Try again" in html and "Traceback" not in html


def test_the_saved_choices_are_marked_so_a_rerun_shows_what_changes(client, csrf, tmp_path: Path) -> None:
    (tmp_path / "project" / ".env").write_text("REGION=us-ord\nTYPE=g2-gpu-rtx4000a4-s\n")
    html = post(client, csrf, "/setup/region", {"tier": "medium", "region": "us-ord"})
    row = re.search(r'value="g2-gpu-rtx4000a4-s".*?</label>', html, re.S).group(0)
    assert "saved now" in row
    assert html.count("saved now") == 1


@pytest.fixture
def live_demo_url(demo_app, page):
    """The demo panel in a thread, with ``page`` signed in as the owner (the wizard is for admins)."""
    with serve_in_thread(demo_app) as url:
        page.goto(f"{url}/login?token={demo_app.extensions['maider_login_links'].mint()}")
        yield url


@pytest.mark.browser
def test_keyboard_journey_in_chromium(page, live_demo_url, tmp_path: Path) -> None:
    """Arrow keys pick, Enter goes on, focus lands on each new step, Back keeps the choice, Save lands on /."""
    violations: list[str] = []
    page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
    page.goto(live_demo_url + "/setup/")
    assert page.is_disabled("input[name=provider][value=linode]")  # demo mode: the simulated cloud only
    page.focus("input[name=provider][value=simulated]")
    page.keyboard.press("Enter")
    page.wait_for_selector("text=How capable should the model be?")
    # focus moves once htmx has settled the swap, a moment after the text appears
    expect(page.locator(".wizard-title")).to_be_focused()
    page.focus("input[name=tier][value=small]")
    page.keyboard.press("ArrowRight")  # radio group: small -> medium
    page.keyboard.press("Enter")
    page.wait_for_selector("text=Where should the GPU run?")
    expect(page.locator(".wizard-title")).to_be_focused()
    page.check("input[name=region][value=us-ord]")
    page.keyboard.press("Enter")
    page.wait_for_selector("text=Which GPU plan?")
    assert page.is_checked("input[name=plan][value=g2-gpu-rtx4000a2-s]")  # the recommended plan
    page.get_by_role("button", name="Back").click()
    page.wait_for_selector("text=Where should the GPU run?")
    assert page.is_checked("input[name=region][value=us-ord]")
    page.get_by_role("button", name="Next").click()
    page.wait_for_selector("text=Which GPU plan?")
    page.get_by_role("button", name="Next").click()
    page.wait_for_selector("text=Which model?")
    page.fill("#max_model_len", "999999")
    page.press("#max_model_len", "Enter")  # Enter in a field submits Next, not a progress step
    page.wait_for_selector("#max_model_len-error:not(:empty)")
    assert page.evaluate("document.activeElement.id") == "max_model_len"
    page.fill("#max_model_len", "")
    page.press("#max_model_len", "Enter")
    page.wait_for_selector("text=Checks passed")
    page.get_by_role("button", name="Save settings").click()
    page.wait_for_url(live_demo_url + "/")
    assert "ready to launch" in page.locator(".flash").inner_text()
    assert "MODEL_ID=Qwen/Qwen2.5-Coder-32B-Instruct-AWQ" in (tmp_path / "project" / ".env").read_text()
    assert violations == []


def test_a_problem_the_wizard_cannot_fix_says_where_to_fix_it(client, csrf, tmp_path: Path) -> None:
    (tmp_path / "project" / ".env").write_text("VLLM_DTYPE=bfloat16\n")
    state = {"tier": "small", "region": "us-east", "plan": "g1-gpu-rtx6000-1",
             "model_id": "Qwen/Qwen2.5-Coder-7B-Instruct-AWQ", "context": "16384", "tp": "1"}
    html = post(client, csrf, "/setup/step/review", state)
    assert "VLLM_DTYPE" in html and "change it in .env" in html
