"""The setup wizard's rules (services/wizard) on the simulated cloud and on a small scripted provider."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from app.domain.gpu_catalog import QUADRO_RTX6000, RTX4000_ADA
from app.providers.base import AuthError, GpuPlan, Region
from app.services import env_files
from app.services import wizard as wizard_service
from app.services.model_info import LookupFailure, ModelLookupError, lookup_model
from app.services.wizard import Choices, WizardError

QWEN_7B_AWQ = "Qwen/Qwen2.5-Coder-7B-Instruct-AWQ"
QWEN_14B_AWQ = "Qwen/Qwen2.5-Coder-14B-Instruct-AWQ"
QWEN_32B_AWQ = "Qwen/Qwen2.5-Coder-32B-Instruct-AWQ"
MEDIUM_CHOICES = Choices(tier="medium", region="us-ord", plan="g2-gpu-rtx4000a2-s", model_id=QWEN_32B_AWQ,
                         max_model_len=32768, tensor_parallel_size=2)


class ScriptedProvider:
    """Two GPU regions: 'one-gpu' offers only a single 20 GB GPU, 'four-gpu' also offers four; 'no-gpu' has none."""

    name = "scripted"

    def __init__(self, fail: Exception | None = None) -> None:
        self.fail = fail

    def regions(self) -> list[Region]:
        if self.fail:
            raise self.fail
        return [Region("one-gpu", "Small Town", "us", True, True), Region("four-gpu", "Big City", "de", True, True),
                Region("no-gpu", "Nowhere", "us", False, True)]

    def gpu_plans(self, region: str | None = None) -> list[GpuPlan]:
        plans = [
            GpuPlan("ada-x4", "Ada x4", 4, RTX4000_ADA, 2.96, 98304, 48, ("four-gpu",)),
            GpuPlan("ada-x1", "Ada x1", 1, RTX4000_ADA, 0.52, 16384, 4, ("one-gpu", "four-gpu")),
            GpuPlan("turing-x1", "Turing x1", 1, QUADRO_RTX6000, 1.50, 32768, 8, ("four-gpu",)),
        ]
        return [p for p in plans if region is None or region in p.regions]


@pytest.fixture
def home() -> Path:
    return Path(os.environ["MAIDER_HOME"])


@pytest.fixture
def demo_ctx(home: Path) -> wizard_service.Context:
    return wizard_service.open_context(Path.cwd(), home, demo=True)


def scripted_ctx(home: Path, provider: ScriptedProvider) -> wizard_service.Context:
    return wizard_service.Context(workdir=Path.cwd(), home=home, demo=False,
                                  settings=wizard_service.load_settings(Path.cwd()),
                                  provider_factory=lambda name, settings, h: provider)


def test_regions_are_filtered_by_what_the_tier_needs(home: Path) -> None:
    ctx = scripted_ctx(home, ScriptedProvider())
    small = {o.region.id for o in wizard_service.region_options(ctx, "small", utc_offset_hours=0)}
    large = {o.region.id for o in wizard_service.region_options(ctx, "large", utc_offset_hours=0)}
    assert small == {"one-gpu", "four-gpu"}  # 'no-gpu' never appears
    assert large == {"four-gpu"}  # a 70B model needs the four-GPU plan


def test_region_list_puts_the_nearest_first_and_recommends_it(demo_ctx) -> None:
    options = wizard_service.region_options(demo_ctx, "small", utc_offset_hours=-6)  # Chicago time
    assert options[0].region.id == "us-ord" and options[0].recommended
    assert options[0].latency.text == "near you"
    assert sum(o.recommended for o in options) == 1
    osaka = next(o for o in options if o.region.id == "jp-osa")
    assert osaka.latency.level == "far" and osaka.latency.text == "9 time zones away"
    assert "us-central" not in {o.region.id for o in options}  # Dallas has no GPUs
    assert wizard_service.latency_hint("xx-unknown", 0) is None


def test_plans_are_the_regions_own_sorted_by_price_and_the_cheapest_that_fits_is_recommended(demo_ctx) -> None:
    options = wizard_service.plan_options(demo_ctx, "medium", "us-ord")
    prices = [o.plan.hourly_price for o in options]
    assert prices == sorted(prices)
    assert all("us-ord" in o.plan.regions for o in options)
    assert not any(o.plan.id.startswith("g1-") for o in options)  # Turing plans are not offered in us-ord
    recommended = [o for o in options if o.recommended]
    assert [o.plan.id for o in recommended] == ["g2-gpu-rtx4000a2-s"]
    cheaper = [o for o in options if o.plan.hourly_price < recommended[0].plan.hourly_price]
    assert cheaper and not any(o.fits for o in cheaper)  # the one-GPU plans are too small for 32B
    assert QWEN_32B_AWQ in recommended[0].fitting_models


def test_a_plan_outside_the_region_is_refused(demo_ctx) -> None:
    with pytest.raises(WizardError) as caught:
        wizard_service.choose_plan(demo_ctx, Choices(tier="small", region="us-ord"), "g1-gpu-rtx6000-1")
    assert caught.value.field == "plan"
    assert "not offered in us-ord" in str(caught.value)


def test_model_suggestions_fit_the_plan_and_propose_a_context(demo_ctx) -> None:
    plan = wizard_service.find_plan(demo_ctx, "small", "us-ord", "g2-gpu-rtx4000a1-s")
    options = wizard_service.model_options("small", plan)
    ids = [o.entry.model_id for o in options]
    assert ids[0] == QWEN_7B_AWQ and options[0].recommended
    assert QWEN_32B_AWQ not in ids  # 19 GB of weights cannot run on one 20 GB GPU
    fourteen = options[ids.index(QWEN_14B_AWQ)]
    assert fourteen.context == 16384 and fourteen.max_context == 29696


def test_oversize_context_is_refused_with_the_largest_that_fits_and_the_cheapest_plan(demo_ctx) -> None:
    choices = Choices(tier="small", region="us-ord", plan="g2-gpu-rtx4000a1-s")
    with pytest.raises(WizardError) as caught:
        wizard_service.choose_model(demo_ctx, choices, QWEN_14B_AWQ, 32768)
    message = str(caught.value)
    assert caught.value.field == "max_model_len"
    assert "largest context that fits: 29,696" in message
    assert "cheapest plan that fits 32K: g2-gpu-rtx4000a2-s at $1.05/h" in message


def test_a_model_too_big_for_the_plan_is_refused_with_the_cheapest_plan_that_runs_it(demo_ctx) -> None:
    choices = Choices(tier="small", region="us-ord", plan="g2-gpu-rtx4000a1-s")
    with pytest.raises(WizardError) as caught:
        wizard_service.choose_model(demo_ctx, choices, QWEN_32B_AWQ, None)
    assert caught.value.field == "model_id"
    assert "does not fit on g2-gpu-rtx4000a1-s" in str(caught.value)
    assert "cheapest plan that fits 32K: g2-gpu-rtx4000a2-s" in str(caught.value)


def test_empty_context_takes_the_proposed_one_and_sets_tensor_parallelism(demo_ctx) -> None:
    choices, sizing = wizard_service.choose_model(
        demo_ctx, Choices(tier="medium", region="us-ord", plan="g2-gpu-rtx4000a2-s"), QWEN_32B_AWQ, None)
    assert choices == MEDIUM_CHOICES
    assert sizing.max_context == 32768 and sizing.note is None


def test_a_model_that_cannot_be_sized_offline_is_accepted_with_a_note_but_needs_a_context(demo_ctx) -> None:
    choices = Choices(tier="custom", region="us-ord", plan="g2-gpu-rtx4000a1-s")
    with pytest.raises(WizardError) as caught:
        wizard_service.choose_model(demo_ctx, choices, "someone/brand-new-coder", None)
    assert caught.value.field == "max_model_len"
    chosen, sizing = wizard_service.choose_model(demo_ctx, choices, "someone/brand-new-coder", 8192)
    assert chosen.model_id == "someone/brand-new-coder" and chosen.max_model_len == 8192
    assert chosen.tensor_parallel_size is None
    assert "could not size someone/brand-new-coder (offline)" in sizing.note


def test_a_bad_model_id_is_an_error_on_the_model_field(demo_ctx) -> None:
    choices = Choices(tier="custom", region="us-ord", plan="g2-gpu-rtx4000a1-s")
    with pytest.raises(WizardError) as caught:
        wizard_service.choose_model(demo_ctx, choices, "not a model id", 8192)
    assert caught.value.field == "model_id" and "org/name" in str(caught.value)

    def gated(model_id, hf_token, home, **kwargs):
        raise ModelLookupError(f"{model_id} is gated: accept its licence", model_id, LookupFailure.GATED)

    with pytest.raises(WizardError, match="is gated"):
        wizard_service.size_model(demo_ctx, "custom", "us-ord",
                                  wizard_service.find_plan(demo_ctx, "custom", "us-ord", "g2-gpu-rtx4000a1-s"),
                                  "meta-llama/Llama-3.1-8B-Instruct", 8192, model_lookup=gated)


def test_provider_failures_become_a_clear_message(home: Path) -> None:
    ctx = scripted_ctx(home, ScriptedProvider(fail=AuthError("Linode refused the token (401): create a token")))
    with pytest.raises(WizardError) as caught:
        wizard_service.region_options(ctx, "small")
    assert str(caught.value) == "could not list regions from scripted: Linode refused the token (401): create a token"


def test_without_a_linode_token_the_region_step_says_how_to_add_one(home: Path) -> None:
    ctx = wizard_service.open_context(Path.cwd(), home, demo=False)
    with pytest.raises(WizardError, match="no Linode token: set LINODE_TOKEN"):
        wizard_service.region_options(ctx, "small")


def test_save_merges_keeps_unrelated_keys_and_comments_and_writes_0600(demo_ctx) -> None:
    Path(".env").write_text("# my project\nFOO=bar  # keep me\n\nexport REGION=us-east # where\n"
                            "VLLM_MAX_MODEL_LEN=4096\nWATCHDOG_ENABLED=true\n")
    Path(".env").chmod(0o644)
    Path(".env.secrets").write_text("# tokens\nLINODE_TOKEN=old-linode-token-123\nOTHER_SECRET=x\n")
    result, saved = wizard_service.save(demo_ctx, MEDIUM_CHOICES, {"linode": None, "hf": "hf_new_token_value"})
    assert result.ok and saved is not None
    env = Path(".env").read_text()
    assert env.startswith("# my project\nFOO=bar  # keep me\n\nexport REGION=us-ord # where\n"
                          "VLLM_MAX_MODEL_LEN=32768\nWATCHDOG_ENABLED=true\n")
    for line in (f"MODEL_ID={QWEN_32B_AWQ}", "TYPE=g2-gpu-rtx4000a2-s", "VLLM_TENSOR_PARALLEL_SIZE=2",
                 "SERVED_MODEL_NAME=coder"):
        assert line + "\n" in env
    secrets = Path(".env.secrets").read_text()
    assert secrets == ("# tokens\nLINODE_TOKEN=old-linode-token-123\nOTHER_SECRET=x\n"
                       "HUGGING_FACE_HUB_TOKEN=hf_new_token_value\n")  # empty Linode field kept the old token
    for name in (".env", ".env.secrets"):
        assert stat.S_IMODE(Path(name).stat().st_mode) == 0o600
    settings = wizard_service.load_settings(Path.cwd())
    assert (settings.region, settings.plan, settings.model_id, settings.max_model_len) == (
        "us-ord", "g2-gpu-rtx4000a2-s", QWEN_32B_AWQ, 32768)
    assert settings.watchdog_enabled is True


def test_op_references_are_saved_verbatim(demo_ctx, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    op = bin_dir / "op"
    op.write_text("#!/bin/sh\nprintf resolved-by-1password\n")
    op.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    reference = "op://Private/Hugging Face/token"
    result, saved = wizard_service.save(demo_ctx, MEDIUM_CHOICES, {"hf": reference, "linode": "op://Work/Linode/cred"})
    assert saved is not None, result.report.problems
    secrets = Path(".env.secrets").read_text()
    assert "HUGGING_FACE_HUB_TOKEN='op://Private/Hugging Face/token'\n" in secrets
    assert "LINODE_TOKEN=op://Work/Linode/cred\n" in secrets
    assert "resolved-by-1password" not in secrets
    settings = wizard_service.load_settings(Path.cwd())
    assert settings.hf_token.is_reference and settings.hf_token._value == reference


def test_oversize_choice_is_refused_at_save_and_nothing_is_written(demo_ctx) -> None:
    Path(".env").write_text("FOO=bar\n")
    choices = Choices(tier="small", region="us-ord", plan="g2-gpu-rtx4000a1-s", model_id=QWEN_14B_AWQ,
                      max_model_len=32768, tensor_parallel_size=1)
    result, saved = wizard_service.save(demo_ctx, choices, {"linode": "a-linode-token-1234"})
    assert saved is None and not result.ok
    problem = next(p for p in result.report.problems if p.variable == "VLLM_MAX_MODEL_LEN")
    assert "largest context that fits: 29,696" in problem.message
    assert "cheapest plan that fits 32K: g2-gpu-rtx4000a2-s at $1.05/h" in problem.message
    assert Path(".env").read_text() == "FOO=bar\n"
    assert not Path(".env.secrets").exists()


@pytest.mark.parametrize("typed, ok", [
    ("", True), ("   ", True), ("op://vault/item/field", True), ("op://vault/item/section/field", True),
    ("0123456789abcdef0123456789abcdef", True), ("hf_AbC-123_xyz", True),
    ("op://only-vault", False), ("has space inside", False), ("short", False), ("x" * 513, False),
])
def test_token_shape(typed: str, ok: bool) -> None:
    if ok:
        assert wizard_service.check_token(typed, "LINODE_TOKEN") == (typed.strip() or None)
    else:
        with pytest.raises(WizardError):
            wizard_service.check_token(typed, "LINODE_TOKEN")


def test_credentials_say_where_they_were_found_never_the_value(demo_ctx, home: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    Path(".env.secrets").write_text("HUGGING_FACE_HUB_TOKEN=op://Private/HF/token\n")
    monkeypatch.setenv("LINODE_TOKEN", "linode-from-environment")
    info = wizard_service.credential_info(wizard_service.load_settings(Path.cwd()))
    assert info["hf"].description == "1Password reference found in .env.secrets"
    assert info["linode"].description == "token found in the environment"
    assert info["linode"].overridden_by_environment
    assert "linode-from-environment" not in repr(info)
    ctx = wizard_service.open_context(Path.cwd(), home, demo=True)
    review = wizard_service.review(ctx, MEDIUM_CHOICES, {"linode": "typed-linode-token"},
                                   model_lookup=lookup_model)
    assert any("overrides the token saved to .env.secrets" in w for w in review.warnings)


def test_merge_env_text_handles_duplicates_removal_quotes_and_a_missing_final_newline() -> None:
    text = "A=1\nVLLM_TENSOR_PARALLEL_SIZE=4\nB='x y'\nMULTI=\"one\ntwo\"\nVLLM_TENSOR_PARALLEL_SIZE=2\nLAST=z"
    merged = env_files.merge_env_text(text, {"VLLM_TENSOR_PARALLEL_SIZE": None, "MODEL_ID": "org/model",
                                                  "B": "has spaces $HOME"})
    assert merged == "A=1\nB='has spaces $HOME'\nMULTI=\"one\ntwo\"\nLAST=z\nMODEL_ID=org/model\n"
    with pytest.raises(ValueError):
        env_files.format_env_value("two\nlines")
