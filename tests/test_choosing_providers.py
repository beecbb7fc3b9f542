"""Choosing across providers: which clouds are configured, every cloud's plans in one table, the cheapest fit across
clouds, ``up --provider`` / the API's ``provider`` field, and the wizard's cloud step (CLI and panel).

Real parts at the edges: the Linode SDK against the fake Linode API, the simulated cloud, botocore's own credential
chain reading a real ~/.aws folder, click's runner and Flask's test client."""
from __future__ import annotations

import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from engine_helpers import (
    FAST_TIMINGS,
    LINODE_TOKEN,
    csrf_token,
    sign_in_owner,
    write_project,
)
from fakes.digitalocean_api import FakeDigitalOceanApi
from fakes.linode_api import FakeLinodeApi
from test_web_wizard import hidden_state, make_app

from app.cli import main
from app.cli.wizard import wizard
from app.config import load_settings
from app.domain.models_catalog import catalog_facts
from app.errors import ConfigError
from app.providers import get_provider
from app.services import providers as providers_service
from app.services import wizard as wizard_service

QWEN_32B_AWQ = "Qwen/Qwen2.5-Coder-32B-Instruct-AWQ"
AWS_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                 "AWS_DEFAULT_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE",
                 "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI")


@pytest.fixture(autouse=True)
def _no_cloud_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the credentials a test puts in place count."""
    for variable in ("DIGITALOCEAN_TOKEN", "PROVIDER", "MAIDER_DIGITALOCEAN_API_URL", *AWS_VARIABLES):
        monkeypatch.delenv(variable, raising=False)


@pytest.fixture
def linode_api(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeLinodeApi]:
    fake = FakeLinodeApi().start()
    monkeypatch.setenv("MAIDER_LINODE_API_URL", fake.base_url)
    monkeypatch.setenv("LINODE_TOKEN", fake.token)
    yield fake
    fake.stop()


@pytest.fixture
def do_api(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeDigitalOceanApi]:
    with FakeDigitalOceanApi() as fake:
        monkeypatch.setenv("MAIDER_DIGITALOCEAN_API_URL", fake.base_url)
        monkeypatch.setenv("DIGITALOCEAN_TOKEN", fake.token)
        yield fake


def _home() -> Path:
    return Path.cwd().parent / "maider-home"  # MAIDER_HOME of the isolated environment (tests/conftest.py)


def _cheapen(api: FakeLinodeApi, plan: str, hourly: float) -> None:
    for entry in api.types:
        if entry["id"] == plan:
            entry["price"]["hourly"] = hourly
            entry["region_prices"] = []


# ---------------------------------------------------------------- which providers are configured


def test_without_credentials_no_cloud_is_configured() -> None:
    settings = load_settings(Path.cwd())
    assert providers_service.configured_providers(settings, _home()) == []
    assert providers_service.configured_providers(settings, _home(), include_demo=True) == ["simulated"]


def test_each_cloud_counts_once_its_credentials_are_found_locally(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LINODE_TOKEN", "a-linode-token-123")
    write_project(Path.cwd(), "", "DIGITALOCEAN_TOKEN=dop_v1_0123456789abcdef\n")
    aws = Path.home() / ".aws"
    aws.mkdir(parents=True)
    (aws / "credentials").write_text("[default]\naws_access_key_id = AKIAEXAMPLE\naws_secret_access_key = x\n")
    _home().mkdir(parents=True, exist_ok=True)
    (_home() / "hosts.json").write_text('{"hosts": [{"name": "box", "host": "192.0.2.7"}]}')
    settings = load_settings(Path.cwd())
    assert providers_service.configured_providers(settings, _home()) == ["linode", "digitalocean", "aws", "ssh"]


@pytest.mark.parametrize("text", ["", "not json", "[]", '{"hosts": []}', "42"])
def test_an_empty_or_unreadable_hosts_file_means_no_own_host(text: str) -> None:
    _home().mkdir(parents=True, exist_ok=True)
    (_home() / "hosts.json").write_text(text)
    assert not providers_service.is_configured("ssh", load_settings(Path.cwd()), _home())


def test_aws_credentials_are_looked_up_without_asking_the_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """botocore would ask the instance-metadata service last; a laptop has none, so maider never asks it."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.2)
    connections: list[object] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            connections.append(conn)
            conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", f"http://127.0.0.1:{listener.getsockname()[1]}/")
    monkeypatch.setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", f"http://127.0.0.1:{listener.getsockname()[1]}/c")
    try:
        assert providers_service.aws_credentials_found() is False
    finally:
        stop.set()
        thread.join()
        listener.close()
    assert connections == []


# ---------------------------------------------------------------- maider list-types


def _rows(output: str) -> list[list[str]]:
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("PROVIDER"))
    return [re.split(r"\s{2,}", line.strip()) for line in lines[start + 1:] if line.strip()]


def test_two_providers_share_one_table_with_a_provider_column_cheapest_first(linode_api: FakeLinodeApi) -> None:
    _cheapen(linode_api, "g2-gpu-rtx4000a2-s", 0.40)
    result = CliRunner().invoke(main, ["list-types", "-p", "linode", "-p", "simulated"])
    assert result.exit_code == 0, result.output
    assert "GPU plans on linode, simulated in any region" in result.output
    assert result.output.splitlines()[2].split()[:3] == ["PROVIDER", "PLAN", "GPUS"]
    rows = _rows(result.output)
    assert {row[0] for row in rows} == {"linode", "simulated"}
    assert rows[0][:2] == ["linode", "g2-gpu-rtx4000a2-s"] and "$0.40" in rows[0]
    assert [row[:7] for row in rows[1:3]] == [  # the same price: in provider order
        ["linode", "g2-gpu-rtx4000a1-s", "1", "RTX 4000 Ada", "20 GB", "20 GB", "$0.52"],
        ["simulated", "g2-gpu-rtx4000a1-s", "1", "RTX 4000 Ada", "20 GB", "20 GB", "$0.52"]]
    prices = [float(cell[1:]) for row in rows for cell in row if cell.startswith("$")]
    assert prices == sorted(prices)


def test_linode_and_digitalocean_plans_share_one_table(linode_api: FakeLinodeApi,
                                                       do_api: FakeDigitalOceanApi) -> None:
    result = CliRunner().invoke(main, ["list-types"])
    assert result.exit_code == 0, result.output
    assert "GPU plans on linode, digitalocean in any region" in result.output
    rows = {(row[0], row[1]): row for row in _rows(result.output)}
    assert rows[("digitalocean", "gpu-l40sx1-48gb")][2:6] == ["1", "L40S", "48 GB", "48 GB"]
    assert "$1.57" in rows[("digitalocean", "gpu-l40sx1-48gb")] and "atl1, tor1" in rows[("digitalocean",
                                                                                       "gpu-l40sx1-48gb")]
    assert "$0.52" in rows[("linode", "g2-gpu-rtx4000a1-s")]
    assert not any(plan.startswith(("c-", "s-")) for _p, plan in rows)  # GPU sizes only


def test_a_provider_that_fails_is_one_line_and_the_others_still_print(linode_api: FakeLinodeApi,
                                                                       do_api: FakeDigitalOceanApi,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIGITALOCEAN_TOKEN", "dop_v1_planted_token_5c1f")  # refused by the fake
    result = CliRunner().invoke(main, ["list-types"])
    assert result.exit_code == 0, result.output
    failures = [line for line in result.stderr.splitlines() if line.startswith("✗")]
    assert len(failures) == 1 and failures[0].startswith("✗ digitalocean: ")
    assert "dop_v1_planted_token_5c1f" not in result.output and "Traceback" not in result.output
    assert {row[0] for row in _rows(result.stdout)} == {"linode"}
    assert "g2-gpu-rtx4000a1-s" in result.stdout


def test_every_provider_failing_exits_1(linode_api: FakeLinodeApi, do_api: FakeDigitalOceanApi,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LINODE_TOKEN", "a-linode-token-123")
    monkeypatch.setenv("DIGITALOCEAN_TOKEN", "dop_v1_planted_token_5c1f")
    result = CliRunner().invoke(main, ["list-types"])
    assert result.exit_code == 1
    assert "✗ linode: " in result.output and "✗ digitalocean: " in result.output
    assert "no provider could list its plans" in result.output


def test_the_demo_cloud_can_be_listed_by_name_without_any_token() -> None:
    result = CliRunner().invoke(main, ["list-types", "--provider", "simulated"])
    assert result.exit_code == 0, result.output
    assert "GPU plans on simulated" in result.output and "demo mode" not in result.output
    assert "PROVIDER" not in result.output  # one provider: its name is in the heading


def test_an_unknown_provider_is_refused_by_name() -> None:
    result = CliRunner().invoke(main, ["list-types", "--provider", "azure"])
    assert result.exit_code == 2 and "'azure' is not one of" in result.output


def test_the_server_keeps_every_configured_providers_plans_cached(app, linode_api: FakeLinodeApi,
                                                                   do_api: FakeDigitalOceanApi) -> None:
    """So a launch without a plan compares clouds from the cache instead of waiting on each API."""
    from app.services import catalog

    catalog.warm_cache(app)
    names = {path.name.split("-")[0] for path in (Path(app.config["MAIDER_HOME"]) / "cache").glob("*-plans.json")}
    assert names == {"linode", "digitalocean"}
    sizes = do_api.count("GET", "/v2/sizes")
    assert sizes >= 1
    catalog.warm_cache(app)
    assert do_api.count("GET", "/v2/sizes") == sizes  # fresh enough: not asked again


# ---------------------------------------------------------------- the cheapest fit across providers


def test_the_cheapest_fit_is_searched_across_providers(linode_api: FakeLinodeApi) -> None:
    """Qwen2.5-Coder-32B-AWQ at 32K needs two 20 GB GPUs; whichever cloud sells them cheaper wins."""
    settings, home = load_settings(Path.cwd()), _home()
    facts = catalog_facts(QWEN_32B_AWQ)
    _cheapen(linode_api, "g2-gpu-rtx4000a2-s", 0.99)
    catalogs = providers_service.plans_across(["linode", "simulated"], settings, home, refresh=True)
    fit = providers_service.cheapest_fit(facts, 32768, catalogs)
    assert fit is not None and fit.provider == "linode" and fit.plan.id == "g2-gpu-rtx4000a2-s"
    assert fit.sentence(QWEN_32B_AWQ, 32768) == \
        "Qwen2.5-Coder-32B-Instruct-AWQ at 32,768 tokens: cheapest is g2-gpu-rtx4000a2-s on linode at $0.99/h"

    _cheapen(linode_api, "g2-gpu-rtx4000a2-s", 1.50)
    catalogs = providers_service.plans_across(["linode", "simulated"], settings, home, refresh=True)
    fit = providers_service.cheapest_fit(facts, 32768, catalogs)
    assert fit is not None and (fit.provider, fit.plan.id) == ("simulated", "g2-gpu-rtx4000a2-s")
    assert fit.sentence(QWEN_32B_AWQ, 32768).endswith("on simulated at $1.05/h")


def test_your_own_machine_at_no_cost_beats_any_paid_cloud() -> None:
    """A host added without --price costs nothing: its 0 is a price, not an unknown one."""
    from app.domain.gpu_catalog import L40S
    from app.providers.base import GpuPlan

    facts = catalog_facts(QWEN_32B_AWQ)
    own = GpuPlan(id="desk-box", label="desk-box", gpus=1, gpu=L40S, hourly_price=0.0, memory_mb=0, vcpus=0,
                  regions=("own",))
    cloud = GpuPlan(id="gpu-l40sx1-48gb", label="L40S", gpus=1, gpu=L40S, hourly_price=1.57, memory_mb=0, vcpus=0)
    unknown = GpuPlan(id="mystery", label="mystery", gpus=1, gpu=L40S, hourly_price=0.0, memory_mb=0, vcpus=0)
    catalogs = [providers_service.ProviderPlans("digitalocean", (cloud,)),
                providers_service.ProviderPlans("aws", (unknown,)), providers_service.ProviderPlans("ssh", (own,))]
    fit = providers_service.cheapest_fit(facts, 32768, catalogs)
    assert fit is not None and (fit.provider, fit.plan.id) == ("ssh", "desk-box")
    fit = providers_service.cheapest_fit(facts, 32768, catalogs[:2])  # a cloud's unknown price never wins
    assert fit is not None and (fit.provider, fit.plan.id) == ("digitalocean", "gpu-l40sx1-48gb")


def test_validate_names_the_cheapest_cloud_when_no_plan_is_set(linode_api: FakeLinodeApi,
                                                               do_api: FakeDigitalOceanApi) -> None:
    Path(".env").write_text(f"MODEL_ID={QWEN_32B_AWQ}\nVLLM_MAX_MODEL_LEN=32768\n")
    result = CliRunner().invoke(main, ["validate"])
    assert "• Qwen2.5-Coder-32B-Instruct-AWQ at 32,768 tokens: cheapest is g2-gpu-rtx4000a2-s on linode at $1.05/h " \
           "('maider up' without TYPE launches there)" in result.output
    assert "✗ TYPE: not set" in result.output and result.exit_code == 1


def test_a_failing_provider_does_not_hide_the_others_fit(linode_api: FakeLinodeApi) -> None:
    settings = load_settings(Path.cwd())

    def factory(name, s, home):
        if name == "digitalocean":
            raise ConfigError("DIGITALOCEAN_TOKEN is not set", "DIGITALOCEAN_TOKEN")
        return get_provider(name, s, home)

    catalogs = providers_service.plans_across(["digitalocean", "linode"], settings, _home(), factory=factory)
    assert catalogs[0].error == "DIGITALOCEAN_TOKEN is not set" and catalogs[0].plans == ()
    fit = providers_service.cheapest_fit(catalog_facts(QWEN_32B_AWQ), 32768, catalogs)
    assert fit is not None and fit.provider == "linode"


# ---------------------------------------------------------------- up --provider and the API's provider field


LAUNCHES = "/api/v1/sessions"
AUTH = {"Authorization": "Bearer choose-token"}


def test_up_refuses_an_unknown_provider_before_anything_is_sent() -> None:
    result = CliRunner().invoke(main, ["up", "--provider", "azure", "--plan", "g6.xlarge"])
    assert result.exit_code == 2 and "'azure' is not one of" in result.output
    help_text = CliRunner().invoke(main, ["up", "--help"]).output
    assert "--provider" in help_text and "cheapest provider" in help_text


def test_the_api_names_an_unknown_provider_and_launches_nothing(app, client) -> None:
    app.config.update(MAIDER_API_TOKEN="choose-token", MAIDER_DEMO=True)
    response = client.post(LAUNCHES, json={"provider": "azure"}, headers=AUTH)
    assert response.status_code == 400
    assert "provider" in response.json["fields"] and "linode, digitalocean, aws, ssh, simulated" in \
        response.json["fields"]["provider"]
    assert client.get(LAUNCHES, headers=AUTH).json["sessions"] == []


def test_the_demo_panel_refuses_a_real_cloud_and_says_why(app, client) -> None:
    app.config.update(MAIDER_API_TOKEN="choose-token", MAIDER_DEMO=True)
    response = client.post(LAUNCHES, json={"provider": "linode"}, headers=AUTH)
    assert response.status_code == 422
    assert "demo mode" in response.json["error"] and "without --demo" in response.json["error"]


def test_a_pinned_provider_is_the_one_the_session_records(app, client, linode_world) -> None:
    app.config.update(MAIDER_API_TOKEN="choose-token")
    (linode_world["workdir"] / ".env").write_text(
        (linode_world["workdir"] / ".env").read_text() + "PROVIDER=simulated\n")
    response = client.post(LAUNCHES, json={"provider": "linode", "name": "pinned"}, headers=AUTH)
    assert response.status_code == 201, response.json
    assert response.json["provider"] == "linode" and response.json["plan"] == "g2-gpu-rtx4000a1-s"
    client.delete(f"{LAUNCHES}/pinned", headers=AUTH)


def test_a_pinned_provider_launches_in_its_plans_region_not_in_providers_region(
        app, client, linode_api: FakeLinodeApi, do_api: FakeDigitalOceanApi) -> None:
    """REGION=us-ord is Linode's: 'up --provider digitalocean --plan …' takes a region of that Droplet size."""
    app.config.update(MAIDER_API_TOKEN="choose-token", MAIDER_TIMINGS=FAST_TIMINGS)
    (Path(app.config["MAIDER_WORKDIR"]) / ".env").write_text(
        "REGION=us-ord\nTYPE=g2-gpu-rtx4000a1-s\nMODEL_ID=Qwen/Qwen2.5-Coder-7B-Instruct-AWQ\nVLLM_MAX_MODEL_LEN=8192\n")
    try:
        response = client.post(LAUNCHES, json={"name": "pinned-do", "provider": "digitalocean",
                                               "plan": "gpu-4000adax1-20gb"}, headers=AUTH)
        assert response.status_code == 201, response.json
        assert response.json["provider"] == "digitalocean" and response.json["region"] in {"atl1", "tor1"}
        assert response.json["hourly_price"] == 0.76
        client.delete(f"{LAUNCHES}/pinned-do", headers=AUTH)
    finally:
        from app.engine.runtime import runtime

        runtime(app).close()


def test_without_a_plan_a_failing_second_cloud_still_launches_on_the_first(app, client, linode_world,
                                                                           monkeypatch) -> None:
    """DigitalOcean is configured but unreachable: the cheapest fit comes from Linode, in REGION."""
    app.config.update(MAIDER_API_TOKEN="choose-token")
    workdir = linode_world["workdir"]
    (workdir / ".env").write_text("REGION=us-ord\nMODEL_ID=Qwen/Qwen2.5-Coder-7B-Instruct-AWQ\n"
                                  "VLLM_MAX_MODEL_LEN=8192\n")
    (workdir / ".env.secrets").write_text(f"LINODE_TOKEN={LINODE_TOKEN}\nDIGITALOCEAN_TOKEN=dop_v1_x_123456\n")
    provider = linode_world["provider"]

    def factory(name, settings, home):
        if name == "linode":
            return provider
        raise ConfigError(f"{name} is unreachable in this test", None)

    app.config["MAIDER_PROVIDER_FACTORY"] = factory
    response = client.post(LAUNCHES, json={"name": "anyfit"}, headers=AUTH)
    assert response.status_code == 201, response.json
    assert (response.json["provider"], response.json["plan"]) == ("linode", "g2-gpu-rtx4000a1-s")
    client.delete(f"{LAUNCHES}/anyfit", headers=AUTH)


@pytest.mark.parametrize("linode_price, provider, plan, sentence", [
    (2.0, "digitalocean", "gpu-4000adax1-20gb",
     "Qwen2.5-Coder-7B-Instruct-AWQ at 8,192 tokens: cheapest is gpu-4000adax1-20gb on digitalocean at $0.76/h"),
    (0.30, "linode", "g2-gpu-rtx4000a1-s",
     "Qwen2.5-Coder-7B-Instruct-AWQ at 8,192 tokens: cheapest is g2-gpu-rtx4000a1-s on linode at $0.30/h"),
])
def test_without_plan_or_provider_the_launch_goes_to_the_cheapest_cloud_that_fits(
        app, client, linode_api: FakeLinodeApi, do_api: FakeDigitalOceanApi, linode_price: float, provider: str,
        plan: str, sentence: str) -> None:
    """Linode and DigitalOcean both configured, no TYPE and no REGION: the cheaper fit decides the cloud, the
    session records it, and its first note says why."""
    for entry in linode_api.types:
        entry["price"]["hourly"] = linode_price if entry["id"] == "g2-gpu-rtx4000a1-s" else 2.0
        entry["region_prices"] = []
    app.config.update(MAIDER_API_TOKEN="choose-token", MAIDER_TIMINGS=FAST_TIMINGS)
    (Path(app.config["MAIDER_WORKDIR"]) / ".env").write_text(
        "MODEL_ID=Qwen/Qwen2.5-Coder-7B-Instruct-AWQ\nVLLM_MAX_MODEL_LEN=8192\n")
    try:
        response = client.post(LAUNCHES, json={"name": "cheapest"}, headers=AUTH)
        assert response.status_code == 201, response.json
        session = response.json
        assert (session["provider"], session["plan"]) == (provider, plan)
        assert session["region"] in {"atl1", "tor1"} if provider == "digitalocean" else session["region"]
        events = client.get(f"{LAUNCHES}/cheapest/events", headers=AUTH).json["events"]
        assert sentence in [e["message"] for e in events]
        client.delete(f"{LAUNCHES}/cheapest", headers=AUTH)
    finally:
        from app.engine.runtime import runtime

        runtime(app).close()


# ---------------------------------------------------------------- the wizard's cloud step


def test_the_wizard_offers_clouds_with_credentials_and_says_how_to_add_the_others(
        monkeypatch: pytest.MonkeyPatch) -> None:
    write_project(Path.cwd(), "", "DIGITALOCEAN_TOKEN=dop_v1_0123456789abcdef\n")
    ctx = wizard_service.open_context(Path.cwd(), _home())
    options = {o.name: o for o in wizard_service.provider_options(ctx)}
    assert list(options) == ["linode", "digitalocean", "aws", "ssh", "simulated"]
    assert options["linode"].enabled and "paste one at the last step" in options["linode"].detail
    assert options["digitalocean"].enabled and options["digitalocean"].detail == "credentials found"
    assert not options["aws"].enabled and "aws configure" in options["aws"].detail
    assert not options["ssh"].enabled and "maider host add" in options["ssh"].detail
    assert options["simulated"].enabled
    with pytest.raises(wizard_service.WizardError, match="AWS EC2 cannot be used yet: no credentials: run 'aws"):
        wizard_service.choose_provider(ctx, wizard_service.Choices(), "aws")
    choices, ctx = wizard_service.choose_provider(ctx, wizard_service.Choices(), "digitalocean")
    assert choices.provider == "digitalocean" and ctx.provider_name == "digitalocean"
    assert "LINODE_TOKEN" not in {i.variable for i in wizard_service.credential_info(ctx.settings, "digitalocean")
                                  .values()}


def test_the_cli_wizard_lists_clouds_and_saves_the_one_picked() -> None:
    answers = "2\n" + "\n" * 5 + "\n\ny\n"  # cloud 2 (demo), then every recommendation, no tokens, save
    result = CliRunner().invoke(wizard, [], input=answers, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "1. Cloud" in result.output and "Linode (Akamai)" in result.output
    assert "DigitalOcean: no credentials: add DIGITALOCEAN_TOKEN" in result.output
    assert "Your own GPU machine (SSH): no credentials: register your machine with 'maider host add'" in \
        result.output
    assert "✓ Saved .env" in result.output
    settings = load_settings(Path.cwd())
    assert settings.provider == "simulated" and settings.plan == "g2-gpu-rtx4000a1-s"


def test_the_cli_wizard_takes_the_cloud_as_an_option() -> None:
    result = CliRunner().invoke(wizard, ["--provider", "simulated", "--yes"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "PROVIDER=simulated" in Path(".env").read_text()


def test_the_demo_cli_wizard_leaves_provider_alone() -> None:
    result = CliRunner().invoke(wizard, ["--demo", "--yes"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "1. Cloud  → Demo" in result.output
    assert "PROVIDER" not in Path(".env").read_text()


@pytest.fixture
def panel(tmp_path: Path):
    app = make_app(tmp_path, demo=False)
    client = app.test_client()
    sign_in_owner(app, client)
    headers = {"X-CSRFToken": csrf_token(client, "/setup/"), "HX-Request": "true"}
    yield client, headers
    from app.extensions import db

    with app.app_context():
        db.session.remove()
        db.engine.dispose()


def test_the_panel_wizard_starts_at_the_cloud_and_saves_provider(panel, tmp_path: Path) -> None:
    client, headers = panel
    page = client.get("/setup/").get_data(as_text=True)
    assert "Which cloud runs the GPU?" in page
    assert re.search(r'name="provider" value="linode" checked', page)
    assert re.search(r'name="provider" value="digitalocean" disabled aria-describedby="provider-digitalocean-why"',
                     page)
    assert "no credentials: add DIGITALOCEAN_TOKEN to .env.secrets" in page

    refused = client.post("/setup/provider", data={"provider": "aws"}, headers=headers).get_data(as_text=True)
    assert "AWS EC2 cannot be used yet" in refused and 'id="provider-error" role="alert"' in refused

    html = client.post("/setup/provider", data={"provider": "simulated"}, headers=headers).get_data(as_text=True)
    assert "How capable should the model be?" in html and hidden_state(html) == {"provider": "simulated"}
    state = {"provider": "simulated", "tier": "small"}
    html = client.post("/setup/tier", data=state, headers=headers).get_data(as_text=True)
    assert "Where should the GPU run?" in html and hidden_state(html) == state
    state = {**state, "region": "us-ord", "plan": "g2-gpu-rtx4000a1-s",
             "model_id": "Qwen/Qwen2.5-Coder-7B-Instruct-AWQ", "context": "16384", "tp": "1"}
    response = client.post("/setup/save", data=state, headers=headers)
    assert response.status_code == 200 and response.headers.get("HX-Redirect"), response.get_data(as_text=True)
    assert "PROVIDER=simulated" in (tmp_path / "project" / ".env").read_text()


def test_the_panel_wizard_walks_digitalocean_to_a_saved_provider(panel, tmp_path: Path,
                                                                 do_api: FakeDigitalOceanApi) -> None:
    """DigitalOcean's token is found: its regions and sizes fill the later steps, the Linode token is not asked."""
    client, headers = panel
    html = client.post("/setup/provider", data={"provider": "digitalocean"}, headers=headers).get_data(as_text=True)
    assert "How capable should the model be?" in html
    state = {"provider": "digitalocean", "tier": "small"}
    html = client.post("/setup/tier", data=state, headers=headers).get_data(as_text=True)
    assert "Regions of <strong>digitalocean</strong>" in html and 'name="region" value="tor1"' in html
    state = {**state, "region": "tor1"}
    html = client.post("/setup/region", data=state, headers=headers).get_data(as_text=True)
    assert re.search(r'value="gpu-4000adax1-20gb" checked', html) and "$0.76" in html
    state = {**state, "plan": "gpu-4000adax1-20gb", "model_id": "Qwen/Qwen2.5-Coder-7B-Instruct-AWQ",
             "context": "16384", "tp": "1"}
    html = client.post("/setup/step/review", data=state, headers=headers).get_data(as_text=True)
    assert "Checks passed" in html, html
    assert 'name="hf_token"' in html and 'name="linode_token"' not in html
    response = client.post("/setup/save", data=state, headers=headers)
    assert response.headers.get("HX-Redirect"), response.get_data(as_text=True)
    env = (tmp_path / "project" / ".env").read_text()
    assert "PROVIDER=digitalocean" in env and "REGION=tor1" in env and "TYPE=gpu-4000adax1-20gb" in env


def _launch_card(client) -> str:
    html = client.get("/").get_data(as_text=True)
    return re.sub(r"\s+", " ", re.search(r'<section class="card launch".*?</section>', html, re.S).group(0))


def test_the_launch_card_compares_clouds_when_no_plan_is_saved(app, client) -> None:
    write_project(Path(app.config["MAIDER_WORKDIR"]), "MODEL_ID=Qwen/Qwen2.5-Coder-7B-Instruct-AWQ\n",
                  "LINODE_TOKEN=linode-token-123456\nDIGITALOCEAN_TOKEN=dop_v1_0123456789abcdef\n")
    card = _launch_card(client)
    assert "on the cheapest GPU that fits on any of linode, digitalocean" in card
    assert "Not ready" not in card


def test_the_launch_card_asks_for_the_chosen_clouds_credentials_not_linodes(app, client) -> None:
    workdir = Path(app.config["MAIDER_WORKDIR"])
    write_project(workdir, "PROVIDER=digitalocean\nREGION=tor1\nTYPE=gpu-4000adax1-20gb\n"
                           "MODEL_ID=Qwen/Qwen2.5-Coder-7B-Instruct-AWQ\n")
    card = _launch_card(client)
    assert "digitalocean credentials (add DIGITALOCEAN_TOKEN to .env.secrets" in card and "LINODE_TOKEN" not in card
    (workdir / ".env.secrets").write_text("DIGITALOCEAN_TOKEN=dop_v1_0123456789abcdef\n")
    card = _launch_card(client)
    assert "Not ready" not in card and "gpu-4000adax1-20gb</strong> (digitalocean)" in card


def test_any_cloud_with_credentials_ends_demo_mode_for_local_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    """As 'maider serve' decides: demo only when no cloud has credentials here (or PROVIDER=simulated)."""
    from app.cli.local_cloud import is_demo

    assert is_demo(load_settings(Path.cwd()))
    monkeypatch.setenv("DIGITALOCEAN_TOKEN", "dop_v1_0123456789abcdef")
    assert not is_demo(load_settings(Path.cwd()))
    monkeypatch.setenv("PROVIDER", "simulated")
    assert is_demo(load_settings(Path.cwd()))
