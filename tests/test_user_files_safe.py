"""Outputs never destroy what the user did not ask oddspot to replace (found by a hostile-user review)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from oddspot.cli import cli
from oddspot.errors import OddspotError
from oddspot.files import check_out_folder, staged_folder


def test_a_folder_with_a_common_file_name_and_the_users_files_is_refused(tmp_path):
    mine = tmp_path / "project"
    mine.mkdir()
    (mine / "metrics.json").write_text("{}")  # e.g. a DVC project's metrics
    (mine / "thesis.tex").write_text("important")
    with pytest.raises(OddspotError, match="did not write"):
        check_out_folder(mine)
    with pytest.raises(OddspotError, match="nothing was deleted"):
        with staged_folder(mine) as stage:
            (stage / "scores.csv").write_text("x")
    assert (mine / "thesis.tex").read_text() == "important"


def test_an_older_oddspot_folder_holding_only_its_files_is_replaced(tmp_path):
    old = tmp_path / "eval"
    (old / "gallery").mkdir(parents=True)
    (old / "metrics.json").write_text("{}")
    (old / "scores.csv").write_text("path,score\n")
    with staged_folder(old) as stage:
        (stage / "scores.csv").write_text("new")
    assert (old / "scores.csv").read_text() == "new" and not (old / "metrics.json").exists()


def _eval_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "eval"
    folder.mkdir()
    (folder / "metrics.json").write_text('{"task": "inspect", "record_version": 1}')
    return folder


@pytest.mark.parametrize("name", ["metrics.json", "model.json", "notes.txt"])
def test_report_output_must_be_an_html_file(tmp_path, name):
    folder = _eval_folder(tmp_path)
    target = folder / name
    if name != "metrics.json":
        target.write_text("keep")
    before = target.read_text()
    result = CliRunner().invoke(cli, ["report", str(folder), "-o", str(target)])
    assert result.exit_code == 2 and result.output.startswith("error: ") and ".html" in result.output
    assert target.read_text() == before


def test_an_unwritable_place_is_one_line_not_a_traceback(tmp_path):
    folder = _eval_folder(tmp_path)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = CliRunner().invoke(cli, ["report", str(folder), "-o", str(blocker / "r.html")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.output.strip().splitlines()[-1].startswith("error: ")
