"""The panel's setup wizard saves into the launch card's project folder (the one the next launch reads), not into
the folder ``maider serve`` was started from."""
from __future__ import annotations

import html
import re
from pathlib import Path

import pytest

from app.services import project_folders
from engine_helpers import csrf_token

HX = {"HX-Request": "true"}
PLAN = "g2-gpu-rtx4000a2-s"


def _page(response) -> str:
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    return response.get_data(as_text=True)


def _carried(page: str) -> dict[str, str]:
    """What the wizard's form sends back with the next step: its hidden fields."""
    form = re.search(r'<form id="wizard-form".*?</form>', page, re.S).group(0)
    fields = re.findall(r'<input type="hidden"(?: id="[^"]*")? name="(\w+)" value="([^"]*)">', form)
    return {name: html.unescape(value) for name, value in fields if name not in ("csrf_token", "previous")}


def _through_the_wizard(client, page: str) -> str:
    """Answer every step as a user clicks through (demo cloud, medium tier, us-ord, the 2-GPU plan, its model),
    posting what each step's form carries; returns the answer to Save."""
    headers = {**HX, "X-CSRFToken": csrf_token(client, "/setup/")}
    for path, answer in (("/setup/provider", {"provider": "simulated"}), ("/setup/tier", {"tier": "medium"}),
                         ("/setup/region", {"region": "us-ord"}), ("/setup/plan", {"plan": PLAN}),
                         ("/setup/model", {"model": "Qwen/Qwen2.5-Coder-32B-Instruct-AWQ", "max_model_len": ""})):
        page = _page(client.post(path, data={**_carried(page), **answer}, headers=headers))
    assert "Review and save" in page
    return client.post("/setup/save", data={**_carried(page), "linode_token": "", "hf_token": ""}, headers=headers)


@pytest.fixture
def other(tmp_path: Path) -> Path:
    folder = tmp_path / "other-project"
    folder.mkdir()
    return folder


def test_the_wizard_opened_from_the_launch_card_saves_in_its_folder(app, client, tmp_path: Path, other: Path):
    app.config["MAIDER_DEMO"] = True
    card = _page(client.get("/launch", query_string={"workdir": str(other)}, headers=HX))
    link = html.unescape(re.search(r'<a href="([^"]*)" id="launch-setup">Set up this folder</a>', card).group(1))
    page = _page(client.get(link))
    assert _carried(page)["workdir"] == str(other)
    saved = _through_the_wizard(client, page)
    assert saved.status_code == 200 and saved.headers["HX-Redirect"] == "/"
    assert "REGION=us-ord" in (other / ".env").read_text() and f"TYPE={PLAN}" in (other / ".env").read_text()
    assert not (tmp_path / "project" / ".env").exists()  # the server's own folder is left alone
    dashboard = _page(client.get("/"))  # the launch card opens on the folder just set up, with its settings
    assert re.search(r'data-testid="launch-folder">([^<]*)<', dashboard).group(1) == str(other)
    assert "Saved configuration" in dashboard and PLAN in dashboard


def test_the_wizard_opened_from_the_menu_saves_where_the_launch_card_opens(app, client, tmp_path: Path, other: Path):
    app.config["MAIDER_DEMO"] = True
    project_folders.remember(other)  # e.g. `maider up` ran there last
    page = _page(client.get("/setup/"))
    assert _carried(page)["workdir"] == str(other)
    assert _through_the_wizard(client, page).status_code == 200
    assert (other / ".env").is_file() and not (tmp_path / "project" / ".env").exists()


def test_a_folder_that_is_not_there_is_refused_with_its_name_and_nothing_is_written(app, client, tmp_path: Path):
    app.config["MAIDER_DEMO"] = True
    missing = tmp_path / "gone"
    response = client.get("/setup/", query_string={"workdir": str(missing)})
    body = response.get_data(as_text=True)
    assert response.status_code == 400 and "is not an existing directory" in body and str(missing) in body
    headers = {**HX, "X-CSRFToken": csrf_token(client, "/setup/")}
    refused = client.post("/setup/save", headers=headers, data={
        "workdir": str(missing), "provider": "simulated", "tier": "medium", "region": "us-ord", "plan": PLAN,
        "model_id": "Qwen/Qwen2.5-Coder-32B-Instruct-AWQ", "context": "32768", "tp": "2"})
    assert "is not an existing directory" in refused.headers["HX-Trigger"]  # a toast; the step stays as it is
    assert not missing.exists() and not (tmp_path / "project" / ".env").exists()


def test_a_folder_not_ready_to_launch_links_its_own_wizard(app, client, other: Path):
    card = _page(client.get("/launch", query_string={"workdir": str(other)}, headers=HX))
    assert "Not ready to launch from this folder" in card
    link = re.search(r'<a href="([^"]*)">Run the setup wizard</a>', card).group(1)
    assert _carried(_page(client.get(html.unescape(link))))["workdir"] == str(other)
