"""The VM's .env file: exact keys, quoting both docker compose and a shell read back, and heals that really change it."""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from app import PROJECT_ROOT
from app.domain import vm_contract
from app.domain.vllm_env import (
    Images, UnsafeEnvValue, VllmSettings, parse_env, render_env, settings_from_env, update_env, vllm_command_args,
)

SETTINGS = VllmSettings(
    model_id="Qwen/Qwen2.5-Coder-32B-Instruct-AWQ", served_name="coder", max_model_len=32768,
    gpu_memory_utilization=0.9, max_num_seqs=4, tensor_parallel_size=2, dtype="half", kv_cache_dtype="fp8",
    enforce_eager=True, extra_args="--enable-auto-tool-choice --tool-call-parser hermes "
                                   "--override-generation-config '{\"temperature\": 0.2}'",
    nccl_p2p_disable=True,
)
TRICKY_KEY = 'k$(touch pwned)`id`"$HOME\\x'


def _env(**overrides: object) -> str:
    settings = VllmSettings(**{**SETTINGS.__dict__, **overrides})
    return render_env(settings, TRICKY_KEY, "hf_SECRETTOKEN", "webui-secret", Images())


def test_env_has_exactly_the_contract_keys_in_order() -> None:
    assert list(parse_env(_env())) == list(vm_contract.ENV_KEYS)


def test_values_round_trip_through_parse_and_settings() -> None:
    env = parse_env(_env())
    assert env["VLLM_API_KEY"] == TRICKY_KEY
    assert env["HUGGING_FACE_HUB_TOKEN"] == "hf_SECRETTOKEN"
    assert env["VLLM_IMAGE"] == Images().vllm
    read_back = settings_from_env(env)
    assert shlex.split(read_back.extra_args) == shlex.split(SETTINGS.extra_args)
    assert read_back == VllmSettings(**{**SETTINGS.__dict__, "extra_args": read_back.extra_args})


def test_a_shell_reads_every_value_back_unchanged_and_runs_nothing(tmp_path: Path) -> None:
    env_path = tmp_path / ".env"
    env_path.write_text(_env())
    script = "set -a; . ./.env; set +a; " + "; ".join(
        f'printf "%s\\0" "${key}"' for key in vm_contract.ENV_KEYS)
    out = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, check=True).stdout
    shell_values = out.decode().split("\0")[:-1]
    assert dict(zip(vm_contract.ENV_KEYS, shell_values)) == parse_env(_env())
    assert not (tmp_path / "pwned").exists()


def test_extra_args_with_json_keep_their_words_in_the_single_quoted_file() -> None:
    env = parse_env(_env())
    assert shlex.split(env["VLLM_EXTRA_ARGS"])[-1] == '{"temperature": 0.2}'


def test_missing_hf_token_is_written_empty() -> None:
    text = render_env(SETTINGS, "key", None, "secret", Images())
    assert parse_env(text)["HUGGING_FACE_HUB_TOKEN"] == ""


@pytest.mark.parametrize("bad", ["it's", "two\nlines"])
def test_values_no_quoting_can_carry_are_refused_without_echoing_them(bad: str) -> None:
    with pytest.raises(UnsafeEnvValue) as excinfo:
        render_env(SETTINGS, "key", "hf_" + bad, "secret", Images())
    assert excinfo.value.key == "HUGGING_FACE_HUB_TOKEN"
    assert bad not in str(excinfo.value)


def test_empty_api_key_is_refused() -> None:
    with pytest.raises(UnsafeEnvValue):
        render_env(SETTINGS, "", None, "secret", Images())


def test_unbalanced_extra_args_fail_on_the_laptop() -> None:
    with pytest.raises(ValueError):
        render_env(VllmSettings(**{**SETTINGS.__dict__, "extra_args": "--chat-template '"}), "k", None, "s", Images())


def test_parse_env_tolerates_comments_exports_and_quote_styles() -> None:
    text = ("# comment\n\nexport A='x y'\nB=\"say \\\"hi\\\" \\$HOME\"\nC=plain # trailing\n  D = 'spaced'\n"
            "not a line\n")
    assert parse_env(text) == {"A": "x y", "B": 'say "hi" $HOME', "C": "plain", "D": "spaced"}


def test_parse_env_reads_a_sourced_file_with_shell_escaped_quotes() -> None:
    """``.aider-env`` writes ``'\\''`` for a quote; the CLI reads it back with parse_env."""
    assert parse_env("export OPENAI_API_KEY='it'\\''s # not a comment' # a comment\n") == {
        "OPENAI_API_KEY": "it's # not a comment"}


def test_update_env_changes_the_value_and_keeps_unknown_keys_and_comments() -> None:
    text = _env() + "# added by hand\nCUSTOM_FLAG='keep me'\n"
    updated = update_env(text, {"VLLM_MAX_MODEL_LEN": "5120"})
    env = parse_env(updated)
    assert env["VLLM_MAX_MODEL_LEN"] == "5120"
    assert env["CUSTOM_FLAG"] == "keep me"
    assert "# added by hand" in updated
    assert env["VLLM_API_KEY"] == TRICKY_KEY
    assert updated.count("VLLM_MAX_MODEL_LEN=") == 1


def test_update_env_appends_a_key_the_file_lacks() -> None:
    """The seed's sed never appended: a heal of a missing key did nothing."""
    text = "MODEL_ID='m'\n"
    assert parse_env(update_env(text, {"NCCL_P2P_DISABLE": "1"})) == {"MODEL_ID": "m", "NCCL_P2P_DISABLE": "1"}


def test_command_args_reference_the_key_never_the_literal() -> None:
    args = vllm_command_args(SETTINGS)
    assert "--api-key" not in args
    assert TRICKY_KEY not in " ".join(args)
    assert args[args.index("--host") + 1] == "0.0.0.0"
    assert args[args.index("--max-model-len") + 1] == "32768"
    assert args[args.index("-tp") + 1] == "2"
    assert "--enforce-eager" in args
    assert args[-2:] == ["--override-generation-config", '{"temperature": 0.2}']


def test_enforce_eager_flag_only_when_set() -> None:
    assert "--enforce-eager" not in vllm_command_args(VllmSettings(**{**SETTINGS.__dict__, "enforce_eager": False}))


def _launcher_args(env_text: str) -> list[str]:
    """The argv the container's launcher builds from an .env file (it reads its environment, as in compose)."""
    environ = {"PATH": os.environ.get("PATH", "/usr/bin"), **parse_env(env_text)}
    out = subprocess.run([sys.executable, str(PROJECT_ROOT / "cloud_init" / "launch-vllm.py"), "--print-args"],
                         env=environ, capture_output=True, text=True, check=True).stdout
    return json.loads(out)


@pytest.mark.parametrize("overrides", [{}, {"enforce_eager": False, "extra_args": "", "dtype": "auto"}])
def test_container_launcher_builds_the_same_argv(overrides: dict[str, object]) -> None:
    settings = VllmSettings(**{**SETTINGS.__dict__, **overrides})
    env_text = render_env(settings, TRICKY_KEY, None, "s", Images())
    assert _launcher_args(env_text) == vllm_command_args(settings)


def test_a_heal_written_with_update_env_reaches_the_next_vllm_start() -> None:
    healed = update_env(_env(enforce_eager=False), {"VLLM_MAX_MODEL_LEN": "5120", "VLLM_ENFORCE_EAGER": "true"})
    args = _launcher_args(healed)
    assert args[args.index("--max-model-len") + 1] == "5120"
    assert "--enforce-eager" in args


def test_launcher_refuses_to_start_without_api_key() -> None:
    environ = {"PATH": os.environ.get("PATH", "/usr/bin"), **parse_env(_env()), "VLLM_API_KEY": ""}
    result = subprocess.run([sys.executable, str(PROJECT_ROOT / "cloud_init" / "launch-vllm.py")],
                            env=environ, capture_output=True, text=True)
    assert result.returncode == 2
    assert "VLLM_API_KEY" in result.stderr


def test_launcher_log_line_never_shows_the_key() -> None:
    """Here vLLM is not installed, so the exec'd interpreter fails after the launcher printed its argv."""
    environ = {"PATH": os.environ.get("PATH", "/usr/bin"), **parse_env(_env())}
    result = subprocess.run([sys.executable, str(PROJECT_ROOT / "cloud_init" / "launch-vllm.py")],
                            env=environ, capture_output=True, text=True)
    assert "maider: starting vLLM: --model Qwen/Qwen2.5-Coder-32B-Instruct-AWQ" in result.stdout
    assert "--api-key" not in result.stdout
    assert TRICKY_KEY not in result.stdout + result.stderr
    assert "hf_SECRETTOKEN" not in result.stdout + result.stderr
