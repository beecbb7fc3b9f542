"""``maider wizard`` on the terminal, offline on the simulated cloud."""
from __future__ import annotations

import stat
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from app.cli.wizard import wizard
from app.config import load_settings

QWEN_7B_AWQ = "Qwen/Qwen2.5-Coder-7B-Instruct-AWQ"
QWEN_32B_AWQ = "Qwen/Qwen2.5-Coder-32B-Instruct-AWQ"
QWEN_14B_AWQ = "Qwen/Qwen2.5-Coder-14B-Instruct-AWQ"


@pytest.fixture(autouse=True)
def _utc_laptop(monkeypatch: pytest.MonkeyPatch):
    """The recommended region is the nearest by time zone: pin the laptop to UTC (Frankfurt 2 comes first)."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def run(args: list[str], answers: str | None = None):
    return CliRunner().invoke(wizard, args, input=answers, catch_exceptions=False)


def test_yes_accepts_every_recommendation_and_saves() -> None:
    Path(".env").write_text("# kept\nWATCHDOG_ENABLED=true\n")
    result = run(["--demo", "--yes"])
    assert result.exit_code == 0, result.output
    assert "→ Small · 7–14B" in result.output and f"→ {QWEN_7B_AWQ}" in result.output
    assert "Demo mode: tokens are optional" in result.output
    assert "✓ checks passed" in result.output
    assert "✓ Saved .env in" in result.output and "ready to launch" in result.output
    env = Path(".env").read_text()
    assert env.startswith("# kept\nWATCHDOG_ENABLED=true\n")
    settings = load_settings(Path.cwd())
    assert settings.plan == "g2-gpu-rtx4000a1-s" and settings.model_id == QWEN_7B_AWQ
    assert settings.max_model_len == 32768 and settings.tensor_parallel_size == 1
    assert stat.S_IMODE(Path(".env").stat().st_mode) == 0o600


def test_numbered_answers_pick_tier_region_plan_model_and_tokens() -> None:
    Path(".env.secrets").write_text("OTHER=1\n")
    # medium, first region (recommended), plan: default (recommended), model: default, context: default,
    # Linode token typed, HF token left empty, confirm.
    answers = "2\n1\n\n\n\nlinode-token-from-cli-123\n\ny\n"
    result = run(["--demo"], answers)
    assert result.exit_code == 0, result.output
    assert "g2-gpu-rtx4000a2-s  (recommended)" in result.output
    assert "linode-token-from-cli-123" not in result.output  # hidden input
    settings = load_settings(Path.cwd())
    assert (settings.plan, settings.model_id, settings.tensor_parallel_size) == ("g2-gpu-rtx4000a2-s", QWEN_32B_AWQ, 2)
    assert Path(".env.secrets").read_text() == "OTHER=1\nLINODE_TOKEN=linode-token-from-cli-123\n"


def test_oversize_context_is_refused_and_asked_again() -> None:
    # small, first region, plan 1 (one 20 GB GPU), model 3 (14B AWQ) at 32768: refused; then 16384.
    models_first = "1\n1\n1\n"
    answers = models_first + "3\n32768\n" + "3\n16384\n" + "\n\ny\n"
    result = run(["--demo"], answers)
    assert result.exit_code == 0, result.output
    assert "✗ won't fit" in result.output and "largest context that fits: 29,696" in result.output
    assert "cheapest plan that fits 32K: g2-gpu-rtx4000a2-s at $1.05/h" in result.output
    settings = load_settings(Path.cwd())
    assert settings.model_id == QWEN_14B_AWQ and settings.max_model_len == 16384


def test_a_malformed_token_is_asked_again_and_declining_saves_nothing() -> None:
    answers = "1\n1\n1\n1\n\n" + "op://vault-only\n" + "op://Private/Linode/token\n" + "\n" + "n\n"
    result = run(["--demo"], answers)
    assert result.exit_code == 0, result.output
    assert "a 1Password reference looks like op://vault/item/field" in result.output
    assert "Nothing saved." in result.output
    assert not Path(".env").exists() and not Path(".env.secrets").exists()


def test_without_a_linode_token_it_says_how_to_add_one() -> None:
    result = CliRunner().invoke(wizard, ["--yes"])
    assert result.exit_code == 1
    assert "could not list regions from linode: no Linode token" in result.output
    assert "Traceback" not in result.output



def test_an_unsizable_model_is_saved_with_a_warning_that_its_fit_was_not_checked() -> None:
    from app.providers.simulated import simulated_plans
    from app.services import wizard as wizard_service

    cheapest = sorted(simulated_plans("de-fra-2"), key=lambda p: p.hourly_price)[0]
    other = len(wizard_service.model_options("custom", cheapest)) + 1
    # custom tier, recommended region and plan, "Other" with an id the offline Hub cannot size, then a context.
    answers = f"4\n\n\n{other}\nsomeone/brand-new-coder\n8192\n\n\ny\n"
    result = run(["--demo"], answers)
    assert result.exit_code == 0, result.output
    assert "could not size someone/brand-new-coder (offline)" in result.output
    assert "the model's fit was not checked" in result.output and "✓ checks passed" not in result.output
    settings = load_settings(Path.cwd())
    assert settings.model_id == "someone/brand-new-coder" and settings.max_model_len == 8192
    assert settings.tensor_parallel_size is None  # unsized: vLLM uses every GPU of the plan
