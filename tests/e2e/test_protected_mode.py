"""Protected mode, as an operator meets it: the server process refuses or starts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.processes import ServerProcess
from tests.security import make_certificates


def run_server(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "headway.server", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_the_network_without_authentication_exits_2_with_the_reason(tmp_path: Path) -> None:
    database = tmp_path / "headway.db"
    result = run_server("--address", "0.0.0.0:0", "--database", str(database))
    assert result.returncode == 2
    assert result.stderr.startswith("headway-server: refusing to listen on 0.0.0.0:0")
    assert "--insecure" in result.stderr
    assert "Traceback" not in result.stderr
    assert not database.exists()  # refused before anything was written


def test_insecure_starts_on_the_network_with_a_warning(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "headway.db", "--insecure", address="0.0.0.0:0").start()
    try:
        log = server.log.read_text()
    finally:
        assert server.stop() == 0
    assert "WARNING headway.server.app: protection: UNPROTECTED" in log
    assert "transport: plaintext" in log


def test_loopback_needs_no_configuration(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "headway.db", address="127.0.0.1:0").start()
    try:
        log = server.log.read_text()
    finally:
        assert server.stop() == 0
    assert "protection: loopback only (127.0.0.1:0, 127.0.0.1:0); no authentication" in log


def test_mutual_tls_is_authentication_enough_for_the_network(tmp_path: Path) -> None:
    certs = make_certificates(tmp_path / "certs")
    server = ServerProcess(
        tmp_path / "headway.db",
        *("--tls-cert", str(certs.server_cert), "--tls-key", str(certs.server_key)),
        *("--tls-client-ca", str(certs.ca)),
        address="0.0.0.0:0",
    ).start()
    try:
        log = server.log.read_text()
    finally:
        assert server.stop() == 0
    assert f"transport: mutual TLS (certificate {certs.server_cert}, client CA {certs.ca}" in log
    assert (
        "protection: reachable from the network (0.0.0.0:0, 127.0.0.1:0); authentication: client"
        in log
    )


def test_unusable_tls_files_exit_2(tmp_path: Path) -> None:
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello")
    result = run_server(
        *("--tls-cert", str(not_pem), "--tls-key", str(not_pem)),
        *("--address", "127.0.0.1:0", "--database", str(tmp_path / "headway.db")),
    )
    assert result.returncode == 2
    assert "is not PEM" in result.stderr
    missing = run_server("--tls-cert", str(tmp_path / "missing.pem"), "--tls-key", "x")
    assert missing.returncode == 2
    assert "--tls-cert (HEADWAY_TLS_CERT)" in missing.stderr


def test_an_http_address_on_the_network_without_authentication_exits_2(tmp_path: Path) -> None:
    database = tmp_path / "headway.db"
    result = run_server(
        *("--address", "127.0.0.1:0", "--http-address", "0.0.0.0:0"),
        *("--database", str(database)),
    )
    assert result.returncode == 2
    assert result.stderr.startswith("headway-server: refusing to listen on 0.0.0.0:0")
    assert "--http-address 127.0.0.1:8080" in result.stderr
    assert not database.exists()


def test_insecure_serves_http_on_the_network_too(tmp_path: Path) -> None:
    server = ServerProcess(
        tmp_path / "headway.db", "--insecure", address="127.0.0.1:0", http_address="0.0.0.0:0"
    ).start()
    try:
        log = server.log.read_text()
    finally:
        assert server.stop() == 0
    assert "protection: UNPROTECTED: reachable from the network (127.0.0.1:0, 0.0.0.0:0)" in log
    assert server.http_port > 0
