"""Settings from the environment, then ``.env`` and ``.env.secrets`` in the working directory.

Precedence: a variable set in the process environment wins over ``.env.secrets``, which wins over ``.env``. Values
are parsed into typed fields; every bad value becomes a ``ConfigProblem`` naming the variable instead of an
exception, so ``maider validate`` can report them all at once.

Secrets (Linode token, Hugging Face token) are held in ``Secret`` wrappers whose ``repr``/``str`` never show the value,
and are resolved at use time: an ``op://`` reference is read with the 1Password CLI, and a failure is a
``SecretResolutionError`` naming the variable -- the literal reference is never used as a token.
"""
from __future__ import annotations

import configparser
import os
import shutil
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dotenv import dotenv_values

from app.domain.sizing import MAX_CONTEXT_TOKENS, MIN_CONTEXT_TOKENS
from app.errors import ConfigError, SecretResolutionError
from app.redaction import register_secret

DEFAULT_PORT = 8765
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "[::1]", "::1"})  # the only hosts the panel serves
ENV_FILE = ".env"
SECRETS_FILE = ".env.secrets"
OP_TIMEOUT_S = 20
SECRET_VARIABLES = ("LINODE_TOKEN", "HUGGING_FACE_HUB_TOKEN", "DIGITALOCEAN_TOKEN")
# Settings field of each secret variable (HF_TOKEN is read as a fallback for HUGGING_FACE_HUB_TOKEN below).
SECRET_FIELDS = {"LINODE_TOKEN": "linode_token", "HUGGING_FACE_HUB_TOKEN": "hf_token",
                  "DIGITALOCEAN_TOKEN": "digitalocean_token"}
# Every cloud maider can launch on; "simulated" is the demo cloud on this machine.
PROVIDER_NAMES = ("linode", "digitalocean", "aws", "ssh", "simulated")


class Secret:
    """A secret value (or an ``op://`` reference to one) that never shows itself in logs, reprs or templates."""

    __slots__ = ("_value", "variable", "source")

    def __init__(self, value: str, variable: str, source: str) -> None:
        self._value = value
        self.variable = variable
        self.source = source  # human description of where it came from, e.g. ".env.secrets"
        if not self.is_reference:
            register_secret(value)  # masked in logs from the moment it is read, not only once used

    @property
    def is_reference(self) -> bool:
        return self._value.startswith("op://")

    def reveal(self) -> str:
        """Return the usable secret, resolving an ``op://`` reference now (and masking it in every log)."""
        value = resolve_op_reference(self._value, self.variable) if self.is_reference else self._value
        register_secret(value)
        return value

    def __repr__(self) -> str:
        kind = "1Password reference" if self.is_reference else "value"
        return f"<Secret {self.variable} ({kind} from {self.source})>"

    __str__ = __repr__


def resolve_op_reference(reference: str, variable: str) -> str:
    """Read an ``op://vault/item/field`` reference with the 1Password CLI; raise with the variable's name on failure."""
    op = shutil.which("op")
    if op is None:
        raise SecretResolutionError(
            f"{variable} is a 1Password reference but the 1Password CLI 'op' is not installed or not on PATH; "
            "install it and run 'op signin', or put the value itself in .env.secrets",
            variable,
        )
    try:
        result = subprocess.run(
            [op, "read", "--no-newline", reference],
            capture_output=True, text=True, timeout=OP_TIMEOUT_S, check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SecretResolutionError(f"{variable}: could not run the 1Password CLI ({type(exc).__name__})",
                                    variable) from None
    value = result.stdout.strip()
    if result.returncode != 0 or not value:
        # op's stderr names the vault/item, not the secret, so it is safe to relay (first line only).
        reason = (result.stderr.strip().splitlines() or ["no value returned"])[0][:200]
        raise SecretResolutionError(
            f"{variable}: 1Password could not resolve the reference ({reason}); run 'op signin' and check the path",
            variable,
        )
    return value


@dataclass(frozen=True)
class ConfigProblem:
    variable: str  # the variable at fault, e.g. "VLLM_MAX_MODEL_LEN"
    message: str  # what is wrong and what to do

    def __str__(self) -> str:
        return f"{self.variable}: {self.message}"


@dataclass(frozen=True)
class Settings:
    """The user's launch configuration; see ``FIELDS`` for variable names and defaults."""

    provider: str = "linode"
    region: str | None = None
    plan: str | None = None
    firewall_id: str | None = None
    model_id: str | None = None
    served_model_name: str = "coder"
    max_model_len: int = 32768
    gpu_memory_utilization: float = 0.90
    max_num_seqs: int = 1
    tensor_parallel_size: int | None = None  # None: use every GPU of the plan
    dtype: str = "auto"
    kv_cache_dtype: str = "auto"
    extra_args: str = ""
    watchdog_enabled: bool = False
    watchdog_timeout_minutes: int = 30
    watchdog_warning_minutes: int = 5
    max_lifetime_hours: float = 0.0  # 0 = no hard limit
    budget_usd: float = 0.0  # 0 = no per-session budget cap
    failsafe: bool = True  # the VM deletes itself when maider goes silent (FAILSAFE=off turns it off)
    failsafe_minutes: int | None = None  # None: the idle timeout, else 30
    linode_api_url: str | None = None
    digitalocean_api_url: str | None = None  # tests point this at a fake DigitalOcean API
    vllm_image: str | None = None  # None: the pinned default in app.domain.vllm_env
    open_webui_image: str | None = None
    nvidia_driver: str | None = None
    linode_token: Secret | None = None
    digitalocean_token: Secret | None = None  # AWS credentials come from boto3's own chain, never from here
    hf_token: Secret | None = None
    problems: tuple[ConfigProblem, ...] = ()
    sources: Mapping[str, str] = field(default_factory=dict)  # variable -> where it was found


def _parse_int(lo: int, hi: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw.replace("_", "").replace(",", ""))
        except ValueError:
            raise ValueError(f"'{raw}' is not a whole number") from None
        if not lo <= value <= hi:
            raise ValueError(f"{value} is out of range ({lo}–{hi})")
        return value
    return parse


def _parse_float(lo: float, hi: float) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"'{raw}' is not a number") from None
        if not lo <= value <= hi:
            raise ValueError(f"{value} is out of range ({lo}–{hi})")
        return value
    return parse


def _parse_bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"'{raw}' is not true/false")


def _parse_choice(*choices: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw not in choices:
            raise ValueError(f"'{raw}' is not one of {', '.join(choices)}")
        return raw
    return parse


def _parse_text(raw: str) -> str | None:
    return raw.strip() or None


# variable -> (Settings field, parser). The seed's variable names are kept so existing .env files work.
FIELDS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "PROVIDER": ("provider", _parse_choice(*PROVIDER_NAMES)),
    "MAIDER_PROVIDER": ("provider", _parse_choice(*PROVIDER_NAMES)),  # wins over PROVIDER (read after it)
    "REGION": ("region", _parse_text),
    "TYPE": ("plan", _parse_text),
    "FIREWALL_ID": ("firewall_id", _parse_text),
    "MODEL_ID": ("model_id", _parse_text),
    "SERVED_MODEL_NAME": ("served_model_name", lambda raw: raw.strip() or "coder"),
    "VLLM_MAX_MODEL_LEN": ("max_model_len", _parse_int(MIN_CONTEXT_TOKENS, MAX_CONTEXT_TOKENS)),
    "VLLM_GPU_MEMORY_UTILIZATION": ("gpu_memory_utilization", _parse_float(0.1, 0.99)),
    "VLLM_MAX_NUM_SEQS": ("max_num_seqs", _parse_int(1, 1024)),
    "VLLM_TENSOR_PARALLEL_SIZE": ("tensor_parallel_size", _parse_int(1, 16)),
    "VLLM_DTYPE": ("dtype", _parse_choice("auto", "half", "float16", "bfloat16", "float32")),
    "VLLM_KV_CACHE_DTYPE": ("kv_cache_dtype", _parse_choice("auto", "fp8", "fp8_e4m3", "fp8_e5m2")),
    "VLLM_EXTRA_ARGS": ("extra_args", lambda raw: raw.strip()),
    "WATCHDOG_ENABLED": ("watchdog_enabled", _parse_bool),
    "WATCHDOG_TIMEOUT_MINUTES": ("watchdog_timeout_minutes", _parse_int(1, 7 * 24 * 60)),
    "WATCHDOG_WARNING_MINUTES": ("watchdog_warning_minutes", _parse_int(0, 24 * 60)),
    "MAX_LIFETIME_HOURS": ("max_lifetime_hours", _parse_float(0, 24 * 31)),
    "BUDGET_USD": ("budget_usd", _parse_float(0, 1_000_000)),
    "FAILSAFE": ("failsafe", _parse_bool),
    "FAILSAFE_MINUTES": ("failsafe_minutes", _parse_int(1, 7 * 24 * 60)),
    "MAIDER_LINODE_API_URL": ("linode_api_url", _parse_text),
    "MAIDER_DIGITALOCEAN_API_URL": ("digitalocean_api_url", _parse_text),
    "VLLM_IMAGE": ("vllm_image", _parse_text),
    "OPEN_WEBUI_IMAGE": ("open_webui_image", _parse_text),
    "NVIDIA_DRIVER": ("nvidia_driver", _parse_text),
}


def _read_env_file(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    return {k: v for k, v in dotenv_values(path).items() if v is not None}


def _linode_cli_config_path(environ: Mapping[str, str]) -> Path:
    config_home = environ.get("XDG_CONFIG_HOME") or str(Path(environ.get("HOME", str(Path.home()))) / ".config")
    return Path(config_home) / "linode-cli"


def read_linode_cli_token(environ: Mapping[str, str]) -> str | None:
    """Token from linode-cli's INI config: ``[DEFAULT] default-user``, then that user's ``token``."""
    path = _linode_cli_config_path(environ)
    if not path.is_file():
        return None
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(path)
    except configparser.Error:
        return None
    user = parser.get("DEFAULT", "default-user", fallback=None)
    if user and parser.has_section(user):
        token = parser.get(user, "token", fallback=None)
    else:
        token = parser.get("DEFAULT", "token", fallback=None)
    return token.strip() if token and token.strip() else None


def load_settings(workdir: Path | str | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Read and parse the configuration; never raises for bad values (see ``Settings.problems``)."""
    environ = os.environ if environ is None else environ
    workdir = Path(workdir or os.getcwd())
    layers = (
        (".env", _read_env_file(workdir / ENV_FILE)),
        (".env.secrets", _read_env_file(workdir / SECRETS_FILE)),
        ("environment", dict(environ)),
    )
    merged: dict[str, str] = {}
    sources: dict[str, str] = {}
    for source, values in layers:
        for key, value in values.items():
            merged[key] = value
            sources[key] = source

    values: dict[str, Any] = {}
    problems: list[ConfigProblem] = []
    for variable, (attr, parse) in FIELDS.items():
        raw = merged.get(variable)
        if raw is None or not raw.strip():
            continue
        try:
            values[attr] = parse(raw.strip())
        except ValueError as exc:
            problems.append(ConfigProblem(variable, f"{exc} (from {sources[variable]})"))

    for variable in SECRET_VARIABLES:
        raw = (merged.get(variable) or "").strip()
        if raw:
            values[SECRET_FIELDS[variable]] = Secret(raw, variable, sources[variable])
    if "hf_token" not in values and (merged.get("HF_TOKEN") or "").strip():
        values["hf_token"] = Secret(merged["HF_TOKEN"].strip(), "HF_TOKEN", sources["HF_TOKEN"])
    if "linode_token" not in values:
        cli_token = read_linode_cli_token(environ)
        if cli_token:
            values["linode_token"] = Secret(cli_token, "LINODE_TOKEN", str(_linode_cli_config_path(environ)))
            sources["LINODE_TOKEN"] = "linode-cli config"
    public_sources = {k: v for k, v in sources.items() if k in FIELDS or k in SECRET_VARIABLES or k == "HF_TOKEN"}
    return Settings(**values, problems=tuple(problems), sources=public_sources)


def require_secret(secret: Secret | None, variable: str, how_to: str) -> str:
    """Reveal a secret or raise a ConfigError that says how to provide it."""
    if secret is None:
        raise ConfigError(f"{variable} is not set: {how_to}", variable)
    return secret.reveal()


def default_home(environ: Mapping[str, str] | None = None) -> Path:
    """maider's data dir: ``MAIDER_HOME``, else ``$XDG_DATA_HOME/maider``, else ``~/.local/share/maider``."""
    environ = os.environ if environ is None else environ
    if environ.get("MAIDER_HOME"):
        return Path(environ["MAIDER_HOME"]).expanduser()
    data_home = environ.get("XDG_DATA_HOME") or str(Path(environ.get("HOME", str(Path.home()))) / ".local/share")
    return Path(data_home) / "maider"
