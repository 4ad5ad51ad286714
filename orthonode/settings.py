"""The node's configuration: one typed object, read from a TOML file (``--config FILE``) and from
``ORTHONODE_*`` environment variables (environment wins over the file; nested keys use ``__``, e.g.
``ORTHONODE_TLS__CERT_FILE``). Unknown keys and bad values fail at start-up with a message naming the key.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from orthonode.completion.policy import ForceAction
from orthonode.errors import ConfigError

ENV_PREFIX = "ORTHONODE_"
_AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # PS3.5 Table 6.2-1 (AE): no backslash, no controls
_config_file: ContextVar[Path | None] = ContextVar("orthonode_config_file", default=None)


def _check_ae_title(value: str) -> str:
    if not _AE_TITLE.match(value) or not value.strip():
        raise ValueError(f"{value!r} is not a valid AE title (1-16 printable characters, no backslash)")
    return value.strip()


class Destination(BaseModel):
    """A DICOM peer that results are sent to by C-STORE."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    ae_title: str
    host: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)
    tls: bool = False

    _ae = field_validator("ae_title")(_check_ae_title)


class TLSSettings(BaseModel):
    """DICOM TLS (PS3.15 Annex B.9, the BCP 195 profile) for the listening port."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cert_file: Path
    key_file: Path
    ca_file: Path | None = Field(default=None, description="CA bundle that client certificates must chain to")
    require_client_cert: bool = False

    @model_validator(mode="after")
    def _client_cert_needs_ca(self) -> TLSSettings:
        if self.require_client_cert and self.ca_file is None:
            raise ValueError("require_client_cert needs ca_file")
        for name in ("cert_file", "key_file", "ca_file"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise ValueError(f"{name}: no such file: {path}")
        return self


class Settings(BaseSettings):
    """Everything an operator can set. See README "Configuration" for the meaning of each key."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
        frozen=True,
    )

    # Identity and network (PS3.8).
    ae_title: str = "ORTHONODE"
    host: str = "127.0.0.1"
    port: int = Field(default=11112, ge=0, le=65535)
    allowed_calling_aets: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Calling AE titles accepted; empty accepts any"
    )
    tls: TLSSettings | None = None

    # Storage and index.
    data_dir: Path = Path("var/orthonode")
    database_url: str | None = Field(default=None, description="SQLAlchemy URL; default SQLite in data_dir")
    broker_url: str | None = Field(default=None, description="Celery broker; default on local disk")

    # Results go here (the send stage).
    destinations: list[Destination] = Field(default_factory=list)

    # Study completion policy (orthonode.completion.policy).
    series_quiet_seconds: float = Field(default=30.0, gt=0)
    study_quiet_seconds: float = Field(default=60.0, gt=0)
    force_seconds: float = Field(default=3600.0, gt=0)
    force_action: ForceAction = "proceed"
    sweep_interval_seconds: float = Field(default=2.0, gt=0)

    # Limits.
    max_associations: int = Field(default=16, ge=1, le=1024)
    max_pdu: int = Field(default=1 << 20, ge=4096, le=1 << 26, description="Maximum PDU we receive (bytes)")
    max_instance_bytes: int = Field(default=2 << 30, ge=1024)
    min_free_bytes: int = Field(default=1 << 30, ge=0, description="Refuse C-STORE (0xA700) below this")
    max_instances_per_study: int = Field(default=20000, ge=1)
    fast_transport: bool = Field(
        default=True, description="Stream C-STORE data straight to disk (orthonode.dicom.transport)"
    )
    acse_timeout: float = Field(default=30.0, gt=0)
    dimse_timeout: float = Field(default=60.0, gt=0)
    network_timeout: float = Field(default=60.0, gt=0)

    # Jobs and workers.
    embedded_worker: bool | None = Field(
        default=None, description="serve starts a worker child; default: on when the broker is the local one"
    )
    queue_name: str = Field(
        default="orthonode.studies", pattern=r"^[A-Za-z0-9._-]{1,64}$", description="Broker queue of the jobs"
    )
    worker_concurrency: int = Field(default=1, ge=1, le=64)
    worker_pool: Literal["solo", "prefork", "threads"] = "solo"
    job_lease_seconds: float = Field(
        default=900.0, gt=0, description="A running job silent this long is re-run"
    )
    job_max_attempts: int = Field(default=5, ge=1)
    enqueue_retry_seconds: float = Field(default=10.0, gt=0)

    # Inference (orthonode.inference): the encoder and the head bundles.
    models_dir: Path | None = Field(
        default=None,
        description="Folder with encoder/ and heads/ (README 'Models'); default: the shipped model",
    )
    inference_batch_size: int = Field(default=16, ge=1, le=1024)
    inference_autocast: Literal["off", "auto", "bf16"] = Field(
        default="off", description="bf16 autocast of the encoder on CPUs with native bf16 ('auto')"
    )
    inference_threads: int | None = Field(default=None, ge=1, le=256, description="torch intra-op threads")
    inference_device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="'auto': the first CUDA device where there is one, else the CPU"
    )

    # Delivery of the results (orthonode.send).
    delivery_max_attempts: int = Field(default=12, ge=1, description="Then FAILED until `orthonode retry`")
    delivery_backoff_seconds: float = Field(default=10.0, gt=0, description="First retry delay; doubles")
    delivery_backoff_cap_seconds: float = Field(default=900.0, gt=0)
    delivery_lease_seconds: float = Field(default=300.0, gt=0, description="A silent send is retried after")
    delivery_timeout_seconds: float = Field(default=60.0, gt=0, description="Network timeout of one send")

    # The operator console (orthonode.console), served by `orthonode serve`.
    web_enabled: bool = Field(default=True, description="Serve the console, REST API and /metrics")
    web_host: str = Field(default="127.0.0.1", description="Loopback by default: expose it deliberately")
    web_port: int = Field(default=8180, ge=0, le=65535, description="0 picks a free port (logged)")
    web_token: SecretStr | None = Field(
        default=None, description="Bearer token for retry/discard; without it the console is read-only"
    )
    web_show_patient_names: bool = Field(
        default=False, description="Show patient name and ID (read from the stored files) in the console"
    )

    # Logging.
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("ae_title")
    @classmethod
    def _ae_title(cls, value: str) -> str:
        return _check_ae_title(value)

    @field_validator("allowed_calling_aets", mode="before")
    @classmethod
    def _split_aets(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @field_validator("allowed_calling_aets")
    @classmethod
    def _check_aets(cls, value: list[str]) -> list[str]:
        return [_check_ae_title(v) for v in value]

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().absolute()

    @model_validator(mode="after")
    def _unique_destinations(self) -> Settings:
        names = [d.name for d in self.destinations]
        if len(names) != len(set(names)):
            raise ValueError(f"destinations: names must be unique, got {names}")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = _config_file.get()
        if config_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
        return tuple(sources)

    # Derived values -------------------------------------------------------------------------------
    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'index.sqlite3'}"

    @property
    def broker_is_local(self) -> bool:
        return self.broker_url is None or self.broker_url.startswith("filesystem://")

    @property
    def effective_broker_url(self) -> str:
        return self.broker_url or "filesystem://localhost//"

    @property
    def broker_dir(self) -> Path:
        return self.data_dir / "broker"

    @property
    def runs_embedded_worker(self) -> bool:
        return self.broker_is_local if self.embedded_worker is None else self.embedded_worker

    def redacted(self) -> dict[str, Any]:
        """The settings as JSON values with every secret hidden: the token, and passwords inside the
        database and broker URLs (what the console's configuration page shows)."""
        values: dict[str, Any] = self.model_dump(mode="json")
        for key in ("database_url", "broker_url"):
            if values.get(key):
                values[key] = _hide_password(values[key])
        if values.get("web_token"):
            values["web_token"] = "(set, hidden)"
        return values


def _hide_password(url: str) -> str:
    """``scheme://user:secret@host/db`` -> ``scheme://user:***@host/db``."""
    return re.sub(r"(//[^:/@]*:)[^@/]*@", r"\1***@", url)


def _unknown_env_keys(environ: dict[str, str]) -> list[str]:
    fields = set(Settings.model_fields)
    unknown = []
    for key in environ:
        if key.upper().startswith(ENV_PREFIX):  # pydantic-settings matches names case-insensitively
            head = key[len(ENV_PREFIX) :].split("__", 1)[0].lower()
            if head not in fields:
                unknown.append(key)
    return sorted(unknown)


def _format_errors(exc: ValidationError, origin: str) -> str:
    lines = [f"invalid configuration ({origin}):"]
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(settings)"
        lines.append(f"  {key}: {err['msg']}")
    return "\n".join(lines)


@contextmanager
def _using_config_file(path: Path | None) -> Iterator[None]:
    token = _config_file.set(path)
    try:
        yield
    finally:
        _config_file.reset(token)


def load_settings(config_file: Path | str | None = None, **overrides: Any) -> Settings:
    """Build the settings from ``config_file`` (TOML), the environment and ``overrides`` (highest first:
    overrides, environment, file, defaults). Raises :class:`ConfigError` naming every bad key."""
    path = Path(config_file) if config_file is not None else None
    origin = f"{path} and {ENV_PREFIX}* environment" if path else f"{ENV_PREFIX}* environment"
    if path is not None and not path.is_file():
        raise ConfigError(f"configuration file not found: {path}")
    unknown = _unknown_env_keys(dict(os.environ))
    if unknown:
        raise ConfigError(f"unknown configuration keys in the environment: {', '.join(unknown)}")
    try:
        with _using_config_file(path):
            return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, origin)) from None
    except (ValueError, OSError) as exc:  # a TOML syntax error, an unreadable file
        raise ConfigError(f"invalid configuration ({origin}): {exc}") from None
