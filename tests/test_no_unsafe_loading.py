"""Nothing in oddspot can execute what a file holds: no pickle, no eval / exec, no unsafe YAML,
`torch.load` only with `weights_only=True`, `np.load` never with `allow_pickle=True`.

The checker reads the syntax tree of every module of src/ and benchmarks/, so a method that
happens to be called `eval` (`model.eval()`) or the word "pickle" in a docstring is not a finding,
and it is itself tested on snippets that break each rule.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("src", "benchmarks")
FORBIDDEN_MODULES = {"pickle", "_pickle", "cPickle", "cloudpickle", "dill", "joblib", "jsonpickle", "marshal", "shelve"}
FORBIDDEN_BUILTINS = {"eval", "exec", "__import__"}
UNSAFE_YAML = {"load", "load_all", "unsafe_load", "unsafe_load_all", "full_load", "full_load_all"}


def _dotted(node: ast.AST) -> str:
    """`a.b.c` for an attribute chain of names, else ''."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return ""


def _keyword_is(call: ast.Call, name: str, value: object) -> bool:
    return any(k.arg == name and isinstance(k.value, ast.Constant) and k.value.value is value for k in call.keywords)


def violations(source: str, name: str = "<source>") -> list[str]:
    """`name:line: what` for every unsafe loading construct in Python `source`."""
    found = []

    def report(node: ast.AST, what: str) -> None:
        found.append(f"{name}:{node.lineno}: {what}")

    for node in ast.walk(ast.parse(source, name)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in FORBIDDEN_MODULES:
                    report(node, f"imports {alias.name}")
        elif isinstance(node, ast.ImportFrom):
            module = (node.module or "").split(".")[0]
            if module in FORBIDDEN_MODULES:
                report(node, f"imports from {node.module}")
            if module == "torch" and any(a.name in ("load", "save") for a in node.names):
                report(node, "imports torch.load / torch.save by name (call torch.load(..., weights_only=True))")
        elif isinstance(node, ast.Call):
            func = _dotted(node.func)
            short = func.rsplit(".", 1)[-1]
            if isinstance(node.func, ast.Name) and func in FORBIDDEN_BUILTINS:
                report(node, f"calls {func}()")
            elif func == "torch.load" and not _keyword_is(node, "weights_only", True):
                report(node, "torch.load without weights_only=True")
            elif func == "torch.save":
                report(node, "torch.save writes a pickle; use safetensors")
            elif func.startswith("yaml.") and short in UNSAFE_YAML:
                report(node, f"{func} (use yaml.safe_load)")
            elif func in ("np.load", "numpy.load") and not all(
                    k.arg != "allow_pickle" or (isinstance(k.value, ast.Constant) and k.value.value is False)
                    for k in node.keywords):
                report(node, f"{func} with allow_pickle")
            elif func in ("importlib.import_module", "import_module") and node.args and \
                    isinstance(node.args[0], ast.Constant) and str(node.args[0].value).split(".")[0] in FORBIDDEN_MODULES:
                report(node, f"imports {node.args[0].value} dynamically")
        elif isinstance(node, ast.Attribute) and _dotted(node.value) in ("pd", "pandas") and node.attr == "read_pickle":
            report(node, "pandas.read_pickle")
    return found


def _modules() -> list[Path]:
    return sorted(p for top in SCANNED for p in (ROOT / top).rglob("*.py") if "__pycache__" not in p.parts)


def test_the_source_never_loads_unsafely():
    modules = _modules()
    assert len(modules) > 50, "the scan found too few modules; check SCANNED"
    found = [v for p in modules for v in violations(p.read_text(encoding="utf-8"), str(p.relative_to(ROOT)))]
    assert not found, "unsafe loading:\n" + "\n".join(found)


@pytest.mark.parametrize("snippet, needle", [
    ("import pickle\n", "imports pickle"),
    ("import numpy as np\nfrom pickle import loads\n", "<source>:2: imports from pickle"),
    ("import marshal, os\n", "imports marshal"),
    ("import shelve\n", "imports shelve"),
    ("import dill\n", "imports dill"),
    ("x = eval('1 + 1')\n", "calls eval()"),
    ("exec(code)\n", "calls exec()"),
    ("m = __import__('pickle')\n", "calls __import__()"),
    ("import importlib\nm = importlib.import_module('pickle')\n", "imports pickle dynamically"),
    ("import torch\nstate = torch.load(path)\n", "<source>:2: torch.load without weights_only=True"),
    ("import torch\nstate = torch.load(path, weights_only=False)\n", "torch.load without weights_only=True"),
    ("import torch\nstate = torch.load(path, weights_only=flag)\n", "torch.load without weights_only=True"),
    ("from torch import load\n", "imports torch.load"),
    ("import torch\ntorch.save(model, path)\n", "torch.save"),
    ("import yaml\ncfg = yaml.load(text)\n", "yaml.load"),
    ("import yaml\ncfg = yaml.load(text, Loader=yaml.Loader)\n", "yaml.load"),
    ("import yaml\ncfg = yaml.unsafe_load(text)\n", "yaml.unsafe_load"),
    ("import numpy as np\na = np.load(path, allow_pickle=True)\n", "np.load with allow_pickle"),
    ("import numpy\na = numpy.load(path, allow_pickle=flag)\n", "numpy.load with allow_pickle"),
    ("import pandas as pd\ndf = pd.read_pickle(path)\n", "pandas.read_pickle"),
])
def test_the_checker_finds_each_unsafe_construct(snippet, needle):
    found = violations(snippet)
    assert any(needle in v for v in found), found


def test_the_checker_leaves_safe_code_alone():
    safe = '''
"""Nothing here is unpickled: weights are safetensors (no pickle)."""
import torch
import numpy as np
import yaml

model.eval()
network.train(False).eval()
state = torch.load(path, map_location="cpu", weights_only=True)
a = np.load(path, mmap_mode="r", allow_pickle=False)
b = np.load(path)
cfg = yaml.safe_load(text)
evaluate(x)
executor.exec(job)
'''
    assert violations(safe) == []
