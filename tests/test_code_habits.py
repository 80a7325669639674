"""The habits `make test` enforces (ruff, the import-layer contract) catch a deliberate violation."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SRC = ROOT / "src" / "oddspot"
pytestmark = pytest.mark.skipif(not (BIN / "ruff").exists() or not (BIN / "lint-imports").exists(),
                                reason="ruff and import-linter come with the dev extras (make test installs them)")


def _copy_project(tmp_path: Path) -> Path:
    """A copy of pyproject.toml and src/oddspot, to break without touching the real tree."""
    shutil.copy2(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    shutil.copytree(SRC, tmp_path / "src" / "oddspot", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def _run(args: list[str], cwd: Path, src: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(src)}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_import_contract_holds_and_fails_on_an_upward_import(tmp_path):
    project = _copy_project(tmp_path)
    ok = _run([str(BIN / "lint-imports"), "--no-cache"], project, project / "src")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    data_init = project / "src" / "oddspot" / "data" / "__init__.py"
    data_init.write_text(data_init.read_text() + "\nimport oddspot.detectors.patchcore  # noqa: E402,F401\n")
    broken = _run([str(BIN / "lint-imports"), "--no-cache"], project, project / "src")
    assert broken.returncode != 0
    assert re.search(r"oddspot\.data.*->.*oddspot\.detectors", broken.stdout.replace("\n", " ")), broken.stdout


def test_report_may_not_load_models(tmp_path):
    project = _copy_project(tmp_path)
    report_init = project / "src" / "oddspot" / "report" / "__init__.py"
    report_init.write_text(report_init.read_text() + "\nimport oddspot.runs.registry  # noqa: E402,F401\n")
    broken = _run([str(BIN / "lint-imports"), "--no-cache"], project, project / "src")
    assert broken.returncode != 0 and "report" in broken.stdout


def test_ruff_passes_and_fails_on_dead_code(tmp_path):
    project = _copy_project(tmp_path)
    ok = _run([str(BIN / "ruff"), "check", "--no-cache", "src"], project, project / "src")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    (project / "src" / "oddspot" / "broken.py").write_text("import os\n\n\ndef f():\n    return undefined_name\n")
    broken = _run([str(BIN / "ruff"), "check", "--no-cache", "src"], project, project / "src")
    assert broken.returncode != 0
    assert "F401" in broken.stdout and "F821" in broken.stdout
