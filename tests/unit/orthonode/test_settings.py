"""Tests of orthonode.settings.load_settings: defaults, TOML file, ORTHONODE_* environment, validation."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from orthonode.errors import ConfigError
from orthonode.settings import Destination, Settings, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No ORTHONODE_* variable (in any letter case) leaks in; the working directory is a fresh folder."""
    for key in list(os.environ):
        if key.upper().startswith("ORTHONODE_"):
            monkeypatch.delenv(key)
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def write_toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "orthonode.toml"
    path.write_text(text, encoding="utf-8")
    return path


def config_error(*args: object, **kwargs: object) -> str:
    """The message of the ConfigError that load_settings raises (fails the test if none is raised)."""
    with pytest.raises(ConfigError) as info:
        load_settings(*args, **kwargs)  # type: ignore[arg-type]
    return str(info.value)


def existing_file(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    path.write_text("-----BEGIN PLACEHOLDER-----\n", encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------------- defaults


def test_defaults(clean_env: Path) -> None:
    s = load_settings()
    assert s.ae_title == "ORTHONODE"
    assert s.host == "127.0.0.1"
    assert s.port == 11112
    assert s.allowed_calling_aets == []
    assert s.tls is None
    assert s.data_dir == clean_env / "var" / "orthonode"
    assert s.data_dir.is_absolute()
    assert s.database_url is None
    assert s.broker_url is None
    assert s.destinations == []
    assert s.series_quiet_seconds == 30.0
    assert s.study_quiet_seconds == 60.0
    assert s.force_seconds == 3600.0
    assert s.force_action == "proceed"
    assert s.max_associations == 16
    assert s.max_pdu == 1 << 20
    assert s.max_instances_per_study == 20000
    assert s.embedded_worker is None
    assert s.queue_name == "orthonode.studies"
    assert s.worker_pool == "solo"
    assert s.job_lease_seconds == 900.0
    assert s.job_max_attempts == 5
    assert s.log_level == "INFO"
    assert s.fast_transport is True


def test_default_derived_values(clean_env: Path) -> None:
    s = load_settings()
    data_dir = clean_env / "var" / "orthonode"
    assert s.effective_database_url == f"sqlite:///{data_dir}/index.sqlite3"
    assert s.effective_database_url.startswith("sqlite:////")  # an absolute path after sqlite:///
    assert s.broker_is_local is True
    assert s.effective_broker_url == "filesystem://localhost//"
    assert s.broker_dir == data_dir / "broker"
    assert s.runs_embedded_worker is True


def test_settings_are_frozen() -> None:
    s = load_settings()
    with pytest.raises(ValueError):
        s.port = 1  # type: ignore[misc]


def test_overrides_are_highest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORTHONODE_PORT", "2000")
    s = load_settings(write_toml(tmp_path, "port = 1000\n"), port=3000)
    assert s.port == 3000


# --------------------------------------------------------------------------------------------- TOML file


def test_toml_file_keys(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    path = write_toml(
        tmp_path,
        f"""
ae_title = "KNEENODE"
host = "0.0.0.0"
port = 4242
allowed_calling_aets = ["PACS1", "MODALITY"]
data_dir = "{data_dir}"
database_url = "postgresql+psycopg://u@db/orthonode"
broker_url = "redis://127.0.0.1:6379/0"
series_quiet_seconds = 5.5
study_quiet_seconds = 12
force_seconds = 600
force_action = "discard"
max_instances_per_study = 7
embedded_worker = true
queue_name = "site.queue"
log_level = "DEBUG"

[[destinations]]
name = "pacs"
ae_title = "ORTHANC"
host = "pacs.local"
port = 4243

[[destinations]]
name = "viewer"
ae_title = "VIEWER"
host = "10.0.0.2"
port = 104
tls = true
""",
    )
    s = load_settings(path)
    assert s.ae_title == "KNEENODE"
    assert s.host == "0.0.0.0"
    assert s.port == 4242
    assert s.allowed_calling_aets == ["PACS1", "MODALITY"]
    assert s.data_dir == data_dir
    assert s.effective_database_url == "postgresql+psycopg://u@db/orthonode"
    assert s.broker_url == "redis://127.0.0.1:6379/0"
    assert s.series_quiet_seconds == 5.5
    assert s.study_quiet_seconds == 12.0
    assert s.force_seconds == 600.0
    assert s.force_action == "discard"
    assert s.max_instances_per_study == 7
    assert s.embedded_worker is True
    assert s.queue_name == "site.queue"
    assert s.log_level == "DEBUG"
    assert s.destinations == [
        Destination(name="pacs", ae_title="ORTHANC", host="pacs.local", port=4243, tls=False),
        Destination(name="viewer", ae_title="VIEWER", host="10.0.0.2", port=104, tls=True),
    ]


def test_toml_accepts_str_path(tmp_path: Path) -> None:
    assert load_settings(str(write_toml(tmp_path, "port = 1234\n"))).port == 1234


def test_missing_config_file_fails(tmp_path: Path) -> None:
    message = config_error(tmp_path / "absent.toml")
    assert "configuration file not found" in message
    assert "absent.toml" in message


def test_unknown_toml_key_fails_naming_it(tmp_path: Path) -> None:
    message = config_error(write_toml(tmp_path, 'port = 1000\nai_title = "X"\n'))
    assert "ai_title" in message
    assert "Extra inputs are not permitted" in message


def test_unknown_nested_toml_key_fails_naming_it(tmp_path: Path) -> None:
    cert = existing_file(tmp_path, "cert.pem")
    path = write_toml(tmp_path, f'[tls]\ncert_file = "{cert}"\nkey_file = "{cert}"\nverify = true\n')
    assert "tls.verify" in config_error(path)


def test_toml_syntax_error_is_a_config_error(tmp_path: Path) -> None:
    message = config_error(write_toml(tmp_path, "port = \n"))
    assert message.startswith("invalid configuration (")
    assert "orthonode.toml" in message


def test_bad_toml_value_names_the_key_and_the_file(tmp_path: Path) -> None:
    path = write_toml(tmp_path, 'port = "abc"\n')
    message = config_error(path)
    assert f"invalid configuration ({path} and ORTHONODE_* environment)" in message
    assert "  port: Input should be a valid integer" in message


# --------------------------------------------------------------------------------------------- environment


def test_environment_overrides_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_toml(tmp_path, 'port = 1000\nae_title = "FROMFILE"\nhost = "10.1.1.1"\n')
    monkeypatch.setenv("ORTHONODE_PORT", "2000")
    monkeypatch.setenv("ORTHONODE_AE_TITLE", "FROMENV")
    s = load_settings(path)
    assert (s.port, s.ae_title, s.host) == (2000, "FROMENV", "10.1.1.1")


def test_environment_values_are_typed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ORTHONODE_STUDY_QUIET_SECONDS", "2.5")
    monkeypatch.setenv("ORTHONODE_EMBEDDED_WORKER", "false")
    monkeypatch.setenv("ORTHONODE_FAST_TRANSPORT", "0")
    monkeypatch.setenv("ORTHONODE_DATA_DIR", str(tmp_path / "d"))
    s = load_settings()
    assert s.study_quiet_seconds == 2.5
    assert s.embedded_worker is False
    assert s.fast_transport is False
    assert s.data_dir == tmp_path / "d"
    assert s.effective_database_url == f"sqlite:///{tmp_path / 'd' / 'index.sqlite3'}"


def test_relative_data_dir_is_made_absolute(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORTHONODE_DATA_DIR", "site/data")
    assert load_settings().data_dir == clean_env / "site" / "data"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("PACS1,MODALITY", ["PACS1", "MODALITY"]),
        (" PACS1 , MODALITY ,, ", ["PACS1", "MODALITY"]),
        ("ONLY", ["ONLY"]),
        ("", []),
        ('["PACS1", "MODALITY"]', ["PACS1", "MODALITY"]),
        (' ["A B"] ', ["A B"]),
        ("[]", []),
    ],
)
def test_allowed_calling_aets_from_env(
    monkeypatch: pytest.MonkeyPatch, raw: str, expected: list[str]
) -> None:
    monkeypatch.setenv("ORTHONODE_ALLOWED_CALLING_AETS", raw)
    assert load_settings().allowed_calling_aets == expected


@pytest.mark.parametrize("raw", ['["PACS1",', "GOOD,BAD\\AE", "GOOD,SEVENTEEN_CHARS_X", '["A", 5]'])
def test_bad_allowed_calling_aets_fail_naming_the_key(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv("ORTHONODE_ALLOWED_CALLING_AETS", raw)
    assert "allowed_calling_aets" in config_error()


def test_destinations_from_env_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "ORTHONODE_DESTINATIONS",
        json.dumps(
            [
                {"name": "pacs", "ae_title": "ORTHANC", "host": "127.0.0.1", "port": 4242},
                {"name": "ris.2", "ae_title": "RIS", "host": "ris", "port": 11112, "tls": True},
            ]
        ),
    )
    assert load_settings().destinations == [
        Destination(name="pacs", ae_title="ORTHANC", host="127.0.0.1", port=4242, tls=False),
        Destination(name="ris.2", ae_title="RIS", host="ris", port=11112, tls=True),
    ]


def test_destinations_env_not_json_fails_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORTHONODE_DESTINATIONS", "pacs@127.0.0.1:4242")
    assert '"destinations"' in config_error()


def test_unknown_env_var_fails_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORTHONODE_PROT", "1")
    monkeypatch.setenv("ORTHONODE_AE_TITEL", "X")
    message = config_error()
    assert message == "unknown configuration keys in the environment: ORTHONODE_AE_TITEL, ORTHONODE_PROT"


def test_unknown_nested_env_var_fails_naming_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cert = existing_file(tmp_path, "cert.pem")
    monkeypatch.setenv("ORTHONODE_TLS__CERT_FILE", str(cert))
    monkeypatch.setenv("ORTHONODE_TLS__KEY_FILE", str(cert))
    monkeypatch.setenv("ORTHONODE_TLS__VERIFY", "1")
    assert "tls.verify" in config_error()


def test_unrelated_env_vars_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORTHONODEPORT", "1")  # no underscore after the prefix: not ours
    monkeypatch.setenv("OTHER_ORTHONODE_PORT", "1")
    assert load_settings().port == 11112


def test_unknown_lowercase_env_var_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("orthonode_port", "5")
    assert load_settings().port == 5  # lower case names are read...
    monkeypatch.delenv("orthonode_port")
    monkeypatch.setenv("orthonode_prot", "5")
    assert "orthonode_prot" in config_error()  # ...so a lower case typo must be refused like ORTHONODE_PROT


# --------------------------------------------------------------------------------------------- bad values


@pytest.mark.parametrize(
    ("variable", "value", "key", "fragment"),
    [
        ("ORTHONODE_PORT", "abc", "port", "valid integer"),
        ("ORTHONODE_PORT", "70000", "port", "less than or equal to 65535"),
        ("ORTHONODE_AE_TITLE", "SEVENTEEN_CHARS_X", "ae_title", "is not a valid AE title"),
        ("ORTHONODE_AE_TITLE", "ORTHO\\NODE", "ae_title", "is not a valid AE title"),
        ("ORTHONODE_AE_TITLE", "", "ae_title", "is not a valid AE title"),
        ("ORTHONODE_AE_TITLE", "    ", "ae_title", "is not a valid AE title"),
        ("ORTHONODE_AE_TITLE", "TAB\tNODE", "ae_title", "is not a valid AE title"),
        ("ORTHONODE_SERIES_QUIET_SECONDS", "-1", "series_quiet_seconds", "greater than 0"),
        ("ORTHONODE_STUDY_QUIET_SECONDS", "0", "study_quiet_seconds", "greater than 0"),
        ("ORTHONODE_FORCE_SECONDS", "-3600", "force_seconds", "greater than 0"),
        ("ORTHONODE_FORCE_ACTION", "maybe", "force_action", "'proceed', 'discard' or 'keep_waiting'"),
        ("ORTHONODE_MAX_PDU", "100", "max_pdu", "greater than or equal to 4096"),
        ("ORTHONODE_QUEUE_NAME", "bad queue", "queue_name", "should match pattern"),
        ("ORTHONODE_WORKER_POOL", "gevent", "worker_pool", "'solo', 'prefork' or 'threads'"),
        ("ORTHONODE_LOG_LEVEL", "TRACE", "log_level", "Input should be"),
        ("ORTHONODE_EMBEDDED_WORKER", "perhaps", "embedded_worker", "valid boolean"),
    ],
)
def test_bad_env_value_fails_naming_the_key(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, key: str, fragment: str
) -> None:
    monkeypatch.setenv(variable, value)
    message = config_error()
    assert message.startswith("invalid configuration (ORTHONODE_* environment):\n")
    line = next((ln for ln in message.splitlines() if ln.startswith(f"  {key}: ")), None)
    assert line is not None, message
    assert fragment in line


def test_every_bad_key_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORTHONODE_PORT", "abc")
    monkeypatch.setenv("ORTHONODE_FORCE_ACTION", "maybe")
    keys = [ln.split(":")[0].strip() for ln in config_error().splitlines()[1:]]
    assert sorted(keys) == ["force_action", "port"]


def test_ae_title_is_stripped() -> None:
    assert load_settings(ae_title=" NODE ").ae_title == "NODE"
    assert load_settings(ae_title="A" * 16).ae_title == "A" * 16


def test_duplicate_destination_names_fail(tmp_path: Path) -> None:
    path = write_toml(
        tmp_path,
        '[[destinations]]\nname = "pacs"\nae_title = "A"\nhost = "h"\nport = 104\n'
        '[[destinations]]\nname = "pacs"\nae_title = "B"\nhost = "i"\nport = 105\n',
    )
    message = config_error(path)
    assert "destinations: names must be unique, got ['pacs', 'pacs']" in message


@pytest.mark.parametrize(
    ("entry", "key"),
    [
        ({"name": "pacs", "ae_title": "BAD\\AE", "host": "h", "port": 104}, "destinations.0.ae_title"),
        ({"name": "pacs", "ae_title": "A", "host": "h", "port": 0}, "destinations.0.port"),
        ({"name": "../pacs", "ae_title": "A", "host": "h", "port": 104}, "destinations.0.name"),
        ({"name": "pacs", "ae_title": "A", "host": "", "port": 104}, "destinations.0.host"),
        ({"name": "pacs", "ae_title": "A", "host": "h", "port": 104, "tsl": True}, "destinations.0.tsl"),
    ],
)
def test_bad_destination_fails_naming_the_key(
    monkeypatch: pytest.MonkeyPatch, entry: dict[str, object], key: str
) -> None:
    monkeypatch.setenv("ORTHONODE_DESTINATIONS", json.dumps([entry]))
    assert f"  {key}: " in config_error()


# --------------------------------------------------------------------------------------------- TLS


def test_tls_settings_from_toml(tmp_path: Path) -> None:
    cert, key, ca = (existing_file(tmp_path, n) for n in ("cert.pem", "key.pem", "ca.pem"))
    path = write_toml(
        tmp_path,
        f'[tls]\ncert_file = "{cert}"\nkey_file = "{key}"\nca_file = "{ca}"\nrequire_client_cert = true\n',
    )
    tls = load_settings(path).tls
    assert tls is not None
    assert (tls.cert_file, tls.key_file, tls.ca_file, tls.require_client_cert) == (cert, key, ca, True)


def test_tls_nested_env_merges_with_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cert, key, ca = (existing_file(tmp_path, n) for n in ("cert.pem", "key.pem", "ca.pem"))
    path = write_toml(tmp_path, f'[tls]\ncert_file = "{cert}"\nkey_file = "{key}"\n')
    monkeypatch.setenv("ORTHONODE_TLS__CA_FILE", str(ca))
    monkeypatch.setenv("ORTHONODE_TLS__REQUIRE_CLIENT_CERT", "true")
    tls = load_settings(path).tls
    assert tls is not None
    assert (tls.cert_file, tls.key_file, tls.ca_file, tls.require_client_cert) == (cert, key, ca, True)


def test_tls_require_client_cert_needs_ca_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cert = existing_file(tmp_path, "cert.pem")
    monkeypatch.setenv("ORTHONODE_TLS__CERT_FILE", str(cert))
    monkeypatch.setenv("ORTHONODE_TLS__KEY_FILE", str(cert))
    monkeypatch.setenv("ORTHONODE_TLS__REQUIRE_CLIENT_CERT", "true")
    message = config_error()
    assert "  tls: " in message
    assert "require_client_cert needs ca_file" in message


@pytest.mark.parametrize("missing", ["cert_file", "key_file", "ca_file"])
def test_tls_missing_file_fails_naming_it(tmp_path: Path, missing: str) -> None:
    files = {n: existing_file(tmp_path, f"{n}.pem") for n in ("cert_file", "key_file", "ca_file")}
    files[missing] = tmp_path / "nowhere" / f"{missing}.pem"
    body = "".join(f'{k} = "{v}"\n' for k, v in files.items())
    message = config_error(write_toml(tmp_path, "[tls]\n" + body))
    assert f"{missing}: no such file: {files[missing]}" in message


def test_tls_cert_without_key_fails(tmp_path: Path) -> None:
    cert = existing_file(tmp_path, "cert.pem")
    assert "tls.key_file: Field required" in config_error(
        write_toml(tmp_path, f'[tls]\ncert_file = "{cert}"\n')
    )


# --------------------------------------------------------------------------------------------- derived


@pytest.mark.parametrize(
    ("broker_url", "embedded", "is_local", "runs_worker"),
    [
        (None, None, True, True),
        ("filesystem://", None, True, True),
        ("filesystem:///var/spool/broker", None, True, True),
        ("redis://127.0.0.1:6379/0", None, False, False),
        ("amqp://guest:guest@127.0.0.1:5672//", None, False, False),
        ("redis://127.0.0.1:6379/0", True, False, True),
        (None, False, True, False),
        ("filesystem://", True, True, True),
    ],
)
def test_broker_is_local_and_embedded_worker(
    broker_url: str | None, embedded: bool | None, is_local: bool, runs_worker: bool
) -> None:
    s = load_settings(broker_url=broker_url, embedded_worker=embedded)
    assert s.broker_is_local is is_local
    assert s.runs_embedded_worker is runs_worker
    assert s.effective_broker_url == (broker_url or "filesystem://localhost//")


def test_explicit_database_url_wins(tmp_path: Path) -> None:
    s = load_settings(data_dir=tmp_path, database_url="postgresql+psycopg://postgres@127.0.0.1/x")
    assert s.effective_database_url == "postgresql+psycopg://postgres@127.0.0.1/x"


def test_settings_class_is_strict_about_unknown_init_keys() -> None:
    assert "bogus" in config_error(bogus=1)
    assert isinstance(load_settings(), Settings)
