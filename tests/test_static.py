"""Static checks: the package, pipelines and dashboard are fully typed and type-check; the tree lints clean.

Settings live in pyproject.toml (``[tool.mypy]``, ``[tool.ruff]``); both tools come with ``.[test]``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TYPED = ["platform/cryopick", "pipelines", "dashboard"]


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *cmd], cwd=REPO, capture_output=True, text=True, timeout=400)


def test_mypy_every_function_typed_and_consistent() -> None:
    # every def annotated (the brief asks for full type hints), and the annotations agree with the calls
    r = _run("mypy", "--disallow-untyped-defs", "--disallow-incomplete-defs", *TYPED)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "Success" in r.stdout


def test_ruff_lints_clean() -> None:
    r = _run("ruff", "check", "--no-cache", "platform", "pipelines", "dashboard", "benchmarks", "tests")
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
