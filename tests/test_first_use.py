"""What a first-time user tripped over, each as they met it: demo-mode CLI checks, the project folder a launch
belongs to, the wording of fit errors and switches, and the small things on the pages."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from app.cli import main
from app.extensions import db
from app.services import project_folders
from test_web_sessions import HX, csrf_headers, make_session, text

DEMO_ENV = "REGION=us-ord\nTYPE=g2-gpu-rtx4000a1-s\nMODEL_ID=Qwen/Qwen2.5-Coder-7B-Instruct-AWQ\n"


@pytest.fixture
def ctx(app):
    with app.app_context():
        yield app


# ---- the CLI in demo mode ----------------------------------------------------------------------------------------

def test_validate_without_a_token_checks_everything_against_the_demo_cloud(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text(DEMO_ENV)
    result = CliRunner().invoke(main, ["validate"])
    assert result.exit_code == 0, result.output + result.stderr
    assert "demo mode" in result.stderr
    assert "✓ configuration is valid: Qwen/Qwen2.5-Coder-7B-Instruct-AWQ on g2-gpu-rtx4000a1-s in us-ord" in result.output
    assert "✗" not in result.output


def test_validate_in_demo_mode_still_finds_a_wrong_plan_in_few_words(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text(DEMO_ENV.replace("g2-gpu-rtx4000a1-s", "g9-nonsense"))
    result = CliRunner().invoke(main, ["validate"])
    assert result.exit_code == 1
    [line] = [line for line in result.output.splitlines() if line.startswith("✗ TYPE")]
    assert "unknown GPU plan 'g9-nonsense'" in line and "and 9 more ('maider list-types' lists them)" in line


def test_validate_remembers_the_folder_for_the_panel(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text(DEMO_ENV)
    CliRunner().invoke(main, ["validate"])
    assert project_folders.remembered()[0] == str(tmp_path.resolve())


# ---- the project folder in the panel -----------------------------------------------------------------------------

def test_the_launch_card_names_its_project_folder(client, ctx):
    page = text(client.get("/"))
    assert f'data-testid="launch-folder">{ctx.config["MAIDER_WORKDIR"]}</code>' in page
    assert "Another project folder" in page


def test_the_dashboard_opens_on_the_folder_the_cli_last_saved_to(client, ctx, tmp_path):
    other = tmp_path / "webapp"
    other.mkdir()
    (other / ".env").write_text(DEMO_ENV.replace("us-ord", "de-fra-2"))
    project_folders.remember(other)  # as 'maider wizard' does after saving there
    page = text(client.get("/"))
    assert f'data-testid="launch-folder">{other}</code>' in page
    assert "de-fra-2" in page and "Not ready to launch" in page  # saved; only the token is missing
    ctx.config["MAIDER_DEMO"] = True
    page = text(client.get("/"))
    assert "Saved configuration" in page and "de-fra-2" in page


def test_picking_a_folder_shows_its_configuration_and_refuses_a_missing_one(client, ctx, tmp_path):
    other = tmp_path / "webapp"
    other.mkdir()
    (other / ".env").write_text(DEMO_ENV.replace("us-ord", "jp-osa"))
    body = text(client.get("/launch", query_string={"workdir": str(other)}, headers=HX))
    assert f'data-testid="launch-folder">{other}</code>' in body and "jp-osa" in body
    assert str(other) not in project_folders.remembered()  # a look is not a choice: only a launch remembers it
    missing = text(client.get("/launch", query_string={"workdir": str(tmp_path / "nope")}, headers=HX))
    assert "is not an existing directory" in missing and 'id="launch-folder-error"' in missing


def test_a_launch_keeps_its_folder_and_the_copy_command_uses_it(client, ctx, tmp_path):
    ctx.config["MAIDER_DEMO"] = True
    other = tmp_path / "webapp"
    other.mkdir()
    response = client.post("/sessions", data={"workdir": str(other)}, headers=csrf_headers(client))
    assert response.status_code == 200, text(response)
    from app.models import Session

    session = db.session.scalars(db.select(Session)).one()
    assert session.workdir == str(other)
    assert session.name == "webapp-1"  # named after its folder: still true after a model switch
    session.status, session.api_port, session.tunnel_state = "ready", 8000, "up"
    db.session.commit()
    card = text(client.get(f"/sessions/{session.name}/card", headers=HX))
    assert f"source &#39;{other}/.aider-env&#39;" in card or f"source '{other}/.aider-env'" in card
    assert f'data-testid="session-folder">{other}</code>' in text(client.get(f"/sessions/{session.name}"))


def test_automatic_names_are_cut_at_a_word(ctx):
    from app.services.sessions import _name_for

    assert _name_for(None, "Qwen/Qwen2.5-Coder-7B-Instruct") == "qwen2-5-coder-7b-1"
    assert _name_for("/home/me/a-very-long-project-folder-name-indeed", "x") == "a-very-long-project-1"


# ---- fit and switch wording --------------------------------------------------------------------------------------

def test_a_switch_takes_the_new_models_own_context(client, ctx):
    session = make_session("ready", vllm_config={"max_model_len": 32768, "tensor_parallel_size": 1})
    response = client.post(f"/sessions/{session.name}/model",
                           data={"model_id": "Qwen/Qwen2.5-Coder-14B-Instruct-AWQ"}, headers=csrf_headers(client))
    assert response.status_code == 200, text(response)
    db.session.refresh(session)
    from app.domain.models_catalog import catalog_entry

    assert session.vllm_config["max_model_len"] == catalog_entry("Qwen/Qwen2.5-Coder-14B-Instruct-AWQ").default_context


def test_a_switch_that_does_not_fit_says_so_once_with_units(client, ctx):
    session = make_session("ready", vllm_config={"max_model_len": 16384, "tensor_parallel_size": 1})
    response = client.post(f"/sessions/{session.name}/model",
                           data={"model_id": "Qwen/Qwen2.5-Coder-14B-Instruct-AWQ", "max_model_len": "32768"},
                           headers=csrf_headers(client))
    body = text(response)
    assert ("Qwen/Qwen2.5-Coder-14B-Instruct-AWQ won&#39;t fit on g2-gpu-rtx4000a1-s: 32,768 tokens of context need "
            in body)
    assert "plan has 20 GB; largest context that fits: 29,696 tokens." in body
    assert body.count("largest context") == 1 and "won&#39;t fit: " not in body


def test_a_switch_on_a_plan_named_without_its_gpu_is_still_checked_to_fit(client, ctx):
    # AWS's g5.xlarge (or your own host's name) says nothing about the GPU: the A10G recorded at launch does
    session = make_session("ready", provider="aws", region="us-east-1", plan="g5.xlarge", gpus=1, gpu_name="A10G",
                           vllm_config={"max_model_len": 16384, "tensor_parallel_size": 1})
    response = client.post(f"/sessions/{session.name}/model",
                           data={"model_id": "Qwen/Qwen2.5-Coder-32B-Instruct-AWQ", "max_model_len": "32768"},
                           headers=csrf_headers(client))
    body = text(response)
    assert "won&#39;t fit on g5.xlarge" in body and "plan has 24 GB" in body


def test_the_switch_progress_does_not_repeat_itself(client, ctx):
    session = make_session("switching_model", stage_detail="loading the new model")
    page = text(client.get(f"/sessions/{session.name}"))
    assert "Loading the new model" in page and "loading the new model — " not in page.lower().replace(
        "loading the new model — loading", "X")
    assert "Loading the new model — loading the new model" not in page


# ---- small things on the pages -----------------------------------------------------------------------------------

def test_extend_shows_only_when_a_watchdog_can_stop_the_vm(client, ctx):
    off = make_session("ready", idle_timeout_minutes=None)
    on = make_session("ready", idle_timeout_minutes=30)
    assert 'id="extend-button"' not in text(client.get(f"/sessions/{off.name}"))
    assert 'id="extend-button"' in text(client.get(f"/sessions/{on.name}"))


def test_the_web_404_does_not_send_the_user_to_a_terminal(client, ctx):
    page = text(client.get("/sessions/nobody"))
    assert "no session named &#39;nobody&#39;" in page.lower() or "no session named 'nobody'" in page.lower()
    assert "maider list" not in page


def test_every_page_has_a_skip_link_to_the_content(client, ctx):
    page = text(client.get("/"))
    assert '<a class="skip-link" href="#main">Skip to content</a>' in page and '<main class="container" id="main"' in page


def test_gpu_memory_is_in_gb_like_everywhere_else(client, ctx):
    session = make_session("ready", engine_state={"metrics": {"gpus": [
        {"index": 0, "name": "RTX 4000 Ada", "memory_used_mb": 19000, "memory_total_mb": 20475,
         "utilization": 0.5}]}})
    page = text(client.get(f"/sessions/{session.name}"))
    assert "GiB" not in page


# ---- the CLI against a real demo server --------------------------------------------------------------------------

@pytest.mark.slow
def test_up_extend_down_twice_in_a_new_users_words(demo_server):
    from test_cli_demo_journey import maider

    project = demo_server["project"]
    bad = maider(demo_server, "up", "--plan", "g9-nonsense", "--region", "us-mars")
    assert bad.returncode != 0
    lines = bad.stderr.strip().splitlines()
    assert lines[0] == "Error: cannot launch:" and all(line.startswith("  ✗ ") for line in lines[1:]), bad.stderr
    assert len(lines) >= 3 and "Traceback" not in bad.stderr

    up = maider(demo_server, "up", "--idle-minutes", "0")
    assert up.returncode == 0, up.stdout + up.stderr
    name = "project-1"  # after the folder, cut at a word
    assert f"{name} is ready" in up.stdout
    extend = maider(demo_server, "extend")
    assert extend.returncode == 0 and "Nothing to extend" in extend.stdout and "timer reset" not in extend.stdout

    down = maider(demo_server, "down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert not (project / ".aider-env").exists()
    assert f"Removed {project / '.aider-env'}" in down.stdout
    again = maider(demo_server, "down", name)
    assert again.returncode == 0 and f"{name} is already destroyed" in again.stdout
    assert "Destroy it anyway" not in again.stdout


@pytest.fixture
def demo_server(tmp_path):
    from test_cli_demo_journey import demo_server as fixture

    yield from fixture.__wrapped__(tmp_path)


@pytest.mark.slow
def test_logs_and_ssh_reach_the_vm_with_the_pinned_host_key(demo_server):
    from test_cli_demo_journey import maider

    up = maider(demo_server, "up", "logged")
    assert up.returncode == 0, up.stdout + up.stderr
    logs = maider(demo_server, "logs", "-n", "20")
    assert logs.returncode == 0, logs.stderr
    assert 0 < len(logs.stdout.splitlines()) <= 20 and "Application startup complete" in logs.stdout
    api_key = next(line.split("=", 1)[1] for line in (demo_server["project"] / ".aider-env").read_text().splitlines()
                   if "OPENAI_API_KEY" in line).strip("'\"")
    assert api_key not in logs.stdout
    if shutil.which("ssh"):
        from app.domain.vm_contract import CMD_VLLM_LOGS

        ran = maider(demo_server, "ssh", "logged", CMD_VLLM_LOGS)  # OpenSSH, host key checked strictly
        assert ran.returncode == 0, ran.stderr
        assert "Application startup complete" in ran.stdout
    down = maider(demo_server, "down", "logged")
    assert down.returncode == 0
    gone = maider(demo_server, "logs", "logged")
    assert gone.returncode != 0 and "has no VM to reach" in gone.stderr


def test_following_a_log_prints_each_new_line_once():
    from app.cli.vm_access import _new_lines

    assert _new_lines([], ["a", "b"]) == ["a", "b"]
    assert _new_lines(["a", "b", "c"], ["b", "c", "d", "e"]) == ["d", "e"]  # the tail moved on
    assert _new_lines(["a", "b"], ["a", "b"]) == []


def test_a_failure_message_reads_as_a_sentence(client, ctx):
    session = make_session("failed", status_message="the model is gated on Hugging Face: set HF_TOKEN",
                           destroyed_at=None)
    page = text(client.get(f"/sessions/{session.name}"))
    assert "The model is gated on Hugging Face: set HF_TOKEN." in page
    card = text(client.get(f"/sessions/{session.name}/card", headers=HX))
    assert "The model is gated on Hugging Face: set HF_TOKEN." in card


def test_a_viewer_cannot_pick_or_probe_a_launch_folder(app, client, ctx, tmp_path):
    """A folder names a place on the owner's disk and its .env: reading or choosing one is for those who launch."""
    from app.services import users as users_service
    from engine_helpers import csrf_token as token_of

    secret = tmp_path / "owners-other-project"
    secret.mkdir()
    (secret / ".env").write_text(DEMO_ENV.replace("us-ord", "jp-osa"))
    invite = users_service.add_user("vee", "viewer", actor="test")
    viewer = app.test_client()
    page = f"/invite/{invite.token}"
    viewer.post(page, data={"password": "a long password", "confirm": "a long password",
                            "csrf_token": token_of(viewer, page)})
    assert viewer.get("/launch", query_string={"workdir": str(secret)}, headers=HX).status_code == 403
    assert "jp-osa" not in text(viewer.get("/", query_string={"workdir": str(secret)}))
    assert str(secret) not in project_folders.remembered()
