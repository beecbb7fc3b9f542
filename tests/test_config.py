"""Configuration: precedence, typed parsing with named problems, linode-cli tokens, op:// resolution, no leaks."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from app.config import load_settings, read_linode_cli_token
from app.errors import SecretResolutionError


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_defaults_match_the_original_tool(tmp_path):
    settings = load_settings(tmp_path, environ={})
    assert settings.served_model_name == "coder"
    assert settings.max_model_len == 32768
    assert settings.gpu_memory_utilization == pytest.approx(0.90)
    assert settings.max_num_seqs == 1
    assert settings.problems == ()


def test_environment_wins_over_secrets_file_over_env_file(tmp_path):
    write(tmp_path / ".env", "REGION=us-east\nTYPE=g1-gpu-rtx6000-1\nMODEL_ID=a/b\n")
    write(tmp_path / ".env.secrets", "REGION=us-ord\n")
    settings = load_settings(tmp_path, environ={"TYPE": "g2-gpu-rtx4000a1-s"})
    assert settings.region == "us-ord" and settings.sources["REGION"] == ".env.secrets"
    assert settings.plan == "g2-gpu-rtx4000a1-s" and settings.sources["TYPE"] == "environment"
    assert settings.model_id == "a/b" and settings.sources["MODEL_ID"] == ".env"


def test_every_bad_value_is_a_named_problem(tmp_path):
    write(tmp_path / ".env", "VLLM_MAX_MODEL_LEN=lots\nVLLM_GPU_MEMORY_UTILIZATION=1.5\nWATCHDOG_ENABLED=maybe\n"
                             "VLLM_DTYPE=int3\n")
    settings = load_settings(tmp_path, environ={})
    by_variable = {p.variable: p.message for p in settings.problems}
    assert "'lots' is not a whole number" in by_variable["VLLM_MAX_MODEL_LEN"]
    assert "out of range" in by_variable["VLLM_GPU_MEMORY_UTILIZATION"]
    assert "true/false" in by_variable["WATCHDOG_ENABLED"]
    assert "not one of" in by_variable["VLLM_DTYPE"]
    assert all("(from .env)" in message for message in by_variable.values())


def test_linode_token_from_linode_cli_default_user(tmp_path):
    config = write(tmp_path / "cfg" / "linode-cli", "[DEFAULT]\ndefault-user = alice\n\n[bob]\ntoken = tok-bob\n\n"
                                                    "[alice]\ntoken = tok-alice\nregion = us-ord\n")
    environ = {"XDG_CONFIG_HOME": str(config.parent)}
    assert read_linode_cli_token(environ) == "tok-alice"
    settings = load_settings(tmp_path, environ=environ)
    assert settings.linode_token.reveal() == "tok-alice"
    assert settings.sources["LINODE_TOKEN"] == "linode-cli config"


def test_linode_token_env_wins_over_linode_cli(tmp_path):
    write(tmp_path / "cfg" / "linode-cli", "[DEFAULT]\ndefault-user = a\n[a]\ntoken = from-cli\n")
    settings = load_settings(tmp_path, environ={"XDG_CONFIG_HOME": str(tmp_path / "cfg"), "LINODE_TOKEN": "from-env"})
    assert settings.linode_token.reveal() == "from-env"


def test_secret_repr_never_shows_the_value(tmp_path):
    write(tmp_path / ".env.secrets", "LINODE_TOKEN=planted-secret-123\nHUGGING_FACE_HUB_TOKEN=hf_planted\n")
    settings = load_settings(tmp_path, environ={})
    text = repr(settings) + str(settings.linode_token) + repr(settings.hf_token)
    assert "planted-secret-123" not in text and "hf_planted" not in text
    assert settings.linode_token.reveal() == "planted-secret-123"


def test_op_reference_without_op_cli_is_an_error_naming_the_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    write(tmp_path / ".env.secrets", "HUGGING_FACE_HUB_TOKEN=op://Private/HuggingFace/token\n")
    settings = load_settings(tmp_path, environ={})
    assert settings.hf_token.is_reference
    with pytest.raises(SecretResolutionError) as info:
        settings.hf_token.reveal()
    assert info.value.variable == "HUGGING_FACE_HUB_TOKEN"
    assert "op://" not in str(info.value).replace("1Password reference", "")


def _fake_op(tmp_path: Path, body: str) -> None:
    script = write(tmp_path / "bin" / "op", "#!/bin/sh\n" + body)
    script.chmod(script.stat().st_mode | stat.S_IEXEC)


def test_op_reference_is_resolved_at_use_time(tmp_path, monkeypatch):
    _fake_op(tmp_path, 'test "$1" = read && test "$3" = "op://Private/HF/token" && printf hf_resolved\n')
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    write(tmp_path / ".env.secrets", "HUGGING_FACE_HUB_TOKEN=op://Private/HF/token\n")
    assert load_settings(tmp_path, environ={}).hf_token.reveal() == "hf_resolved"


def test_op_failure_never_returns_the_literal_reference(tmp_path, monkeypatch):
    _fake_op(tmp_path, 'echo "[ERROR] not signed in" >&2; exit 1\n')
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    write(tmp_path / ".env.secrets", "LINODE_TOKEN=op://Private/Linode/token\n")
    with pytest.raises(SecretResolutionError, match="LINODE_TOKEN: 1Password could not resolve.*not signed in"):
        load_settings(tmp_path, environ={}).linode_token.reveal()


def test_settings_page_names_sources_but_never_values(client, tmp_path):
    write(tmp_path / "project" / ".env.secrets", "LINODE_TOKEN=planted-secret-xyz\n")
    html = client.get("/settings/").get_data(as_text=True)
    assert "planted-secret-xyz" not in html
    assert ".env.secrets" in html and "found" in html


def test_plan_cache_survives_concurrent_writers(tmp_path):
    """Many panel threads may fill the catalog cache at once; none may fail or leave a broken file."""
    import threading

    from app.providers.simulated import SimulatedProvider
    from app.services import catalog

    provider = SimulatedProvider(tmp_path)
    errors: list[BaseException] = []

    def fill(region):
        try:
            for _ in range(20):
                catalog.list_plans(provider, tmp_path, region, refresh=True)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=fill, args=(r,)) for r in ("us-ord", "us-east", None, "fr-par")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert catalog.list_plans(provider, tmp_path, "us-ord", cache_only=True)
    assert not list((tmp_path / "cache").glob("*.tmp"))


def test_catalog_is_warmed_so_pages_never_wait_for_the_provider(app):
    from app.providers.simulated import SimulatedProvider
    from app.services import catalog

    app.config["MAIDER_DEMO"] = True
    catalog.warm_cache(app)
    home = Path(app.config["MAIDER_HOME"])
    cached = list((home / "cache").glob("simulated-*.json"))
    assert {p.name for p in cached} == {"simulated-regions.json", "simulated-plans.json"}
    provider = SimulatedProvider(home)
    provider.catalog_is_local = False  # as a remote provider: the plans must come from the cache alone
    assert catalog.list_plans(provider, home, cache_only=True)
