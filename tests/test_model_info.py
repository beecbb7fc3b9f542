"""Sizing any Hugging Face id: the real huggingface_hub against a local fake of the Hub's endpoints."""
from __future__ import annotations

import json
import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from huggingface_hub import constants as hf_constants

from app.domain.sizing import kv_bytes_per_token
from app.services.model_info import LookupFailure, ModelLookupError, lookup_model
from fakes.hf_hub import FakeHfHub  # tests/ is on sys.path (rootdir-relative, no package)

TOKEN = "hf_right_token"
LLAMA_8B_CONFIG = {
    "architectures": ["LlamaForCausalLM"], "hidden_size": 4096, "num_attention_heads": 32, "num_hidden_layers": 32,
    "num_key_value_heads": 8, "max_position_embeddings": 131072, "torch_dtype": "bfloat16",
    "rope_scaling": {"factor": 8.0, "original_max_position_embeddings": 8192, "rope_type": "llama3"},
}
QWEN_YARN_CONFIG = {
    "architectures": ["Qwen2ForCausalLM"], "hidden_size": 3584, "num_attention_heads": 28, "num_hidden_layers": 28,
    "num_key_value_heads": 4, "max_position_embeddings": 32768, "torch_dtype": "bfloat16",
    "rope_scaling": {"factor": 4.0, "original_max_position_embeddings": 32768, "type": "yarn"},
}


@pytest.fixture
def online(monkeypatch: pytest.MonkeyPatch) -> None:
    """conftest switches huggingface_hub offline for every test; these tests talk to the local fake only."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)


@pytest.fixture
def hub(online: None) -> Iterator[FakeHfHub]:
    with FakeHfHub(allowed_token=TOKEN) as fake:
        fake.add_model("meta-llama/Llama-3.1-8B-Instruct", LLAMA_8B_CONFIG,
                       [4_976_698_672, 4_999_802_720, 4_915_916_176, 1_168_138_808], gated=True, params=8_030_261_248)
        fake.add_model("someone/qwen-long", QWEN_YARN_CONFIG, [], params=7_615_616_512)
        fake.add_model("someone/gguf-only", None)
        yield fake


def test_sizes_an_open_model_from_config_and_parameter_count(hub: FakeHfHub, tmp_path: Path) -> None:
    facts = lookup_model("someone/qwen-long", None, tmp_path, endpoint=hub.url)
    assert facts.model_id == "someone/qwen-long"
    assert kv_bytes_per_token(facts) == 56 * 1024
    assert facts.max_position_embeddings == 131072  # YaRN factor 4 × 32,768
    assert facts.weight_source == "estimate" and round(facts.weight_gb, 1) == 15.2
    assert all(r.authorization is None for r in hub.requests)  # no token configured, none borrowed from the laptop


def test_gated_model_with_the_right_token_sums_its_shards(hub: FakeHfHub, tmp_path: Path) -> None:
    facts = lookup_model("meta-llama/Llama-3.1-8B-Instruct", TOKEN, tmp_path, endpoint=hub.url)
    assert facts.weight_source == "safetensors"
    assert facts.weight_bytes == 4_976_698_672 + 4_999_802_720 + 4_915_916_176 + 1_168_138_808
    assert kv_bytes_per_token(facts) == 128 * 1024
    assert {r.authorization for r in hub.requests} == {f"Bearer {TOKEN}"}


def test_result_is_cached_on_disk_without_the_token(hub: FakeHfHub, tmp_path: Path) -> None:
    lookup_model("meta-llama/Llama-3.1-8B-Instruct", TOKEN, tmp_path, endpoint=hub.url)
    asked = len(hub.requests)
    again = lookup_model("meta-llama/llama-3.1-8b-instruct", TOKEN, tmp_path, endpoint=hub.url)
    assert len(hub.requests) == asked  # answered from home/cache/models
    assert again.num_layers == 32
    cache_files = list((tmp_path / "cache" / "models").glob("*.json"))
    assert len(cache_files) == 1 and TOKEN not in cache_files[0].read_text()
    assert json.loads(cache_files[0].read_text())["facts"]["model_id"] == "meta-llama/Llama-3.1-8B-Instruct"


def test_stale_cache_is_refreshed_but_still_used_when_offline(hub: FakeHfHub, tmp_path: Path) -> None:
    lookup_model("someone/qwen-long", None, tmp_path, endpoint=hub.url, now=1_000.0)
    asked = len(hub.requests)
    week_later = 1_000.0 + 8 * 24 * 3600
    assert lookup_model("someone/qwen-long", None, tmp_path, offline=True, now=week_later).num_layers == 28
    assert len(hub.requests) == asked
    lookup_model("someone/qwen-long", None, tmp_path, endpoint=hub.url, now=week_later)
    assert len(hub.requests) > asked


@pytest.mark.parametrize("token", [None, "hf_not_granted"])
def test_gated_model_without_access_says_how_to_get_it(hub: FakeHfHub, tmp_path: Path, token: str | None,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ModelLookupError) as caught:
        lookup_model("meta-llama/Llama-3.1-8B-Instruct", token, tmp_path, endpoint=hub.url)
    assert caught.value.failure is LookupFailure.GATED
    message = str(caught.value)
    assert message.startswith("meta-llama/Llama-3.1-8B-Instruct is gated: accept its licence on huggingface.co")
    assert "HUGGING_FACE_HUB_TOKEN" in message
    if token:
        assert token not in message and token not in caplog.text
        assert caught.value.__cause__ is None and caught.value.__context__ is not None  # shown chain is ours only


def test_unknown_model_is_a_clear_not_found(hub: FakeHfHub, tmp_path: Path) -> None:
    for token in (None, "hf_some_token"):  # the Hub answers 401 anonymously and 404 with a token
        with pytest.raises(ModelLookupError) as caught:
            lookup_model("someone/does-not-exist", token, tmp_path, endpoint=hub.url)
        assert caught.value.failure is LookupFailure.NOT_FOUND
        assert str(caught.value).startswith("no model someone/does-not-exist on Hugging Face: check the id")


def test_repo_without_config_json_is_reported(hub: FakeHfHub, tmp_path: Path) -> None:
    with pytest.raises(ModelLookupError, match="has no config.json") as caught:
        lookup_model("someone/gguf-only", None, tmp_path, endpoint=hub.url)
    assert caught.value.failure is LookupFailure.NO_CONFIG


def test_unreachable_hub_is_a_network_failure_not_a_crash(online: None, tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}"
    with pytest.raises(ModelLookupError) as caught:
        lookup_model("someone/qwen-long", "hf_secret_value", tmp_path, endpoint=dead)
    assert caught.value.failure is LookupFailure.UNREACHABLE and caught.value.failure.is_network
    assert str(caught.value).startswith("could not reach Hugging Face to size someone/qwen-long: ")
    assert "cannot check it fits" in str(caught.value) and "hf_secret_value" not in str(caught.value)


def test_offline_mode_sends_nothing(hub: FakeHfHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ModelLookupError) as caught:
        lookup_model("someone/qwen-long", None, tmp_path, offline=True, endpoint=hub.url)
    assert caught.value.failure is LookupFailure.OFFLINE
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the user's own switch is honoured too
    with pytest.raises(ModelLookupError, match="offline mode is on"):
        lookup_model("someone/qwen-long", None, tmp_path, endpoint=hub.url)
    assert hub.requests == []


def test_hf_endpoint_variable_is_read_at_call_time(hub: FakeHfHub, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    assert lookup_model("someone/qwen-long", None, tmp_path).num_kv_heads == 4


@pytest.mark.parametrize("bad", ["", "just-a-name", "a/b/c", "org/na me", "../etc", "org/-x", "org/name."])
def test_malformed_ids_are_rejected_before_any_request(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ModelLookupError, match="org/name") as caught:
        lookup_model(bad, None, tmp_path)
    assert caught.value.failure is LookupFailure.INVALID_ID


def test_catalog_models_need_no_network(tmp_path: Path) -> None:
    facts = lookup_model("Qwen/Qwen2.5-Coder-32B-Instruct-AWQ", None, tmp_path, offline=True)
    assert round(facts.weight_gb, 2) == 19.33
    assert not (tmp_path / "cache").exists()


def test_hub_outage_falls_back_to_an_older_cache_entry(hub: FakeHfHub, tmp_path: Path) -> None:
    lookup_model("someone/qwen-long", None, tmp_path, endpoint=hub.url, now=1_000.0)
    hub.fail_status = 503
    week_later = 1_000.0 + 8 * 24 * 3600
    assert lookup_model("someone/qwen-long", None, tmp_path, endpoint=hub.url, now=week_later).num_layers == 28
    with pytest.raises(ModelLookupError) as caught:  # nothing cached for this one
        lookup_model("meta-llama/Llama-3.1-8B-Instruct", TOKEN, tmp_path, endpoint=hub.url)
    assert caught.value.failure is LookupFailure.UNREACHABLE
    assert "the Hub answered HTTP 503" in str(caught.value)
