"""aider hand-off files: .aider-env is safe to source, metadata in aider's format, the command holds no key."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from app.domain.aider import (
    AIDER_ENV_FILENAME, METADATA_FILENAME, aider_command, aider_env_file, model_metadata,
)

HOSTILE_KEY = "sk-$(touch pwned)`touch pwned2`'\"$HOME\\n;x"


def _source(tmp_path: Path, text: str, variable: str) -> str:
    (tmp_path / AIDER_ENV_FILENAME).write_text(text)
    result = subprocess.run(["bash", "-c", f'source ./{AIDER_ENV_FILENAME}; printf %s "${variable}"'],
                            cwd=tmp_path, capture_output=True, text=True, check=True)
    return result.stdout


def test_sourcing_round_trips_a_hostile_key_and_runs_nothing(tmp_path: Path) -> None:
    text = aider_env_file(18001, 13001, HOSTILE_KEY, "coder", "s1")
    assert _source(tmp_path, text, "OPENAI_API_KEY") == HOSTILE_KEY
    assert not (tmp_path / "pwned").exists()
    assert not (tmp_path / "pwned2").exists()


@pytest.mark.parametrize("variable, expected", [
    ("OPENAI_API_BASE", "http://127.0.0.1:18001/v1"),
    ("AIDER_MODEL", "openai/qwen coder's"),
    ("ACTUAL_API_PORT", "18001"),
    ("ACTUAL_WEBUI_PORT", "13001"),
    ("MAIDER_SESSION", "team $(id)"),
])
def test_every_variable_is_exported_with_the_actual_ports(tmp_path: Path, variable: str, expected: str) -> None:
    text = aider_env_file(18001, 13001, "sk-1", "qwen coder's", "team $(id)")
    assert f"export {variable}=" in text
    assert _source(tmp_path, text, variable) == expected


def test_metadata_has_aiders_shape_and_the_real_context() -> None:
    metadata = model_metadata("coder", 24576)
    assert list(metadata) == ["openai/coder"]
    entry = metadata["openai/coder"]
    assert entry["max_input_tokens"] == 24576
    assert entry["max_tokens"] == 24576
    assert entry["max_output_tokens"] == 8192
    assert entry["litellm_provider"] == "openai"
    assert entry["mode"] == "chat"
    assert entry["input_cost_per_token"] == 0 and entry["output_cost_per_token"] == 0
    json.dumps(metadata)


def test_small_context_caps_the_output_limit() -> None:
    assert model_metadata("coder", 4096)["openai/coder"]["max_output_tokens"] == 4096
    assert model_metadata("coder", 32768, max_output_tokens=2048)["openai/coder"]["max_output_tokens"] == 2048


def test_cost_per_token_from_price_and_throughput() -> None:
    """$1.80/h at 50 tokens/s: 180,000 tokens an hour, $10 per million output tokens."""
    entry = model_metadata("coder", 32768, hourly_price=1.8, output_tokens_per_second=50.0)["openai/coder"]
    assert entry["output_cost_per_token"] == pytest.approx(1e-5)
    assert entry["input_cost_per_token"] == 0


@pytest.mark.parametrize("price, rate", [(1.8, None), (None, 50.0), (0.0, 50.0), (1.8, 0.0)])
def test_cost_stays_zero_unless_both_are_known(price: float | None, rate: float | None) -> None:
    entry = model_metadata("coder", 32768, hourly_price=price, output_tokens_per_second=rate)["openai/coder"]
    assert entry["output_cost_per_token"] == 0


def test_command_sources_the_env_file_and_holds_no_key() -> None:
    env_path = "/home/me/my project/.aider-env"
    command = aider_command(env_path, f"/home/me/my project/{METADATA_FILENAME}")
    assert command == ("source '/home/me/my project/.aider-env' && aider --model \"$AIDER_MODEL\" "
                       "--model-metadata-file '/home/me/my project/.aider.model.metadata.json'")
    assert "sk-" not in command


def test_command_quotes_hostile_paths(tmp_path: Path) -> None:
    """A path with a quote and $(...) reaches the shell as one literal word."""
    folder = tmp_path / "it's $(touch pwned)"
    folder.mkdir()
    (folder / AIDER_ENV_FILENAME).write_text(aider_env_file(18001, 13001, "sk-1", "coder", "s1"))
    command = aider_command(str(folder / AIDER_ENV_FILENAME), str(folder / METADATA_FILENAME))
    probe = command.replace("aider --model", "printf '%s|' --model", 1)
    result = subprocess.run(["bash", "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert result.stdout == f"--model|openai/coder|--model-metadata-file|{folder / METADATA_FILENAME}|"
    assert not (tmp_path / "pwned").exists()


def test_the_cli_can_read_the_file_back() -> None:
    """``maider up --launch-aider`` reads .aider-env with vllm_env.parse_env before exec'ing aider."""
    from app.domain.vllm_env import parse_env

    values = parse_env(aider_env_file(18001, 13001, HOSTILE_KEY, "coder", "s1"))
    assert values["OPENAI_API_KEY"] == HOSTILE_KEY
    assert values["AIDER_MODEL"] == "openai/coder"
