"""vLLM log diagnosis: one fixture per cause, healthy starts, tricky excerpts, the real-world excerpts, the CLI."""
from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from app.cli.diagnose import EXIT_NO_CAUSE, diagnose as diagnose_command
from app.domain.diagnosis import OOM_LOAD, OOM_WARMUP, Cause, diagnose

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "vllm_logs"
SHARED_LOGS = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "vllm-logs"
HEALTHY_SHARED = ("healthy", "bf16_fallback_warning")


def _log(name: str) -> str:
    return (FIXTURES / f"{name}.log").read_text()


@pytest.mark.parametrize("name, cause", [
    ("free_memory_startup", Cause.FREE_MEMORY_STARTUP),
    ("no_cache_blocks", Cause.NO_CACHE_BLOCKS),
    ("kv_too_small", Cause.KV_TOO_SMALL),
    ("kv_too_small_legacy", Cause.KV_TOO_SMALL),
    ("kv_too_small_cut", Cause.KV_TOO_SMALL),
    ("max_len_beyond_model", Cause.MAX_LEN_BEYOND_MODEL),
    ("cuda_oom_warmup", Cause.CUDA_OOM),
    ("cuda_oom_load", Cause.CUDA_OOM),
    ("tp_heads", Cause.TP_HEADS),
    ("world_size", Cause.WORLD_SIZE),
    ("bf16_turing", Cause.BF16_TURING),
    ("quant_unsupported", Cause.QUANT_UNSUPPORTED),
    ("gated_repo", Cause.GATED_REPO),
    ("repo_not_found", Cause.REPO_NOT_FOUND),
    ("unsupported_arch", Cause.UNSUPPORTED_ARCH),
    ("nccl", Cause.NCCL),
])
def test_each_cause_is_found(name: str, cause: Cause) -> None:
    diagnosis = diagnose(_log(name))
    assert diagnosis is not None
    assert diagnosis.cause is cause
    assert diagnosis.evidence and diagnosis.evidence.strip("…") in _log(name)
    assert diagnosis.summary
    assert diagnosis.fix if diagnosis.healable else diagnosis.user_action


def test_every_cause_has_a_fixture() -> None:
    found = {diagnose(path.read_text()).cause for path in FIXTURES.glob("*.log")  # type: ignore[union-attr]
             if not path.name.startswith("healthy")}
    assert found == set(Cause)


@pytest.mark.parametrize("name", ["healthy_oom_words", "healthy_bf16_fallback"])
def test_healthy_starts_have_no_cause(name: str) -> None:
    assert diagnose(_log(name)) is None


@pytest.mark.parametrize("text", ["", "INFO: there is room for more\n", "ZOOM level: 3 (rOOM)\n",
                                  "WARNING: This may causeOOM during profiling\n"])
def test_loose_words_are_not_failures(text: str) -> None:
    assert diagnose(text) is None


def test_numbers_from_the_new_kv_message() -> None:
    diagnosis = diagnose(_log("kv_too_small"))
    assert diagnosis is not None
    assert diagnosis.numbers == {"max_model_len": 32768, "estimated_max_len": 6816}


def test_numbers_from_the_legacy_kv_message() -> None:
    diagnosis = diagnose(_log("kv_too_small_legacy"))
    assert diagnosis is not None
    assert diagnosis.numbers["estimated_max_len"] == 9040


def test_cut_kv_message_estimates_from_the_memory_figures() -> None:
    """65536 tokens need 12 GiB, 3 GiB are free: a quarter of the length, rounded down to 1024."""
    diagnosis = diagnose(_log("kv_too_small_cut"))
    assert diagnosis is not None
    assert diagnosis.numbers["estimated_max_len"] == 16384


def test_max_len_numbers() -> None:
    diagnosis = diagnose(_log("max_len_beyond_model"))
    assert diagnosis is not None
    assert diagnosis.numbers == {"max_model_len": 65536, "derived_max_len": 32768}


def test_parallel_numbers() -> None:
    tp = diagnose(_log("tp_heads"))
    world = diagnose(_log("world_size"))
    assert tp is not None and world is not None
    assert tp.numbers == {"heads": 40, "tp": 3}
    assert world.numbers == {"tp": 4, "gpus": 2}


def test_free_memory_numbers() -> None:
    diagnosis = diagnose(_log("free_memory_startup"))
    assert diagnosis is not None
    assert diagnosis.numbers == {"free_gib": 18.02, "total_gib": 23.64, "requested_utilization": 0.9}


def test_oom_phase_tells_warmup_from_load() -> None:
    warmup, load = diagnose(_log("cuda_oom_warmup")), diagnose(_log("cuda_oom_load"))
    assert warmup is not None and load is not None
    assert warmup.oom_phase == OOM_WARMUP
    assert load.oom_phase == OOM_LOAD


def test_root_cause_above_engine_failed_wins_over_later_and_weaker_errors() -> None:
    diagnosis = diagnose(_log("root_cause_before_engine_failed"))
    assert diagnosis is not None
    assert diagnosis.cause is Cause.CUDA_OOM
    assert diagnosis.evidence.startswith("(VllmWorker TP0 pid=120)")


def test_gated_model_is_reported_not_the_follow_on_invalid_id() -> None:
    diagnosis = diagnose(_log("gated_repo"))
    assert diagnosis is not None
    assert diagnosis.cause is Cause.GATED_REPO
    assert not diagnosis.healable
    assert "HUGGING_FACE_HUB_TOKEN" in diagnosis.user_action


def test_evidence_is_the_exception_message_not_the_echoed_raise() -> None:
    text = ('ERROR [core.py:708]     raise ValueError("No available memory for the cache blocks. "\n'
            "ERROR [core.py:708] ValueError: No available memory for the cache blocks. Try increasing it.\n")
    diagnosis = diagnose(text)
    assert diagnosis is not None
    assert diagnosis.evidence == "ERROR [core.py:708] ValueError: No available memory for the cache blocks. Try increasing it."


def test_long_evidence_lines_are_cut() -> None:
    text = "ValueError: Model architectures ['X'] are not supported for now. Supported architectures: " + "'A', " * 2000
    diagnosis = diagnose(text)
    assert diagnosis is not None
    assert len(diagnosis.evidence) <= 402
    assert "Model architectures ['X'] are not supported" in diagnosis.evidence


def test_unhealable_causes_say_what_the_user_must_do() -> None:
    for name in ("quant_unsupported", "gated_repo", "repo_not_found", "unsupported_arch"):
        diagnosis = diagnose(_log(name))
        assert diagnosis is not None and not diagnosis.healable and diagnosis.user_action, name


def _shared_logs() -> list[Path]:
    return sorted(SHARED_LOGS.glob("*.log")) if SHARED_LOGS.is_dir() else []


@pytest.mark.skipif(not SHARED_LOGS.is_dir(), reason=f"real vLLM log excerpts not present at {SHARED_LOGS}")
def test_real_excerpts_all_get_their_cause() -> None:
    logs = _shared_logs()
    assert len(logs) >= 40
    wrong = []
    for path in logs:
        expected = path.name.rsplit("-", 1)[0]
        diagnosis = diagnose(path.read_text(encoding="utf-8", errors="replace"))
        got = diagnosis.cause.value if diagnosis else None
        if got != (None if expected in HEALTHY_SHARED else Cause(expected).value):
            wrong.append(f"{path.name}: got {got}")
    assert not wrong, wrong


def test_cli_prints_cause_evidence_and_fix(tmp_path: Path) -> None:
    path = tmp_path / "vllm.log"
    path.write_text(_log("kv_too_small"))
    result = CliRunner().invoke(diagnose_command, [str(path)])
    assert result.exit_code == 0, result.output
    assert "kv_too_small" in result.output
    assert "estimated maximum model length is 6816" in result.output
    assert "maider would: lower VLLM_MAX_MODEL_LEN" in result.output
    assert "estimated_max_len=6816" in result.output


def test_cli_reads_stdin_and_names_the_user_action() -> None:
    result = CliRunner().invoke(diagnose_command, ["-"], input=_log("repo_not_found"))
    assert result.exit_code == 0, result.output
    assert "repo_not_found" in result.output
    assert "maider cannot fix this itself" in result.output
    assert "MODEL_ID" in result.output


def test_cli_exit_3_when_no_cause() -> None:
    result = CliRunner().invoke(diagnose_command, [], input=_log("healthy_oom_words"))
    assert result.exit_code == EXIT_NO_CAUSE
    assert "No known vLLM start-up failure" in result.output


def test_cli_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(diagnose_command, [str(tmp_path / "missing.log")])
    assert result.exit_code == 2
