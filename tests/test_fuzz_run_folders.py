"""Fuzz suite: every field and every file of a run folder of each registered `(task, kind)`, mutated.

A mutated folder must either be refused with one line (an `OddspotError`, naming the folder when
loading refuses it; at the command line exit code 2 and one `error: ...` line on stderr), or
predict exactly what the untouched folder predicts: never a traceback, never a silently
different score. split.json and run.json of an inspect run are fuzzed the same way. Mutations that
keep a value's JSON type and only change it (another number, another text, a list one element
shorter or longer) make a different but legitimate model: those must load or be refused cleanly,
and predict finite scores.

While a mutated folder loads, unpickling and `torch.load` are tripwires. The examples are
derandomized (the same every run) and bounded for CI; `ODDSPOT_FUZZ_SCALE=20` runs 20 times more.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import math
import os
import pickle
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from oddspot.cli import cli
from oddspot.data.avenue import Video
from oddspot.errors import OddspotError
from oddspot.runs.contract import MODEL_FILE, TENSORS_FILE
from oddspot.runs.registry import MODELS, load_model

from model_cases import FACTORIES, outputs, predict

CASES = sorted(MODELS)
SCALE = int(os.environ.get("ODDSPOT_FUZZ_SCALE", "1"))
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


def fuzz_settings(examples: int) -> settings:
    return settings(max_examples=examples * SCALE, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])


# -- the fitted folders --------------------------------------------------------------------------

class Clip(Video):
    """A short video held in memory (the fuzz predicts on a few frames only)."""

    def __init__(self, frames: np.ndarray) -> None:
        super().__init__("clip", Path("clip"))
        self._native = frames

    def _iter_native(self) -> Iterator[np.ndarray]:
        yield from self._native


@dataclass(repr=False)
class Fitted:
    task: str
    kind: str
    folder: Path
    meta: dict[str, Any]
    tensors: dict[str, np.ndarray]
    inputs: Any
    expected: dict[str, np.ndarray]
    cli_inputs: Path
    cli_scores: str

    def __repr__(self) -> str:
        return f"Fitted({self.task}, {self.kind})"


def _calibrate(model: Any, images: list[np.ndarray], labels: np.ndarray) -> None:
    """Give an inspect model a calibration and a heatmap scale, so that those fields are fuzzed too."""
    from oddspot.calibration import calibrate

    pred = model.predict(images, maps=True)
    masks = [np.zeros(m.shape, bool) for m in pred.maps]
    model.postprocess = calibrate(pred.scores, labels, pred.maps, masks, "f1")
    model.state["map_display_max"] = float(max(m.max() for m in pred.maps))


def _cli(task: str, folder: Path, inputs: Path, out: Path) -> Any:
    """`oddspot TASK predict` in this process, on the thread count of the in-process predictions."""
    threads = torch.get_num_threads()
    try:
        return CliRunner().invoke(cli, [task, "predict", str(folder), str(inputs), "--out", str(out),
                                        "--threads", str(threads)])
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def backbones():
    """Every loaded model shares one backbone per name: building it dominates a load, and it is no
    part of the run folder (the frozen ImageNet weights of the package)."""
    import oddspot.detectors.backbones
    import oddspot.features
    from oddspot.features.backbone import build_backbone

    cache: dict[tuple[str, str, str], Any] = {}

    def shared(name: str = "efficientnet_lite0", device: Any = None, **options: Any) -> Any:
        key = (name, str(device), repr(sorted(options.items())))
        if key not in cache:
            cache[key] = build_backbone(name, device=device, **options)
        return cache[key]

    mp = pytest.MonkeyPatch()
    for module in (oddspot.detectors.backbones, oddspot.features):
        mp.setattr(module, "build_backbone", shared)
    yield
    mp.undo()


@pytest.fixture(scope="module", params=CASES, ids=[f"{t}-{k}" for t, k in CASES])
def fitted(request, tmp_path_factory, backbones) -> Fitted:
    task, kind = request.param
    tmp = tmp_path_factory.mktemp(f"fuzz-{task}-{kind}")
    case = FACTORIES[(task, kind)](tmp)
    cli_inputs = tmp / "inputs"
    cli_inputs.mkdir()
    if task == "video":
        frames = np.asarray(case.inputs[0].frames())[:12]
        inputs = [Clip(frames)]
        for i, frame in enumerate(frames):
            Image.fromarray(frame).save(cli_inputs / f"{i:03d}.png")
    else:
        inputs = case.inputs[:3] if task == "inspect" else case.inputs[:1]
        for i, image in enumerate(inputs):
            Image.fromarray(image).save(cli_inputs / f"{i}.png")
        if task == "inspect":
            _calibrate(case.model, case.inputs, np.array([0, 0, 1, 1, 1]))
    folder = Path(case.model.save(tmp / "run"))
    expected = outputs(predict(load_model(folder), inputs))
    done = _cli(task, folder, cli_inputs, tmp / "cli-out")
    assert done.exit_code == 0, done.output
    meta = json.loads((folder / MODEL_FILE).read_text())
    tensors = st_load((folder / TENSORS_FILE).read_bytes())
    return Fitted(task, kind, folder, meta, tensors, inputs, expected, cli_inputs,
                  (tmp / "cli-out" / "scores.csv").read_text())


# -- outcomes ------------------------------------------------------------------------------------

class Tripwire(Exception):
    """Something tried to unpickle while a mutated folder loaded."""


@pytest.fixture
def tripwires():
    def forbid(*args: Any, **kwargs: Any) -> Any:
        raise Tripwire("unpickling attempted while loading a run folder")

    mp = pytest.MonkeyPatch()
    for name in ("load", "loads"):
        mp.setattr(pickle, name, forbid)
    mp.setattr(torch, "load", forbid)
    yield
    mp.undo()


def copy_folder(f: Fitted, where: Path) -> Path:
    folder = where / "run"
    shutil.copytree(f.folder, folder)
    return folder


def write_meta(folder: Path, meta: Any) -> None:
    (folder / MODEL_FILE).write_text(json.dumps(meta, allow_nan=True))


def rehash(folder: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """`meta` with the sha256 and size of the folder's (mutated) tensor file, so the hash check passes
    and the deeper checks of the tensors are what is exercised."""
    data = (folder / TENSORS_FILE).read_bytes()
    meta = copy.deepcopy(meta)
    meta["files"] = {TENSORS_FILE: {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}}
    return meta


def check(f: Fitted, folder: Path, lenient: bool = False, what: str = "") -> str:
    """Load and predict the mutated `folder`: refused on one line (naming the folder when it is refused
    on loading), or the untouched predictions (lenient: any finite ones). Returns 'refused' or 'accepted'."""
    try:
        model = load_model(folder)
    except OddspotError as exc:
        message = str(exc)
        assert "\n" not in message, f"{what}: error over several lines: {message!r}"
        assert str(folder) in message, f"{what}: the error does not name the folder: {message!r}"
        return "refused"
    try:
        got = outputs(predict(model, f.inputs))
    except OddspotError as exc:  # damage only predicting shows (tensors that make non-finite scores)
        assert "\n" not in str(exc), f"{what}: error over several lines: {exc}"
        return "refused"
    if lenient:
        for name, value in got.items():
            if value.dtype.kind == "f" and name.split(".")[1] in ("scores", "normalized"):
                assert np.isfinite(value).all(), f"{what}: accepted, but {name} is not finite"
        return "accepted"
    assert sorted(got) == sorted(f.expected), f"{what}: accepted, but predicts other outputs"
    for name, value in f.expected.items():
        assert np.array_equal(got[name], value), f"{what}: accepted, but {name} differs from the untouched folder's"
    return "accepted"


# -- model.json: every field ---------------------------------------------------------------------

def nodes(obj: Any, path: tuple = ()) -> Iterator[tuple]:
    """The path of every value in a JSON document (the root excluded), containers included."""
    if path:
        yield path
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from nodes(v, path + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from nodes(v, path + (i,))


def get(obj: Any, path: tuple) -> Any:
    for p in path:
        obj = obj[p]
    return obj


def jtype(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        return "number"
    return {str: "text", list: "list", dict: "object"}[type(v)]


# A value of another JSON type: the folder must be refused, or predict exactly as before.
OTHER_TYPES: list[Any] = ["text", "", 7, -1, 0.5, True, False, None, [], [1, "a"], {}, {"k": 1}]
NON_FINITE = [math.nan, math.inf, -math.inf]
# Another value of the same type: a legitimately different model, or refused.
SAME_TYPE = {"number": [0, -1, 1, 3, 2.5, -1e-9, 1e-300, 1e308, -1e308, 2**31, 2**63, 2**80, 10**400],
             "text": ["", "x", "efficientnet_lite0", "../../etc", "\u00e9\u2603", "stage2", "inspect", "road", "video",
                      "patchcore", "padim", "cascade", "deeplabv3plus", "motion", "autoencoder"],
             "bool": [True, False]}
# Null where a model legitimately has nothing (no calibration, no threshold): a different model.
NULLABLE = {("inspect", ("postprocess",)), ("video", ("postprocess", "threshold")),
            ("video", ("config", "threshold_quantile")), ("video", ("postprocess", "threshold_quantile")),
            ("road", ("postprocess", "image"))}


@dataclass(repr=False)
class Mutation:
    """One drawn mutation: what it does (its repr, as hypothesis reports it), its result, and whether
    it is lenient (a legitimately different model)."""

    what: str
    result: Any
    lenient: bool

    def __repr__(self) -> str:
        return f"<{self.what}{' (lenient)' if self.lenient else ''}>"


@st.composite
def json_mutation(draw: Callable, meta: dict[str, Any], task: str) -> Mutation:
    """A mutation of one node of `meta`; its result is a function meta -> mutated meta."""
    paths = list(nodes(meta))
    sections = sorted({p[0] for p in paths})  # each top-level field as likely as the others, however big
    section = draw(st.sampled_from(sections))
    path = draw(st.sampled_from([p for p in paths if p[0] == section]))
    old = get(meta, path)
    parent_path, key = path[:-1], path[-1]
    kinds = ["other_type", "non_finite", "delete", "extra_key", "same_type"]
    kind = draw(st.sampled_from(kinds))
    lenient = False
    if kind == "other_type":
        new = draw(st.sampled_from([v for v in OTHER_TYPES if jtype(v) != jtype(old)]))
        lenient = new is None and (task, path) in NULLABLE
    elif kind == "non_finite":
        new = draw(st.sampled_from(NON_FINITE))
    elif kind == "same_type":
        t = jtype(old)
        if t in SAME_TYPE:
            new = draw(st.sampled_from([v for v in SAME_TYPE[t] if not (v == old and type(v) is type(old))] or [old]))
            lenient = True
            if t == "number" and isinstance(new, (int, float)) and new == old:
                lenient = False  # the same number written as int or float: same model
        elif t == "list":
            new = old[:-1] if old and draw(st.booleans()) else old + old[-1:]
            lenient = True
        elif t == "object":
            new = {}
        else:  # null: something instead of nothing
            new = draw(st.sampled_from([0, "x", {}]))
    if kind == "delete" or (kind == "extra_key" and not isinstance(old, dict)):
        def mutate(m: dict) -> dict:
            parent = get(m, parent_path)
            del parent[key]
            return m
        lenient = isinstance(get(meta, parent_path), list)  # a list one element shorter
        return Mutation(f"delete {path}", mutate, lenient)
    if kind == "extra_key":
        def mutate(m: dict) -> dict:
            get(m, path)["zz_unknown"] = 1
            return m
        return Mutation(f"extra key in {path}", mutate, False)

    def mutate(m: dict) -> dict:
        get(m, parent_path)[key] = new
        return m
    return Mutation(f"{path}: {old!r:.40} -> {new!r:.40}", mutate, lenient)


@fuzz_settings(40)
@given(data=st.data())
def test_every_field_of_model_json(fitted, data, tripwires):
    m = data.draw(json_mutation(fitted.meta, fitted.task))
    with tempfile.TemporaryDirectory() as tmp:
        folder = copy_folder(fitted, Path(tmp))
        write_meta(folder, m.result(copy.deepcopy(fitted.meta)))
        check(fitted, folder, m.lenient, m.what)


@pytest.mark.parametrize("text", [
    "", "{", "[]", "null", "7", '"model"', "\ufeff{}", "{} trailing", "[" * 100_000 + "]" * 100_000,
    '{"format_version": 2, "format_version": 1}', "\x00\x01", b"\xff\xfe{}",
], ids=["empty", "truncated", "list", "null", "number", "text", "bom", "trailing", "deep", "duplicate-key",
        "binary", "not-utf8"])
def test_model_json_that_is_not_a_model_json(fitted, tmp_path, text, tripwires):
    folder = copy_folder(fitted, tmp_path)
    raw = text if isinstance(text, bytes) else text.encode("utf-8")
    (folder / MODEL_FILE).write_bytes(raw)
    assert check(fitted, folder, what=f"model.json = {raw[:20]!r}") == "refused"


@pytest.mark.parametrize("cut", [0.999, 0.9, 0.5, 0.1])
def test_truncated_model_json(fitted, tmp_path, cut, tripwires):
    folder = copy_folder(fitted, tmp_path)
    raw = (fitted.folder / MODEL_FILE).read_bytes()
    (folder / MODEL_FILE).write_bytes(raw[: int(len(raw) * cut)])
    assert check(fitted, folder, what=f"model.json cut at {cut}") == "refused"


# -- model.safetensors: every tensor -------------------------------------------------------------

DTYPES = [np.int8, np.uint8, np.int32, np.int64, np.float16, np.float32, np.float64]


def _reshapes(t: np.ndarray) -> dict[str, np.ndarray]:
    if t.ndim == 0:
        return {"extra_dim": t[None]}
    out = {"flat": t.reshape(-1), "extra_dim": t[None], "drop_first": t[1:], "repeat_first": np.concatenate([t[:1], t]),
           "empty": t[:0]}
    if t.ndim >= 2 and t.shape[0] != t.shape[1]:
        out["transposed"] = np.ascontiguousarray(np.swapaxes(t, 0, 1))
    if t.size:
        out["scalar"] = np.asarray(t.reshape(-1)[0])
    if t.ndim == 1 and t.shape[0] <= 1:
        out.pop("flat")
    return out


@st.composite
def tensor_mutation(draw: Callable, tensors: dict[str, np.ndarray]) -> Mutation:
    """A mutation of the tensors; its result is the mutated tensors."""
    names = sorted(tensors)
    name = draw(st.sampled_from(names))
    t = tensors[name]
    out = dict(tensors)
    kind = draw(st.sampled_from(["dtype", "shape", "drop", "extra", "rename", "non_finite", "value", "swap"]))
    if kind == "dtype":
        dtype = draw(st.sampled_from([d for d in DTYPES if np.dtype(d) != t.dtype]))
        out[name] = t.astype(dtype)
        return Mutation(f"{name} as {np.dtype(dtype)}", out, False)
    if kind == "shape":
        variants = _reshapes(t)
        label = draw(st.sampled_from(sorted(variants)))
        out[name] = np.ascontiguousarray(variants[label])
        return Mutation(f"{name} {label} {t.shape} -> {out[name].shape}", out, False)
    if kind == "drop":
        del out[name]
        return Mutation(f"{name} dropped", out, False)
    if kind == "extra":
        out[draw(st.sampled_from(["zz_extra", f"{name}.extra", "memory_bank", "network.extra.weight"]))] = t
        return Mutation(f"extra tensor next to {name}", out, False)
    if kind == "rename":
        del out[name]
        out[name + "_"] = t
        return Mutation(f"{name} renamed", out, False)
    if t.size == 0:
        return Mutation(f"{name} untouched", out, False)
    flat = t.reshape(-1).copy()
    i = draw(st.integers(0, flat.size - 1))
    if kind == "non_finite":
        if t.dtype.kind != "f":
            return Mutation(f"{name} untouched", out, False)
        flat[i] = draw(st.sampled_from(NON_FINITE))
        out[name] = flat.reshape(t.shape)
        return Mutation(f"{name}[{i}] non-finite", out, False)
    if kind == "swap":
        others = [n for n in names if n != name and tensors[n].shape == t.shape and tensors[n].dtype == t.dtype
                  and not np.array_equal(tensors[n], t)]
        if not others:
            return Mutation(f"{name} untouched", out, False)
        other = draw(st.sampled_from(others))
        out[name], out[other] = tensors[other], t
        return Mutation(f"{name} swapped with {other}", out, True)
    if t.dtype.kind == "f":
        flat[i] = draw(st.sampled_from([0.0, -1.0, 1e30, -1e30, float(np.finfo(t.dtype).max), 1e-30]))
    elif t.dtype.kind in "iu":
        info = np.iinfo(t.dtype)
        flat[i] = draw(st.sampled_from([0, 1, info.max, info.min]))
    else:
        flat[i] = not flat[i]
    out[name] = flat.reshape(t.shape)
    return Mutation(f"{name}[{i}] = {flat[i]!r}", out, True)


@fuzz_settings(30)
@given(data=st.data())
def test_every_tensor_of_model_safetensors(fitted, data, tripwires):
    m = data.draw(tensor_mutation(fitted.tensors))
    with tempfile.TemporaryDirectory() as tmp:
        folder = copy_folder(fitted, Path(tmp))
        (folder / TENSORS_FILE).write_bytes(st_save(m.result))
        write_meta(folder, rehash(folder, fitted.meta))
        check(fitted, folder, m.lenient, m.what)


def _header_length(raw: bytes) -> int:
    return 8 + int.from_bytes(raw[:8], "little")


@fuzz_settings(20)
@given(data=st.data())
def test_damaged_bytes_of_model_safetensors(fitted, data, tripwires):
    raw = (fitted.folder / TENSORS_FILE).read_bytes()
    header = _header_length(raw)
    kind = data.draw(st.sampled_from(["truncate", "flip_header", "flip_data", "append"]))
    rehashed = data.draw(st.booleans())
    damaged = bytearray(raw)
    if kind == "truncate":
        damaged = damaged[: data.draw(st.integers(0, len(raw) - 1))]
    elif kind == "append":
        damaged += data.draw(st.binary(min_size=1, max_size=64))
    else:
        lo, hi = (0, header) if kind == "flip_header" else (header, len(raw))
        at = data.draw(st.integers(lo, hi - 1))
        damaged[at] ^= data.draw(st.integers(1, 255))
    with tempfile.TemporaryDirectory() as tmp:
        folder = copy_folder(fitted, Path(tmp))
        (folder / TENSORS_FILE).write_bytes(bytes(damaged))
        if rehashed:
            write_meta(folder, rehash(folder, fitted.meta))
        # Changed tensor values under a matching hash are a different model; anything else is refused.
        outcome = check(fitted, folder, lenient=rehashed and kind == "flip_data", what=f"{kind}, rehashed={rehashed}")
        if not rehashed:
            assert outcome == "refused", f"{kind} without a new hash was accepted"


# -- foreign files ------------------------------------------------------------------------------

def _zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("data.pkl", pickle.dumps({"memory_bank": [1.0, 2.0]}))
    return buf.getvalue()


def _npy(tensors: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.save(buf, next(iter(tensors.values())), allow_pickle=False)
    return buf.getvalue()


# Foreign things in place of a file, from the folder's tensors (None: not a file's bytes).
FOREIGN: dict[str, Callable[[dict[str, np.ndarray]], bytes | None]] = {
    "empty": lambda t: b"",
    "zip": lambda t: _zip(),
    "pickle": lambda t: pickle.dumps(t),
    "npy": _npy,
    "json": lambda t: json.dumps({k: v.tolist() for k, v in t.items()}).encode(),
    "random": lambda t: np.random.default_rng(0).bytes(4096),
    "huge-header": lambda t: (2**62).to_bytes(8, "little") + b"{}",
    "only-metadata": lambda t: st_save({}, metadata={"format": "pt"}),
    "directory": lambda t: None,
    "missing": lambda t: None,
    "fifo": lambda t: None,
    "device": lambda t: None,
}


def place(target: Path, name: str, tensors: dict[str, np.ndarray]) -> None:
    """Put the foreign thing `name` at `target` (which does not exist)."""
    data = FOREIGN[name](tensors)
    if name == "directory":
        target.mkdir()
    elif name == "fifo":
        os.mkfifo(target)  # reading it would block forever
    elif name == "device":
        target.symlink_to("/dev/zero")  # reading it would never end
    elif data is not None:
        target.write_bytes(data)


@pytest.mark.parametrize("rehashed", [False, True], ids=["old-hash", "rehashed"])
@pytest.mark.parametrize("name", sorted(FOREIGN))
def test_foreign_file_as_model_safetensors(fitted, tmp_path, name, rehashed, tripwires):
    folder = copy_folder(fitted, tmp_path)
    target = folder / TENSORS_FILE
    target.unlink()
    place(target, name, fitted.tensors)
    if rehashed and target.is_file() and name != "device":
        write_meta(folder, rehash(folder, fitted.meta))
    assert check(fitted, folder, what=f"{name} as {TENSORS_FILE}") == "refused"


@pytest.mark.parametrize("name", ["zip", "pickle", "npy", "random", "directory", "missing", "fifo", "device"])
def test_foreign_file_as_model_json(fitted, tmp_path, name, tripwires):
    folder = copy_folder(fitted, tmp_path)
    target = folder / MODEL_FILE
    target.unlink()
    place(target, name, fitted.tensors)
    assert check(fitted, folder, what=f"{name} as {MODEL_FILE}") == "refused"


# -- the command line ---------------------------------------------------------------------------

def _cli_mutations(f: Fitted) -> dict[str, Callable[[Path], None]]:
    """A sample of the mutations above, each one a function of the copied folder."""
    first_config = next(iter(f.meta["config"]))
    biggest = max(f.tensors, key=lambda n: f.tensors[n].size)

    def json_edit(path: tuple, value: Any) -> Callable[[Path], None]:
        def apply(folder: Path) -> None:
            meta = copy.deepcopy(f.meta)
            get(meta, path[:-1])[path[-1]] = value
            write_meta(folder, meta)
        return apply

    def tensor_edit(change: Callable[[np.ndarray], np.ndarray]) -> Callable[[Path], None]:
        def apply(folder: Path) -> None:
            (folder / TENSORS_FILE).write_bytes(st_save({**f.tensors, biggest: change(f.tensors[biggest])}))
            write_meta(folder, rehash(folder, f.meta))
        return apply

    def pickled(folder: Path) -> None:
        (folder / TENSORS_FILE).write_bytes(pickle.dumps(f.tensors))
        write_meta(folder, rehash(folder, f.meta))

    return {
        "config text": json_edit(("config", first_config), "abc"),
        "config nan": json_edit(("config", first_config), math.nan),
        "state null": json_edit(("state",), None),
        "unknown config": json_edit(("config", "zz_unknown"), 1),
        "informational": json_edit(("oddspot_version",), "0.0.0+fuzz"),
        "tensor int8": tensor_edit(lambda t: t.astype(np.int8)),
        "tensor shape": tensor_edit(lambda t: t.reshape(-1)[1:]),
        "tensor nan": tensor_edit(lambda t: np.full_like(t, np.nan) if t.dtype.kind == "f" else t[1:]),
        "pickle": pickled,
    }


def test_command_line_refuses_on_one_line_or_predicts_the_same(fitted, tmp_path, tripwires):
    for label, apply in _cli_mutations(fitted).items():
        where = tmp_path / label.replace(" ", "-")
        where.mkdir()
        folder = copy_folder(fitted, where)
        apply(folder)
        done = _cli(fitted.task, folder, fitted.cli_inputs, where / "out")
        if label == "informational":
            assert done.exit_code == 0, f"{label}: {done.output}"
        if done.exit_code == 0:
            assert (where / "out" / "scores.csv").read_text() == fitted.cli_scores, f"{label}: other scores"
            continue
        assert done.exit_code == 2, f"{label}: exit code {done.exit_code}: {done.output[-2000:]}"
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and str(folder) in lines[0], f"{label}: {done.stderr}"


# -- split.json and run.json of an inspect run ---------------------------------------------------

@pytest.fixture(scope="module")
def inspect_run(tmp_path_factory, tiny_mvtec, backbones) -> dict[str, Any]:
    """An inspect run folder as `oddspot inspect fit` writes it: the model, split.json and run.json."""
    from oddspot.inspect import fit, split_test_refs

    out = tmp_path_factory.mktemp("fuzz-inspect-run") / "run"
    fit(tiny_mvtec, "brick", out, options={"image_size": 64, "coreset_ratio": 0.25, "batch_size": 4})
    refs, protocol = split_test_refs(out, tiny_mvtec, "brick", None)
    return {"folder": out, "data": tiny_mvtec, "test": [r.path for r in refs], "protocol": protocol,
            "split.json": json.loads((out / "split.json").read_text()), "run.json": json.loads((out / "run.json").read_text())}


@fuzz_settings(30)
@given(data=st.data())
def test_every_field_of_split_json_and_run_json(inspect_run, data):
    from oddspot.inspect import split_test_refs

    name = data.draw(st.sampled_from(["split.json", "run.json"]))
    m = data.draw(json_mutation(inspect_run[name], "split"))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "run"
        shutil.copytree(inspect_run["folder"], folder)
        (folder / name).write_text(json.dumps(m.result(copy.deepcopy(inspect_run[name])), allow_nan=True))
        try:
            refs, protocol = split_test_refs(folder, inspect_run["data"], "brick", None)
        except OddspotError as exc:
            assert "\n" not in str(exc) and str(folder / name) in str(exc), f"{name} {m.what}: {exc}"
            return
        if not m.lenient:
            assert ([r.path for r in refs], protocol) == (inspect_run["test"], inspect_run["protocol"]), \
                f"{name} {m.what}: accepted, but another test split"


@pytest.mark.parametrize("edit", ["test file in train", "twice in test", "version 2", "version text"])
def test_split_json_that_leaks_or_is_of_another_version_is_refused(inspect_run, tmp_path, edit):
    from oddspot.inspect import split_test_refs

    folder = tmp_path / "run"
    shutil.copytree(inspect_run["folder"], folder)
    split = copy.deepcopy(inspect_run["split.json"])
    if edit == "test file in train":
        split["train"].append(split["test"][0])
    elif edit == "twice in test":
        split["test"].append(split["test"][-1])
    else:
        split["manifest_version"] = 2 if edit == "version 2" else "1"
    (folder / "split.json").write_text(json.dumps(split))
    with pytest.raises(OddspotError, match="split.json: ") as info:
        split_test_refs(folder, inspect_run["data"], "brick", None)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name", ["split.json", "run.json"])
@pytest.mark.parametrize("foreign", ["empty", "zip", "pickle", "directory", "fifo", "device"])
def test_foreign_file_as_split_json_or_run_json(inspect_run, tmp_path, name, foreign, tripwires):
    from oddspot.inspect import split_test_refs

    folder = tmp_path / "run"
    shutil.copytree(inspect_run["folder"], folder)
    (folder / name).unlink()
    place(folder / name, foreign, {"memory_bank": np.zeros((2, 3), np.float32)})
    with pytest.raises(OddspotError) as info:
        split_test_refs(folder, inspect_run["data"], "brick", None)
    assert "\n" not in str(info.value) and str(folder / name) in str(info.value)
