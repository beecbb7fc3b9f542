"""Region and plan checks against the fake Linode API: metadata-less regions, unmentioned plans, an API that is down.

A region without Linode's Metadata service gives cloud-init no user data, so the VM never gets the host key maider
pins: the wizard does not offer it and validate refuses it. With the API unreachable, ``maider validate`` still sizes
the model on the plan from maider's own table, and says in one line what it could not check.
"""
from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from app.cli.validate import validate
from app.config import load_settings
from app.providers.linode import LinodeProvider
from app.services import wizard as wizard_service
from app.services.validation import validate_launch
from fakes.linode_api import FakeLinodeApi

QWEN_32B_AWQ = "Qwen/Qwen2.5-Coder-32B-Instruct-AWQ"


@pytest.fixture
def home() -> Path:
    return Path(os.environ["MAIDER_HOME"])


@pytest.fixture
def api() -> Iterator[FakeLinodeApi]:
    with FakeLinodeApi() as fake:
        yield fake


def _project(env: str, token: str) -> None:
    Path(".env").write_text(env)
    Path(".env.secrets").write_text(f"LINODE_TOKEN={token}\n")


def _provider(api_url: str, token: str) -> LinodeProvider:
    return LinodeProvider(token, api_url, sleep=lambda _s: None)


def _dead_url() -> str:
    with socket.socket() as sock:  # a port nobody listens on: connection refused at once
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v4"


# B.4: regions without Metadata

def test_the_wizard_does_not_offer_a_region_without_metadata(api: FakeLinodeApi, home: Path) -> None:
    _project("", api.token)
    provider = _provider(api.base_url, api.token)
    ctx = wizard_service.Context(workdir=Path.cwd(), home=home, demo=False, settings=load_settings(Path.cwd()),
                                 provider_factory=lambda _name, _settings, _home: provider)
    offered = {o.region.id for o in wizard_service.region_options(ctx, "custom", utc_offset_hours=0)}
    assert "ap-west" not in offered  # GPU plans, but no Metadata service
    assert {"us-east", "ap-south", "us-ord"} <= offered
    with pytest.raises(wizard_service.WizardError) as caught:
        wizard_service.plan_options(ctx, "custom", "ap-west")
    assert caught.value.field == "region"


def test_validate_refuses_a_region_without_metadata(api: FakeLinodeApi, home: Path) -> None:
    _project(f"REGION=ap-west\nTYPE=g1-gpu-rtx6000-2\nMODEL_ID={QWEN_32B_AWQ}\n", api.token)
    report = validate_launch(load_settings(), _provider(api.base_url, api.token), home)
    problems = {p.variable: p.message for p in report.problems}
    assert "Metadata" in problems["REGION"] and "ap-west" in problems["REGION"]
    assert "us-east" in problems["REGION"] and "ap-south" in problems["REGION"]  # where the plan can go instead


# B.2: a plan the availability list does not mention

def test_validate_warns_about_a_plan_availability_does_not_mention(api: FakeLinodeApi, home: Path) -> None:
    api.availability = [e for e in api.availability if not e["plan"].startswith("gpu-rtx6000")]
    _project(f"REGION=us-east\nTYPE=g1-gpu-rtx6000-2\nMODEL_ID={QWEN_32B_AWQ}\n", api.token)
    report = validate_launch(load_settings(), _provider(api.base_url, api.token), home)
    assert report.ok, report.problems
    assert any("availability list does not mention g1-gpu-rtx6000-2" in note for note in report.notes)


# B.12: the Linode API unreachable

def test_offline_validate_checks_the_fit_from_the_built_in_table(home: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    _project(f"REGION=us-ord\nTYPE=g2-gpu-rtx4000a2-s\nMODEL_ID={QWEN_32B_AWQ}\nVLLM_MAX_MODEL_LEN=32768\n", "tok")
    report = validate_launch(load_settings(), _provider(_dead_url(), "tok"), home, offline_fit=True)
    assert report.ok, report.problems
    assert report.fit is not None and report.fit.fits
    assert report.plan is not None and report.plan.gpus == 2 and report.plan.gpu.name == "RTX 4000 Ada"
    offline = [note for note in report.notes if "could not reach the Linode API" in note]
    assert len(offline) == 1 and "region and price were not checked" in offline[0]
    assert any(note.startswith(f"{QWEN_32B_AWQ} fits") for note in report.notes)
    # retries are for the log file, not the terminal: nothing from the provider at WARNING or above
    assert [r for r in caplog.records if r.name == "app.providers.linode" and r.levelno >= logging.WARNING] == []
    assert any("retry 1 of" in r.getMessage() for r in caplog.records)  # still in the log, at INFO


def test_offline_validate_too_large_a_model_is_still_a_problem(home: Path) -> None:
    _project(f"REGION=us-ord\nTYPE=g2-gpu-rtx4000a1-s\nMODEL_ID={QWEN_32B_AWQ}\nVLLM_MAX_MODEL_LEN=32768\n"
             "VLLM_GPU_MEMORY_UTILIZATION=0.5\n", "tok")
    report = validate_launch(load_settings(), _provider(_dead_url(), "tok"), home, offline_fit=True)
    assert [p.variable for p in report.problems] and report.fit is not None and not report.fit.fits


def test_a_launch_still_refuses_to_go_ahead_unchecked(home: Path) -> None:
    _project(f"REGION=us-ord\nTYPE=g2-gpu-rtx4000a2-s\nMODEL_ID={QWEN_32B_AWQ}\n", "tok")
    report = validate_launch(load_settings(), _provider(_dead_url(), "tok"), home)
    assert not report.ok and "could not reach the Linode API" in report.problems[0].message


def test_maider_validate_offline_prints_human_lines(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dead = _dead_url()
    _project(f"REGION=us-ord\nTYPE=g3-gpu-rtxpro6000-blackwell-1\nMODEL_ID={QWEN_32B_AWQ}\n"
             f"MAIDER_LINODE_API_URL={dead}\n", "tok")
    monkeypatch.setattr("app.providers.linode.BACKOFF_BASE_S", 0.0)  # the retries, without their waits
    result = CliRunner().invoke(validate, [], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert sum("could not reach the Linode API" in line for line in lines) == 1
    assert "region and price were not checked" in result.output and "1 × RTX PRO 6000 Blackwell" in result.output
    assert "WARNING" not in result.output and "retry" not in result.output
    assert "✓ configuration is valid" in result.output
