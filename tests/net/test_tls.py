"""TLS set-up: certificates, CA files and the environment, each problem as one line."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from titan.config import tls_from_env, tls_into_env
from titan.net.tls import TlsClient, TlsSetupError, describe_tls_failure, server_context
from titan.worker.children import ChildDefaults, ChildWorkers
from titan.worker.services import ServicePolicy

TLS = Path(__file__).parent / "tls"
CA, CERT, KEY, STRANGER = TLS / "ca.pem", TLS / "master.pem", TLS / "master.key", TLS / "stranger.pem"


def test_a_certificate_and_its_key_make_a_server_context() -> None:
    assert server_context(CERT, KEY).minimum_version.name == "TLSv1_2"


@pytest.mark.parametrize(
    ("cert", "key", "expected"),
    [
        (TLS / "missing.pem", None, f"TLS file {TLS / 'missing.pem'} does not exist"),
        (CERT, TLS / "missing.key", f"TLS file {TLS / 'missing.key'} does not exist"),
        (CERT, None, f"TLS certificate {CERT} cannot be used: not in PEM format, or a key that is missing"),
        (Path(__file__), None, "cannot be used: not in PEM format"),
        (STRANGER, KEY, "cannot be used: the key does not belong to the certificate"),
    ],
)
def test_unusable_server_files_are_one_line_naming_them(cert: Path, key: Path | None, expected: str) -> None:
    with pytest.raises(TlsSetupError) as caught:
        server_context(cert, key)
    message = str(caught.value)
    assert expected in message
    assert "\n" not in message


def test_an_encrypted_key_is_refused_in_one_line_without_asking_for_a_passphrase() -> None:
    encrypted = TLS / "master-encrypted.key"  # master.key under a passphrase: OpenSSL would prompt for it
    with pytest.raises(TlsSetupError, match=f"^TLS key {encrypted} is encrypted: give the master a key without"):
        server_context(CERT, encrypted)


def test_a_folder_given_as_a_tls_file_is_not_a_file(tmp_path: Path) -> None:
    with pytest.raises(TlsSetupError, match=f"^TLS file {tmp_path} is not a file$"):
        server_context(tmp_path, KEY)
    with pytest.raises(TlsSetupError, match=f"^TLS file {tmp_path} is not a file$"):
        TlsClient(tmp_path).context()


def test_a_ca_file_that_is_missing_or_holds_no_certificate_is_refused(tmp_path: Path) -> None:
    assert TlsClient(CA).context().check_hostname
    with pytest.raises(TlsSetupError, match="does not exist"):
        TlsClient(tmp_path / "none.pem").context()
    empty = tmp_path / "empty.pem"
    empty.write_text("not a certificate\n")
    with pytest.raises(TlsSetupError, match=f"CA file {empty} cannot be used"):
        TlsClient(empty).context()


def test_tls_comes_from_flags_first_then_the_environment(tmp_path: Path) -> None:
    assert tls_from_env({}) is None
    assert tls_from_env({"TITAN_TLS": "0"}) is None
    assert tls_from_env({"TITAN_TLS": "1"}) == TlsClient()
    assert tls_from_env({}, tls=True) == TlsClient()
    from_env = tls_from_env({"TITAN_TLS_CA": str(CA)})
    assert from_env == TlsClient(CA.absolute())
    # a relative path is made absolute: child workers run in folders of their own
    assert tls_from_env({"TITAN_TLS_CA": "x.pem"}, ca="ca.pem") == TlsClient(Path("ca.pem").absolute())


def test_the_environment_a_worker_gives_its_services_and_children_names_its_tls() -> None:
    env = {"TITAN_TLS": "1", "TITAN_TLS_CA": "/old/ca.pem", "HOME": "/root"}
    tls_into_env(env, TlsClient(CA))
    assert env == {"TITAN_TLS_CA": str(CA), "HOME": "/root"}
    assert tls_from_env(env) == TlsClient(CA)
    tls_into_env(env, None)
    assert env == {"HOME": "/root"}


@pytest.mark.parametrize(
    ("tls", "variables"),
    [
        (TlsClient(CA), {"TITAN_TLS_CA": str(CA)}),
        (TlsClient(), {"TITAN_TLS": "1"}),
        (None, {}),
    ],
)
def test_child_workers_dial_the_master_as_their_parent_does(
    tmp_path: Path, tls: TlsClient | None, variables: dict[str, str]
) -> None:
    defaults = ChildDefaults(
        master="127.0.0.1:9090", capacity=1, skills=("GENERAL",), heartbeat_interval_s=1.0, token=None, tls=tls
    )
    # the parent's own environment does not leak a different choice into the child
    inherited = {"TITAN_TLS_CA": "/elsewhere/ca.pem", "TITAN_TLS": "1", "PATH": "/bin"}
    children = ChildWorkers("w1", tmp_path, defaults, base_env=inherited, policy=ServicePolicy())
    env = children.command(0, spawn_id="spawn-1").env
    assert {name: env[name] for name in ("TITAN_TLS_CA", "TITAN_TLS") if name in env} == variables


NAME_HINT = "dial the master by a name or address its certificate lists (subjectAltName)"
CA_HINT = "pass the CA that signed it with --tls-ca FILE"


@pytest.mark.parametrize(
    ("code", "message", "hint"),
    [
        (62, "Hostname mismatch, certificate is not valid for 'db1'.", NAME_HINT),
        (64, "IP address mismatch, certificate is not valid for '10.0.0.9'.", NAME_HINT),
        (20, "unable to get local issuer certificate", CA_HINT),
    ],
)
def test_a_refused_certificate_gets_the_hint_that_fits(code: int, message: str, hint: str) -> None:
    exc = ssl.SSLCertVerificationError(1, f"certificate verify failed: {message}")
    exc.verify_code, exc.verify_message = code, message
    error = describe_tls_failure(exc, "db1", 9090)
    assert str(error) == f"cannot reach the master at db1:9090: its TLS certificate was refused ({message}); {hint}"
