"""Whole-folder commits (`oddspot.files.staged_folder`): a fit or a predict stopped at any write
leaves the old complete folder or the new complete one, never a mix; outputs of an earlier run are
replaced; a user's own folder is never deleted; refits say what they do with an existing split."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from oddspot import inspect
from oddspot.cli import cli
from oddspot.data.image_io import read_image
from oddspot.errors import OddspotError
from oddspot.files import MARKER_FILE, _lock, recover_folder, staged_folder
from oddspot.runs.registry import load_model

OLD = ("patchcore", {"image_size": 64, "coreset_ratio": 0.25, "batch_size": 4})
NEW = ("padim", {"image_size": 64, "batch_size": 4})  # a refit with another detector: another bank


def cli_run(*args: object):
    return CliRunner().invoke(cli, [str(a) for a in args])


def one_line_error(res, *needles: str) -> None:
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.output
    for needle in needles:
        assert needle in lines[0], (needle, res.output)


def snapshot(folder: Path) -> dict[str, object]:
    """Every file of `folder` (bytes; JSON without timings), so two folders compare as wholes."""
    files: dict[str, object] = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            rel = p.relative_to(folder).as_posix()
            if p.suffix == ".json":
                obj = json.loads(p.read_text())
                files[rel] = {k: v for k, v in obj.items() if "seconds" not in k}
            else:
                files[rel] = p.read_bytes()
    return files


def leftovers(folder: Path) -> list[str]:
    return sorted(n for n in os.listdir(folder.parent) if n.startswith(f".{folder.name}.oddspot-"))


def fit_into(data: Path, out: Path, kind_options: tuple[str, dict], seed: int = 0, **kw) -> dict:
    kind, options = kind_options
    return inspect.fit(data, "brick", out, kind, options, seed=seed, **kw)


@pytest.fixture(scope="module")
def images(tiny_mvtec) -> list[np.ndarray]:
    return [read_image(tiny_mvtec / "brick" / "test" / "good" / "000.png")]


@pytest.fixture(scope="module")
def runs(tiny_mvtec, tmp_path_factory, one_thread) -> dict[str, Path]:
    """`old`: a complete patchcore run; `new`: the same folder after a refit with padim."""
    root = tmp_path_factory.mktemp("commits")
    fit_into(tiny_mvtec, root / "old", OLD)
    shutil.copytree(root / "old", root / "new")
    fit_into(tiny_mvtec, root / "new", NEW)
    return {"old": root / "old", "new": root / "new"}


@pytest.fixture(scope="module")
def references(runs, images) -> dict[str, tuple[dict, np.ndarray]]:
    return {name: (snapshot(folder), load_model(folder, "inspect").predict(images).scores)
            for name, folder in runs.items()}


def run_state(folder: Path, references, images) -> str:
    """'old' or 'new' when `folder` loads as exactly one of the two complete runs (files and predictions)."""
    model = load_model(folder, "inspect")  # a reader: settles an interrupted commit first
    files, scores = snapshot(folder), model.predict(images).scores
    for name, (ref_files, ref_scores) in references.items():
        if files == ref_files:
            assert np.array_equal(scores, ref_scores), name
            return name
    raise AssertionError(f"{folder} is neither the old nor the new run: {sorted(files)}")


class Crash(BaseException):
    """An injected failure (BaseException, like KeyboardInterrupt: no `except Exception` stops it)."""


@contextmanager
def fault_at(monkeypatch, k: int, kill: bool) -> Iterator[dict]:
    """Fail at the k-th write boundary (a rename or replace of a file or folder, or a folder deletion).

    With `kill`, the process is dead from then on: every later rename, replace or deletion fails as
    well, so no cleanup of oddspot's takes effect (its file locks are still released, as on a kill).
    """
    calls = {"n": 0, "dead": False}

    def wrap(fn: Callable, boundary: bool) -> Callable:
        def call(*args, **kwargs):
            if calls["dead"]:
                raise Crash("dead")
            if boundary:
                calls["n"] += 1
                if calls["n"] == k:
                    calls["dead"] = kill
                    raise Crash(f"injected at write boundary {k}")
            return fn(*args, **kwargs)
        return call

    with monkeypatch.context() as m:
        m.setattr(os, "replace", wrap(os.replace, True))
        m.setattr(os, "rename", wrap(os.rename, True))
        m.setattr(shutil, "rmtree", wrap(shutil.rmtree, True))
        m.setattr(os, "unlink", wrap(os.unlink, False))
        yield calls


@pytest.mark.parametrize("kill", [False, True], ids=["failure", "kill"])
def test_fit_stopped_at_every_write_leaves_old_or_new_run(kill, tiny_mvtec, runs, references, images, tmp_path,
                                                          monkeypatch, one_thread):
    seen = []
    k = 0
    while True:
        k += 1
        folder = tmp_path / f"k{k}" / "run"
        shutil.copytree(runs["old"], folder)
        with fault_at(monkeypatch, k, kill):
            try:
                fit_into(tiny_mvtec, folder, NEW)
                completed = True
            except Crash:
                completed = False
        if completed:
            assert run_state(folder, references, images) == "new" and not leftovers(folder)
            break
        seen.append(run_state(folder, references, images))
        if kill:  # the next normal fit succeeds, and nothing is left over
            fit_into(tiny_mvtec, folder, NEW)
            assert run_state(folder, references, images) == "new" and not leftovers(folder)
        else:  # a failure cleans up after itself, except when deleting the replaced folder failed
            assert not leftovers(folder) or seen[-1] == "new"
    assert k >= 6, k  # split, tensors, model.json, run.json, two commit renames, the old folder's deletion
    assert "old" in seen and (not kill or "new" in seen), seen


@pytest.fixture(scope="module")
def predictions(runs, tiny_mvtec, tmp_path_factory) -> dict[str, Path]:
    """`old`: patchcore on every test image (one unreadable); `new`: padim on one of them, with its map."""
    root = tmp_path_factory.mktemp("predict")
    bad = root / "inputs" / "bad.png"
    shutil.copytree(tiny_mvtec / "brick" / "test", root / "inputs")
    bad.write_bytes(b"not a png")
    inspect.predict(runs["old"], [root / "inputs"], root / "old", warn=lambda _: None)
    shutil.copytree(root / "old", root / "new")
    inspect.predict(runs["new"], [root / "inputs" / "good" / "000.png"], root / "new", save_maps=True)
    return {"old": root / "old", "new": root / "new", "inputs": root / "inputs"}


def test_predict_replaces_the_outputs_of_an_earlier_run(predictions):
    old, new = predictions["old"], predictions["new"]
    defects = {p.name for p in (old / "heatmaps").iterdir()} - {"good"}
    assert (old / "errors.csv").is_file() and defects
    names = {p.relative_to(new).as_posix() for p in new.rglob("*") if p.is_file()}
    assert not (new / "errors.csv").exists() and not any((new / "heatmaps" / d).exists() for d in defects)  # no stale
    assert names == {MARKER_FILE, "scores.csv", "heatmaps/000.png.png", "masks/000.png.png", "maps/000.png.npy"}
    umask = os.umask(0)
    os.umask(umask)
    assert new.stat().st_mode & 0o777 == 0o777 & ~umask  # not the 0700 of a temporary folder


def test_predict_stopped_at_every_write_leaves_old_or_new_outputs(predictions, runs, tmp_path, monkeypatch,
                                                                  one_thread):
    refs = {name: snapshot(predictions[name]) for name in ("old", "new")}
    seen = []
    for kill in (False, True):
        k = 0
        while True:
            k += 1
            out = tmp_path / f"{kill}-{k}" / "out"
            shutil.copytree(predictions["old"], out)
            with fault_at(monkeypatch, k, kill):
                try:
                    inspect.predict(runs["new"], [predictions["inputs"] / "good" / "000.png"], out, save_maps=True)
                    completed = True
                except Crash:
                    completed = False
            recover_folder(out)  # what the next run (or a reader) does first
            state = [name for name, files in refs.items() if out.is_dir() and snapshot(out) == files]
            assert len(state) == 1 and not leftovers(out), (kill, k)
            if completed:
                assert state == ["new"]
                break
            seen.append(state[0])
    assert {"old", "new"} <= set(seen)


def test_kill_during_cli_fit_leaves_a_loadable_run(tiny_mvtec, runs, references, images, tmp_path, one_thread):
    """A real SIGKILL at seeded random moments of `oddspot fit` (mostly before the commit, which is short)."""
    config = tmp_path / "padim.yaml"
    config.write_text(yaml.safe_dump(NEW[1]))
    rng = np.random.default_rng(13)
    for i, delay in enumerate(rng.uniform(1.0, 6.0, size=1)):
        folder = tmp_path / f"kill{i}" / "run"
        shutil.copytree(runs["old"], folder)
        proc = subprocess.Popen([sys.executable, "-m", "oddspot", "fit", str(tiny_mvtec), "-c", "brick", "--model",
                                 "padim", "--config", str(config), "--out", str(folder), "--threads", "1"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert run_state(folder, references, images) in ("old", "new")
        fit_into(tiny_mvtec, folder, NEW)
        assert run_state(folder, references, images) == "new" and not leftovers(folder)


def test_refit_with_another_seed_needs_new_split(tiny_mvtec, runs, references, tmp_path):
    folder = tmp_path / "run"
    shutil.copytree(runs["old"], folder)
    config = tmp_path / "opts.yaml"
    config.write_text(yaml.safe_dump(OLD[1]))
    args = ("fit", tiny_mvtec, "-c", "brick", "--config", config, "--out", folder, "--threads", "1")
    one_line_error(cli_run(*args, "--seed", "1"), "--seed 0", "--new-split")
    one_line_error(cli_run(*args, "--split", "standard"), "--split validation", "--new-split")
    assert snapshot(folder) == references["old"][0]  # refused: the earlier run is untouched
    res = cli_run(*args)
    assert res.exit_code == 0 and "reused the split" in res.output, res.output
    res = cli_run(*args, "--seed", "1", "--new-split")
    assert res.exit_code == 0 and "drew a new split (--new-split)" in res.output, res.output
    split = json.loads((folder / "split.json").read_text())
    run = json.loads((folder / "run.json").read_text())
    assert split["seed"] == run["seed"] == 1 and run["split_origin"] == "redrawn"
    assert split["train"] != references["old"][0]["split.json"]["train"]


def test_failed_fit_leaves_nothing_that_blocks_the_next(tiny_mvtec, tmp_path):
    folder = tmp_path / "run"
    config = tmp_path / "opts.yaml"
    config.write_text(yaml.safe_dump(OLD[1]))
    args = ("fit", tiny_mvtec, "-c", "brick", "--config", config, "--out", folder, "--threads", "1")
    one_line_error(cli_run(*args, "--split", "standard", "--calibration", "fixed"), "--threshold")  # after the split
    assert not folder.exists() and not leftovers(folder)
    res = cli_run(*args)
    assert res.exit_code == 0 and "drew the split" in res.output, res.output


def test_out_that_is_a_file_is_one_line_error(tiny_mvtec, tmp_path):
    target = tmp_path / "file.txt"
    target.write_text("mine")
    one_line_error(cli_run("fit", tiny_mvtec, "-c", "brick", "--out", target), str(target), "is a file")
    assert target.read_text() == "mine"
    with pytest.raises(OddspotError, match="is a file"), staged_folder(target):
        pass


def test_a_folder_oddspot_did_not_write_is_never_replaced(runs, tiny_mvtec, tmp_path, monkeypatch):
    mine = tmp_path / "mine"
    (mine / "sub").mkdir(parents=True)
    (mine / "notes.txt").write_text("keep me")
    res = cli_run("predict", runs["old"], tiny_mvtec / "brick" / "test" / "good", "--out", mine)
    one_line_error(res, "did not write", "nothing was deleted")
    assert (mine / "notes.txt").read_text() == "keep me" and (mine / "sub").is_dir()
    with pytest.raises(OddspotError, match="holds the input"), staged_folder(tmp_path, inputs=[mine / "notes.txt"]):
        pass
    monkeypatch.chdir(mine)
    for out in (".", "sub/..", str(Path.home()), "/"):
        with pytest.raises(OddspotError, match="current folder|home folder"), staged_folder(out):
            pass
    assert (mine / "notes.txt").read_text() == "keep me" and sorted(p.name for p in tmp_path.iterdir()) == ["mine"]


def test_an_empty_folder_or_an_oddspot_folder_is_replaced_whole(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with staged_folder(empty) as stage:
        (stage / "a.txt").write_text("1")
    assert sorted(p.name for p in empty.iterdir()) == [MARKER_FILE, "a.txt"]
    with staged_folder(empty) as stage:
        (stage / "b.txt").write_text("2")
    assert sorted(p.name for p in empty.iterdir()) == [MARKER_FILE, "b.txt"]
    with pytest.raises(ValueError), staged_folder(empty) as stage:
        (stage / "c.txt").write_text("3")
        raise ValueError("failed half way")
    assert sorted(p.name for p in empty.iterdir()) == [MARKER_FILE, "b.txt"] and not leftovers(empty)


def test_recovery_settles_leftovers_and_spares_those_in_use(tmp_path):
    out = tmp_path / "out"
    old = tmp_path / ".out.oddspot-old-1-0123abcd"
    stage = tmp_path / ".out.oddspot-tmp-1-89abcdef"
    busy = tmp_path / ".out.oddspot-tmp-2-00000000"
    for folder, name in ((old, "old.txt"), (stage, "half.txt"), (busy, "busy.txt")):
        folder.mkdir()
        (folder / name).write_text("x")
    (tmp_path / ".outer.oddspot-tmp-1-0123abcd").mkdir()  # another folder's leftover
    fd = _lock(busy)  # another process still writing
    try:
        recover_folder(out)
        assert sorted(p.name for p in out.iterdir()) == ["old.txt"]  # killed between the renames: old restored
        assert leftovers(out) == [busy.name] and (tmp_path / ".outer.oddspot-tmp-1-0123abcd").is_dir()
    finally:
        os.close(fd)
    recover_folder(out)
    assert leftovers(out) == [] and (out / "old.txt").is_file()
