"""The command line contract (exit codes, ``status --json``, configuration errors naming the key) and
DICOM TLS (PS3.15 Annex B.9) with client-certificate verification."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from support.node import node_env
from support.peers.ports import free_port
from support.services import require_binary

from orthonode.dicom.scu import Peer, echo

pytestmark = pytest.mark.integration


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("ORTHONODE_")}
    return subprocess.run(
        [sys.executable, "-m", "orthonode", *args],
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_unknown_toml_key_fails_naming_it(tmp_path: Path) -> None:
    config = tmp_path / "node.toml"
    config.write_text('ae_title = "NODE"\nports = 104\n')
    out = run_cli("--config", str(config), "status")
    assert out.returncode == 2
    assert "ports" in out.stderr and "Extra inputs are not permitted" in out.stderr


def test_bad_env_value_and_unknown_env_key_fail_naming_them(tmp_path: Path) -> None:
    out = run_cli("status", env={"ORTHONODE_PORT": "eleven", "ORTHONODE_DATA_DIR": str(tmp_path)})
    assert out.returncode == 2 and "port" in out.stderr
    out = run_cli("status", env={"ORTHONODE_STUDY_QUIET": "5", "ORTHONODE_DATA_DIR": str(tmp_path)})
    assert out.returncode == 2 and "ORTHONODE_STUDY_QUIET" in out.stderr


def test_status_json_contract_on_an_empty_node(tmp_path: Path) -> None:
    env = {"ORTHONODE_DATA_DIR": str(tmp_path)}
    out = run_cli("status", "--json", env=env)  # opening the index does not create or migrate it
    assert out.returncode == 2 and "run `orthonode migrate`" in out.stderr
    assert run_cli("migrate", env=env).returncode == 0
    out = run_cli("status", "--json", env=env)
    assert out.returncode == 0, out.stderr
    snapshot = json.loads(out.stdout)
    assert snapshot["studies"] == [] and snapshot["jobs"] == []


def test_echo_exit_codes(make_node: Any) -> None:
    node = make_node(embedded_worker=False)
    assert run_cli("echo", "127.0.0.1", str(node.port), "--aet", node.ae_title).returncode == 0
    closed = free_port()
    out = run_cli("echo", "127.0.0.1", str(closed), "--aet", node.ae_title, "--timeout", "3")
    assert out.returncode == 1 and "no association" in out.stdout


def test_retry_of_a_job_that_did_not_fail_changes_nothing(tmp_path: Path) -> None:
    env = {"ORTHONODE_DATA_DIR": str(tmp_path)}
    assert run_cli("migrate", env=env).returncode == 0
    out = run_cli("retry", "42", env=env)
    assert out.returncode == 1 and "nothing changed" in out.stdout


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _ca(d: Path, name: str) -> None:
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.pem",
        "-days", "2", "-subj", f"/CN=orthonode test {name}", cwd=d,
    )  # fmt: skip


def _issue(d: Path, name: str, ext: str, ca: str) -> None:
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
             "-subj", f"/CN={name}", cwd=d)  # fmt: skip
    (d / f"{name}.ext").write_text(ext + "\n")
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-CAcreateserial",
        "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext", cwd=d,
    )  # fmt: skip


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    """A throw-away CA with a server certificate for 127.0.0.1 and a client certificate, and a second,
    unknown CA with a client certificate of its own."""
    require_binary("openssl", "openssl")
    d = tmp_path / "pki"
    d.mkdir()
    _ca(d, "ca")
    _issue(d, "server", "subjectAltName=IP:127.0.0.1", "ca")
    _issue(d, "client", "extendedKeyUsage=clientAuth", "ca")
    _ca(d, "rogue-ca")
    _issue(d, "rogue", "extendedKeyUsage=clientAuth", "rogue-ca")
    return d


def test_tls_with_client_certificates(make_node: Any, pki: Path) -> None:
    node = make_node(
        embedded_worker=False,
        tls={
            "cert_file": str(pki / "server.pem"),
            "key_file": str(pki / "server.key"),
            "ca_file": str(pki / "ca.pem"),
            "require_client_cert": True,
        },
    )
    client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki / "ca.pem"))
    client.load_cert_chain(str(pki / "client.pem"), str(pki / "client.key"))
    assert echo(Peer("127.0.0.1", node.port, node.ae_title, "TLSSCU", tls=client), timeout=10) == 0

    anonymous = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki / "ca.pem"))
    assert echo(Peer("127.0.0.1", node.port, node.ae_title, "TLSSCU", tls=anonymous), timeout=10) is None
    unknown = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki / "ca.pem"))
    unknown.load_cert_chain(str(pki / "rogue.pem"), str(pki / "rogue.key"))  # a CA the node does not trust
    assert echo(Peer("127.0.0.1", node.port, node.ae_title, "TLSSCU", tls=unknown), timeout=10) is None
    plain = Peer("127.0.0.1", node.port, node.ae_title, "PLAIN")
    assert echo(plain, timeout=5) is None
    assert node.running


def test_node_env_helper_round_trips_through_settings(tmp_path: Path) -> None:
    env = node_env(
        tmp_path, port=1234, destinations=[{"name": "pacs", "ae_title": "PACS", "host": "h", "port": 1}]
    )
    node_only = {k: v for k, v in env.items() if k.startswith("ORTHONODE_")}
    assert run_cli("migrate", env=node_only).returncode == 0
    out = run_cli("status", "--json", env=node_only)
    assert out.returncode == 0, out.stderr
