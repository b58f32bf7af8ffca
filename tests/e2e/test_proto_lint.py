"""`make proto-lint` holds the contract to buf's STANDARD lint rules and buf format.

Runs the pinned buf from tools/node_modules, which `make proto-lint` (and so
`make test`) installs first.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUF = ROOT / "tools" / "node_modules" / ".bin" / "buf"


def buf(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    if not BUF.exists():
        pytest.fail("buf is not installed: run `make tools` (make test does it first)")
    return subprocess.run(
        [str(BUF), *args], cwd=folder, capture_output=True, text=True, timeout=120
    )


def scratch_copy(tmp_path: Path) -> Path:
    """The repository's buf.yaml and protos/, to break on purpose."""
    shutil.copy(ROOT / "buf.yaml", tmp_path / "buf.yaml")
    shutil.copytree(ROOT / "protos", tmp_path / "protos")
    return tmp_path


def test_the_protos_pass_lint_and_format() -> None:
    linted = buf(ROOT, "lint")
    assert linted.returncode == 0, linted.stdout + linted.stderr
    formatted = buf(ROOT, "format", "--diff", "--exit-code")
    assert formatted.returncode == 0, formatted.stdout + formatted.stderr


def test_a_rule_violation_fails_lint(tmp_path: Path) -> None:
    folder = scratch_copy(tmp_path)
    proto = folder / "protos" / "headway" / "v1" / "event.proto"
    proto.write_text(
        proto.read_text().replace("int64 oldest_revision = 2;", "int64 oldestRevision = 2;")
    )
    linted = buf(folder, "lint")
    assert linted.returncode != 0
    assert "oldestRevision" in linted.stdout
    assert "lower_snake_case" in linted.stdout


def test_misformatted_protos_fail_the_format_check(tmp_path: Path) -> None:
    folder = scratch_copy(tmp_path)
    proto = folder / "protos" / "headway" / "v1" / "event.proto"
    proto.write_text(
        proto.read_text().replace("int64 oldest_revision = 2;", "int64   oldest_revision=2;")
    )
    formatted = buf(folder, "format", "--diff", "--exit-code")
    assert formatted.returncode != 0
    assert "oldest_revision = 2;" in formatted.stdout
