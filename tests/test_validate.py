"""``maider validate`` and the validation service, on the simulated cloud (Linode's real GPU catalog, offline)."""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from huggingface_hub import constants as hf_constants

from app.cli.validate import validate
from app.config import load_settings
from app.domain.sizing import CONTEXT_STEP
from app.providers.base import AuthError
from app.providers.simulated import SimulatedProvider, simulated_plans
from app.services.model_info import LookupFailure, ModelLookupError
from app.services.validation import check_fit, validate_launch
from fakes.hf_hub import FakeHfHub  # tests/ is on sys.path (rootdir-relative, no package)

QWEN_32B_AWQ = "Qwen/Qwen2.5-Coder-32B-Instruct-AWQ"
GATED_TOKEN = "hf_secret_that_must_not_leak"


def write_env(text: str, secrets: str = "") -> None:
    Path(".env").write_text("MAIDER_PROVIDER=simulated\n" + text)
    if secrets:
        Path(".env.secrets").write_text(secrets)


def run_validate() -> Result:
    return CliRunner().invoke(validate, [], catch_exceptions=False)


def problem_lines(result: Result) -> list[str]:
    return [line for line in result.output.splitlines() if line.startswith("✗ ")]


@pytest.fixture
def home() -> Path:
    return Path(os.environ["MAIDER_HOME"])


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHfHub]:
    """A local fake Hub reached through HF_ENDPOINT, with huggingface_hub switched back online for it."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    with FakeHfHub(allowed_token="hf_granted") as fake:
        monkeypatch.setenv("HF_ENDPOINT", fake.url)
        yield fake


def test_valid_configuration_passes() -> None:
    write_env(f"REGION=us-ord\nTYPE=g2-gpu-rtx4000a2-s\nMODEL_ID={QWEN_32B_AWQ}\nVLLM_MAX_MODEL_LEN=32768\n")
    result = run_validate()
    assert result.exit_code == 0, result.output
    assert problem_lines(result) == []
    assert f"✓ configuration is valid: {QWEN_32B_AWQ} on g2-gpu-rtx4000a2-s in us-ord" in result.output
    assert "• Qwen/Qwen2.5-Coder-32B-Instruct-AWQ fits: 9.7 GB of weights per GPU" in result.output


def test_broken_env_names_every_problem_and_exits_non_zero() -> None:
    write_env("REGION=mars-1\nTYPE=g2-gpu-rtx4000a1-s\nVLLM_TENSOR_PARALLEL_SIZE=2\n"
              f"MODEL_ID={QWEN_32B_AWQ}\nVLLM_GPU_MEMORY_UTILIZATION=lots\n")
    result = run_validate()
    assert result.exit_code == 1
    problems = problem_lines(result)
    variables = [line.split(":")[0].removeprefix("✗ ") for line in problems]
    assert set(variables) == {"VLLM_GPU_MEMORY_UTILIZATION", "REGION", "VLLM_TENSOR_PARALLEL_SIZE", "TYPE"}
    text = "\n".join(problems)
    assert "'lots' is not a number (from .env)" in text
    assert "unknown region 'mars-1': GPU regions are" in text and "us-ord" in text
    assert "tensor parallel size 2 needs 2 GPUs but the plan has 1" in text
    assert "won't fit: the 19.33 GB of weights over 1 GPU need " in text and "plan has 20 GB; cheapest plan" in text
    assert f"{len(problems)} problems found" in result.output


def test_too_long_context_gives_the_largest_that_fits_and_the_cheapest_plan_that_does() -> None:
    write_env("REGION=us-ord\nTYPE=g2-gpu-rtx4000a1-s\nMODEL_ID=Qwen/Qwen2.5-Coder-14B-Instruct-AWQ\n"
              "VLLM_MAX_MODEL_LEN=32768\n")
    result = run_validate()
    assert result.exit_code == 1
    [line] = problem_lines(result)
    assert line.startswith("✗ VLLM_MAX_MODEL_LEN: won't fit: 32,768 tokens of context need ")
    assert " GB per GPU, plan has 20 GB; largest context that fits: 29,696 tokens; " in line
    assert line.endswith("cheapest plan that fits 32K: g2-gpu-rtx4000a2-s at $1.05/h (tensor parallel 2)")


def test_missing_essentials_are_each_named() -> None:
    write_env("")
    result = run_validate()
    assert result.exit_code == 1
    assert {line.split(":")[0] for line in problem_lines(result)} == {"✗ REGION", "✗ TYPE", "✗ MODEL_ID"}


def test_plan_not_offered_in_the_region(home: Path) -> None:
    write_env(f"REGION=us-ord\nTYPE=g1-gpu-rtx6000-2\nMODEL_ID={QWEN_32B_AWQ}\nVLLM_MAX_MODEL_LEN=16384\n")
    report = validate_launch(load_settings(), SimulatedProvider(home), home)
    assert [p.variable for p in report.problems] == ["TYPE"]
    assert report.problems[0].message.startswith("plan g1-gpu-rtx6000-2 is not offered in us-ord: regions that")
    assert "us-east" in report.problems[0].message
    assert all("rtx4000" in r.plan.id for r in report.recommendations)  # only plans the region offers


def test_unknown_plan(home: Path) -> None:
    write_env(f"REGION=us-ord\nTYPE=g9-quantum\nMODEL_ID={QWEN_32B_AWQ}\n")
    report = validate_launch(load_settings(), SimulatedProvider(home), home)
    assert [str(p).split(":")[0] for p in report.problems] == ["TYPE"]
    assert "unknown GPU plan 'g9-quantum'" in report.problems[0].message


def test_unset_tp_defaults_to_all_gpus_and_three_does_not_divide_40_heads(home: Path) -> None:
    write_env(f"REGION=us-east\nTYPE=g1-gpu-rtx6000-3\nMODEL_ID={QWEN_32B_AWQ}\nVLLM_MAX_MODEL_LEN=16384\n")
    report = validate_launch(load_settings(), SimulatedProvider(home), home)
    assert [p.variable for p in report.problems] == ["VLLM_TENSOR_PARALLEL_SIZE"]
    message = report.problems[0].message
    assert "does not divide" in message and "40 attention heads" in message
    assert "defaults to the plan's 3 GPUs" in message


def test_bf16_model_on_turing_gets_a_half_precision_note() -> None:
    write_env("REGION=us-east\nTYPE=g1-gpu-rtx6000-1\nMODEL_ID=Qwen/Qwen2.5-Coder-7B-Instruct\n"
              "VLLM_MAX_MODEL_LEN=16384\n")
    result = run_validate()
    assert result.exit_code == 0, result.output
    assert "• --dtype half will be used: Quadro RTX 6000 (sm_75) has no bf16" in result.output


def test_explicit_bfloat16_on_turing_is_a_problem() -> None:
    write_env("REGION=us-east\nTYPE=g1-gpu-rtx6000-1\nMODEL_ID=Qwen/Qwen2.5-Coder-7B-Instruct\n"
              "VLLM_MAX_MODEL_LEN=16384\nVLLM_DTYPE=bfloat16\n")
    result = run_validate()
    assert result.exit_code == 1
    assert any(line.startswith("✗ VLLM_DTYPE: ") for line in problem_lines(result))


def test_offline_sizing_is_skipped_with_a_note_not_a_failure() -> None:
    write_env("REGION=us-ord\nTYPE=g2-gpu-rtx4000a1-s\nMODEL_ID=someone/brand-new-coder\n")
    result = run_validate()  # conftest keeps huggingface_hub offline
    assert result.exit_code == 0, result.output
    assert "• sizing skipped: could not reach Hugging Face to size someone/brand-new-coder" in result.output


def test_model_sized_through_the_hub_and_unknown_ids_are_problems(hub: FakeHfHub) -> None:
    hub.add_model("someone/tiny-coder", {"hidden_size": 2048, "num_attention_heads": 16, "num_hidden_layers": 24,
                                         "num_key_value_heads": 2, "max_position_embeddings": 32768,
                                         "torch_dtype": "bfloat16"}, [3_000_000_000])
    write_env("REGION=us-ord\nTYPE=g2-gpu-rtx4000a1-s\nMODEL_ID=someone/tiny-coder\n")
    assert run_validate().exit_code == 0
    write_env("REGION=us-ord\nTYPE=g2-gpu-rtx4000a1-s\nMODEL_ID=someone/typo-coder\n")
    result = run_validate()
    assert result.exit_code == 1
    assert problem_lines(result) == ["✗ MODEL_ID: no model someone/typo-coder on Hugging Face: check the id "
                                     "(if it is private, set HUGGING_FACE_HUB_TOKEN)"]


def test_gated_model_is_a_problem_and_the_token_never_shows(hub: FakeHfHub) -> None:
    hub.add_model("meta-llama/Llama-3.1-8B-Instruct", {"hidden_size": 4096, "num_attention_heads": 32,
                                                       "num_hidden_layers": 32, "num_key_value_heads": 8},
                  [16_000_000_000], gated=True)
    write_env("REGION=us-ord\nTYPE=g2-gpu-rtx4000a1-s\nMODEL_ID=meta-llama/Llama-3.1-8B-Instruct\n",
              secrets=f"HUGGING_FACE_HUB_TOKEN={GATED_TOKEN}\n")
    result = run_validate()
    assert result.exit_code == 1
    assert "✗ MODEL_ID: meta-llama/Llama-3.1-8B-Instruct is gated: accept its licence" in result.output
    assert GATED_TOKEN not in result.output
    assert any(r.authorization == f"Bearer {GATED_TOKEN}" for r in hub.requests)  # it did go to the Hub


class RefusingProvider(SimulatedProvider):
    """The far side saying no: a cloud that rejects the token."""

    name = "linode"

    def regions(self):  # type: ignore[no-untyped-def]
        raise AuthError("Linode refused the token (401): check LINODE_TOKEN has read/write on Linodes")


def test_provider_auth_error_names_the_token(home: Path) -> None:
    write_env(f"REGION=us-ord\nTYPE=g2-gpu-rtx4000a1-s\nMODEL_ID={QWEN_32B_AWQ}\n")
    report = validate_launch(load_settings(), RefusingProvider(home), home)
    assert [p.variable for p in report.problems] == ["LINODE_TOKEN"]
    assert "refused the token" in report.problems[0].message


def test_a_digitalocean_token_refused_is_named_as_digitalocean_s(home: Path, tmp_path: Path) -> None:
    from app.providers.digitalocean import DigitalOceanProvider
    from fakes.digitalocean_api import FakeDigitalOceanApi

    write_env(f"REGION=nyc2\nTYPE=gpu-h100x1-80gb\nMODEL_ID={QWEN_32B_AWQ}\n")
    with FakeDigitalOceanApi() as api:
        provider = DigitalOceanProvider("dop_v1_not-the-right-one", base_url=api.base_url, sleep=lambda _s: None)
        report = validate_launch(load_settings(), provider, home)
    assert [p.variable for p in report.problems] == ["DIGITALOCEAN_TOKEN"]
    assert "LINODE" not in report.problems[0].message


def test_linode_without_a_token_is_a_problem_before_any_call(home: Path) -> None:
    Path(".env").write_text(f"REGION=us-ord\nTYPE=g2-gpu-rtx4000a1-s\nMODEL_ID={QWEN_32B_AWQ}\n")
    settings = load_settings()
    assert settings.provider == "linode"
    report = validate_launch(settings, RefusingProvider(home), home)  # would raise if it were asked
    assert report.problems[0].variable == "LINODE_TOKEN"
    assert report.problems[0].message.startswith("not set:")


def test_check_fit_for_the_wizard(home: Path) -> None:
    two_ada = next(p for p in simulated_plans() if p.id == "g2-gpu-rtx4000a2-s")
    report = check_fit(QWEN_32B_AWQ, two_ada, 32768, None, hf_token=None, home=home)
    assert report.fits and report.tp == 2
    shorter = check_fit("Qwen/Qwen2.5-Coder-14B-Instruct-AWQ", simulated_plans("us-ord")[0], 65536, 1,
                        hf_token=None, home=home)
    assert not shorter.fits and shorter.max_context % CONTEXT_STEP == 0
    with pytest.raises(ModelLookupError) as caught:
        check_fit("someone/not-cached", two_ada, 8192, None, hf_token=None, home=home, offline=True)
    assert caught.value.failure is LookupFailure.OFFLINE


def test_missing_plan_still_gets_the_cheapest_one_that_fits() -> None:
    write_env(f"REGION=us-ord\nMODEL_ID={QWEN_32B_AWQ}\n")
    result = run_validate()
    assert result.exit_code == 1
    assert "• cheapest plan that fits 32K: g2-gpu-rtx4000a2-s at $1.05/h (tensor parallel 2)" in result.output
