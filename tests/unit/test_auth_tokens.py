"""The token file: its format, its refusals with line numbers, reloads and edits."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest

from headway.server.auth.principal import Role
from headway.server.auth.tokens import (
    TOKEN_PREFIX,
    Entry,
    TokenFile,
    TokenFileError,
    append_token,
    generate_secret,
    hash_secret,
    parse,
    remove_name,
)

SECRET = "hw_example-secret"
DIGEST = hash_secret(SECRET)


class Ticker:
    """A monotonic clock the test moves, so reload checks need no sleeping."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_file_maps_token_hashes_and_certificates_to_principals() -> None:
    table = parse(
        f"# agents\n\nsha256:{DIGEST} build-bot acme agent\n  cert:gateway.acme acme viewer  \n",
        allow_cross_tenant=False,
    )
    assert table.tokens == {DIGEST: Entry("build-bot", "acme", Role.AGENT)}
    assert table.certificates == {"gateway.acme": Entry("gateway.acme", "acme", Role.VIEWER)}
    assert table.describe() == "1 token, 1 certificate"


def test_the_hash_is_the_sha256_of_the_secret_and_secrets_are_recognisable() -> None:
    assert hash_secret("abc") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )
    secret = generate_secret()
    assert secret.startswith(TOKEN_PREFIX)
    assert len(secret) >= len(TOKEN_PREFIX) + 43
    assert generate_secret() != secret


@pytest.mark.parametrize(
    ("line", "complaint"),
    [
        ("token abc", "must start with 'sha256:' or 'cert:'"),
        (f"sha256:{DIGEST} bot acme", "expected 'sha256:"),
        (f"sha256:{DIGEST[:-1]} bot acme agent", "64 lowercase hex digits"),
        (f"sha256:{DIGEST.upper()} bot acme agent", "64 lowercase hex digits"),
        (f"sha256:{DIGEST} bot acme root", "role 'root' must be one of agent, viewer"),
        (f"sha256:{DIGEST} -bot acme agent", "name '-bot' must be"),
        (f"sha256:{DIGEST} bot ac/me agent", "tenant 'ac/me' must be"),
        (f"sha256:{DIGEST} bot * viewer", "tenant '*' (every tenant) is allowed only with role"),
        (f"sha256:{DIGEST} bot * admin", "--auth-allow-cross-tenant-admin"),
        ("cert:gw acme", "expected 'cert:<common name> <tenant> <role>'"),
    ],
)
def test_a_malformed_line_is_refused_with_its_number(line: str, complaint: str) -> None:
    with pytest.raises(TokenFileError) as refused:
        parse(f"# header\n\n{line}\n", allow_cross_tenant=False, source="token file t")
    assert str(refused.value).startswith("token file t, line 3: ")
    assert complaint in str(refused.value)
    assert SECRET not in str(refused.value)


def test_a_token_hash_listed_twice_is_refused() -> None:
    text = f"sha256:{DIGEST} a acme agent\nsha256:{DIGEST} b acme admin\n"
    with pytest.raises(TokenFileError, match="line 2: this token hash is already listed"):
        parse(text, allow_cross_tenant=False)


def test_a_cross_tenant_admin_needs_the_setting() -> None:
    table = parse(f"sha256:{DIGEST} ops * admin\n", allow_cross_tenant=True)
    assert table.tokens[DIGEST].cross_tenant


def test_a_token_file_that_cannot_be_read_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TokenFileError, match="cannot read token file"):
        TokenFile(tmp_path / "absent", allow_cross_tenant=False)


def test_a_changed_file_is_reloaded_at_most_once_a_second(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text(f"sha256:{DIGEST} bot acme agent\n")
    ticker = Ticker()
    tokens = TokenFile(path, allow_cross_tenant=False, monotonic=ticker)
    assert tokens.token(SECRET) == Entry("bot", "acme", Role.AGENT)
    path.write_text("# revoked\n")
    ticker.now += 0.5
    assert tokens.token(SECRET) is not None  # not checked yet
    ticker.now += 0.5
    assert tokens.token(SECRET) is None


def test_a_broken_file_on_reload_keeps_the_entries_in_force(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "tokens"
    path.write_text(f"sha256:{DIGEST} bot acme agent\n")
    ticker = Ticker()
    tokens = TokenFile(path, allow_cross_tenant=False, monotonic=ticker)
    path.write_text(f"sha256:{DIGEST} bot acme agent\nnonsense here\n")
    ticker.now += 1
    with caplog.at_level(logging.ERROR):
        assert tokens.token(SECRET) == Entry("bot", "acme", Role.AGENT)
    assert "line 2" in caplog.text
    assert "previous entries stay in force" in caplog.text
    # Not parsed (nor logged) again until it changes.
    caplog.clear()
    ticker.now += 1
    assert tokens.token(SECRET) is not None
    assert not caplog.text
    path.write_text("")
    assert tokens.reload()  # as on SIGHUP: at once
    assert tokens.token(SECRET) is None


def test_a_deleted_file_keeps_the_entries_in_force(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text(f"sha256:{DIGEST} bot acme agent\n")
    tokens = TokenFile(path, allow_cross_tenant=False)
    path.unlink()
    assert not tokens.reload()
    assert tokens.token(SECRET) is not None


def test_append_creates_a_private_file_and_remove_drops_every_line_of_a_name(
    tmp_path: Path,
) -> None:
    path = tmp_path / "tokens"
    first = append_token(path, "bot", "acme", "agent")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with path.open("a") as file:
        file.write("cert:bot acme viewer")  # no newline: the next append adds one
    second = append_token(path, "bot", "acme", "agent")
    other = append_token(path, "viewer-1", "acme", "viewer")
    table = parse(path.read_text(), allow_cross_tenant=False)
    assert {hash_secret(s) for s in (first, second, other)} == set(table.tokens)
    assert first not in path.read_text()

    assert remove_name(path, "bot") == 3
    table = parse(path.read_text(), allow_cross_tenant=False)
    assert set(table.tokens) == {hash_secret(other)}
    assert not table.certificates
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert remove_name(path, "bot") == 0


def test_append_refuses_bad_fields(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="role 'boss'"):
        append_token(tmp_path / "tokens", "bot", "acme", "boss")
    assert not (tmp_path / "tokens").exists()


def test_a_file_created_before_is_left_with_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.touch()
    os.chmod(path, 0o640)
    append_token(path, "bot", "acme", "agent")
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_the_readme_example_file_parses() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## Authentication", 1)[1]
    example = section.split("```text\n", 1)[1].split("```", 1)[0]
    table = parse(example, allow_cross_tenant=True)
    assert [entry.name for entry in table.tokens.values()] == ["ci-runner", "ops"]
    assert list(table.certificates) == ["dashboard.acme.example"]
    with pytest.raises(TokenFileError, match="line 6"):
        parse(example, allow_cross_tenant=False)
