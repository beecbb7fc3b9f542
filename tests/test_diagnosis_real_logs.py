"""Diagnosis of failure logs a real vLLM (0.32, CPU build) printed, captured by the real-vLLM tier's starts.

Each fixture is what ``cloud_init/launch-vllm.py`` and vLLM wrote for a .env that cannot work; the tier in
``tests/real_vllm`` produces the same failures live. A clean real start must name no cause.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from app.cli.diagnose import diagnose as diagnose_command
from app.domain.diagnosis import Cause, diagnose

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "vllm_logs"


def _log(name: str) -> str:
    return (FIXTURES / f"{name}.log").read_text()


@pytest.mark.parametrize("name, cause, evidence, numbers", [
    ("cpu_max_len_beyond_model", Cause.MAX_LEN_BEYOND_MODEL, "User-specified max_model_len (65536)",
     {"max_model_len": 65536, "derived_max_len": 32768}),
    ("cpu_unsupported_arch", Cause.UNSUPPORTED_ARCH, "Model architectures ['MaiderNovelForCausalLM']", {}),
    ("cpu_missing_model_dir", Cause.MODEL_PATH_MISSING, "'/opt/models/no-such-model'", {}),
    ("cpu_bad_flag", Cause.BAD_FLAG, "unrecognized arguments: --enable-auto-tool-choise", {}),
])
def test_each_real_failure_is_named(name: str, cause: Cause, evidence: str, numbers: dict[str, float]) -> None:
    diagnosis = diagnose(_log(name))
    assert diagnosis is not None and diagnosis.cause is cause
    assert evidence in diagnosis.evidence
    assert diagnosis.numbers == numbers
    assert diagnosis.fix if diagnosis.healable else diagnosis.user_action


def test_a_clean_real_start_names_no_cause() -> None:
    assert diagnose(_log("healthy_cpu_start")) is None


def test_the_bad_flag_is_named_not_the_usage_text_before_it() -> None:
    """vLLM prints its full usage (hundreds of flags) before the error; the evidence is the one refused flag."""
    diagnosis = diagnose(_log("cpu_bad_flag"))
    assert diagnosis is not None
    assert diagnosis.evidence == "api_server.py: error: unrecognized arguments: --enable-auto-tool-choise"


def test_an_invalid_flag_value_is_a_bad_flag_too() -> None:
    text = "usage: api_server.py [-h] ...\napi_server.py: error: argument --max-model-len: invalid int value: 'x'\n"
    diagnosis = diagnose(text)
    assert diagnosis is not None and diagnosis.cause is Cause.BAD_FLAG


def test_a_repo_id_that_is_not_a_path_is_not_a_missing_folder() -> None:
    """Only a path (leading /) is a missing folder; a malformed repo id stays a repository problem or nothing."""
    text = "HFValidationError: Repo id must be in the form 'repo_name' or 'namespace/repo_name': 'a/b/c'.\n"
    assert diagnose(text) is None


@pytest.mark.parametrize("name, words", [
    ("cpu_missing_model_dir", ["model_path_missing", "maider cannot fix this itself", "MODEL_ID"]),
    ("cpu_bad_flag", ["bad_flag", "--enable-auto-tool-choise", "extra vLLM arguments"]),
])
def test_maider_diagnose_prints_the_cause_and_what_to_do(name: str, words: list[str]) -> None:
    result = CliRunner().invoke(diagnose_command, [str(FIXTURES / f"{name}.log")])
    assert result.exit_code == 0, result.output
    for word in words:
        assert word in result.output
