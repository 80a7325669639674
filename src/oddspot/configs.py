"""The one strict config reader: a mapping -> a config dataclass, or a one-line error.

Unknown keys, wrong types (text for a number, a number for text, a bool for an int), non-finite
floats and out-of-range values (each config's `__post_init__`) are all refused with a message that
names the source and the key. Lists become tuples; ints are accepted where floats are expected.
"""

from __future__ import annotations

import math
import types
import typing
from dataclasses import MISSING, fields, is_dataclass
from typing import Any, TypeVar

from oddspot.errors import OddspotError

C = TypeVar("C")


_YAML_FLOAT = r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
|\.[0-9_]+(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"""


def load_yaml(text: str) -> Any:
    """YAML text -> Python values, strictly: a key given twice in one mapping is an error (a
    yaml.YAMLError naming the key and its line; PyYAML would keep the last silently), and a number
    in exponent form without a dot (`1e-9`) is a float, as in YAML 1.2 (PyYAML reads it as text)."""
    loader = _strict_loader()(text)  # a SafeLoader subclass: it builds plain values only
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def _strict_loader() -> type:
    import re

    import yaml

    global _LOADER
    if _LOADER is None:
        class StrictLoader(yaml.SafeLoader):
            def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
                seen: set[Any] = set()
                for key_node, _ in node.value:
                    key = self.construct_object(key_node, deep=deep)
                    if isinstance(key, typing.Hashable) and key in seen:
                        raise yaml.constructor.ConstructorError(
                            None, None, f"key {key!r} given twice (line {key_node.start_mark.line + 1})", key_node.start_mark)
                    seen.add(key)
                return super().construct_mapping(node, deep=deep)

        StrictLoader.yaml_implicit_resolvers = {k: [r for r in v if r[0] != "tag:yaml.org,2002:float"]
                                                for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
        StrictLoader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(_YAML_FLOAT, re.X),
                                           list("-+0123456789."))
        _LOADER = StrictLoader
    return _LOADER


_LOADER: type | None = None


def finite_number(value: Any) -> bool:
    """True for an int or float (not a bool) that is finite as a float: JSON's 1e999 reads as inf, and
    an integer of 400 digits is one no float can hold."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, where: str, complete: bool = False) -> Any:
    """`value` checked against the annotation `tp` (and converted: list -> tuple, int -> float);
    nested configs must hold every field when `complete`."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, where, complete)
            except OddspotError as exc:
                errors.append(str(exc))
        raise OddspotError(errors[0] if len(errors) == 1 else
                           f"{where}: {value!r} is not a {' or '.join(_type_name(a) for a in args)}")
    if tp is bool:
        if not isinstance(value, bool):
            raise OddspotError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise OddspotError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise OddspotError(f"{where}: expected a number, got {value!r}")
        if not finite_number(value):
            raise OddspotError(f"{where}: expected a finite number, got {value!r:.40}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise OddspotError(f"{where}: expected text, got {value!r}")
        return value
    if origin is tuple or tp is tuple:
        if not isinstance(value, (list, tuple)):
            raise OddspotError(f"{where}: expected a list, got {value!r}")
        if args and args[-1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{where}[{i}]", complete) for i, v in enumerate(value))
        if args:
            if len(value) != len(args):
                raise OddspotError(f"{where}: expected {len(args)} values, got {len(value)}")
            return tuple(_convert(v, a, f"{where}[{i}]", complete) for i, (v, a) in enumerate(zip(value, args)))
        return tuple(value)
    if origin is list or tp is list:
        if not isinstance(value, (list, tuple)):
            raise OddspotError(f"{where}: expected a list, got {value!r}")
        return [_convert(v, args[0], f"{where}[{i}]", complete) for i, v in enumerate(value)] if args else list(value)
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise OddspotError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if is_dataclass(tp) and isinstance(tp, type):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise OddspotError(f"{where}: expected a mapping, got {value!r}")
        return from_mapping(tp, value, where, complete)
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise OddspotError(f"{where}: cannot check a value of type {_type_name(tp)}")


def from_mapping(cls: type[C], values: Any, source: str, complete: bool = False) -> C:
    """Build the config dataclass `cls` from `values`, strictly.

    `source` names where the values came from (a file, an option group) and starts every error.
    Errors raised by the config's own `__post_init__` range checks are prefixed with it too.
    With `complete` (a config saved with a model), every field must be present: a missing one
    would silently take its default, which need not be the value the model was fitted with. The
    one exception is a field the config class lists in its `ADDED_FIELDS` mapping (fields added
    after models were already saved): a saved config without it takes the value listed there,
    the one that reproduces how those models were made.
    """
    if not isinstance(values, dict):
        raise OddspotError(f"{source}: expected a mapping of option: value, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(str(k) for k in values if k not in known)
    if unknown:
        raise OddspotError(f"{source}: unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    converted = {}
    for name, f in known.items():
        if name in values:
            converted[name] = _convert(values[name], hints[name], f"{source}: {name}", complete)
        elif f.default is MISSING and f.default_factory is MISSING:  # type: ignore[misc]
            raise OddspotError(f"{source}: option {name} missing")
        elif complete and name in getattr(cls, "ADDED_FIELDS", {}):
            converted[name] = cls.ADDED_FIELDS[name]  # type: ignore[attr-defined]
        elif complete:
            raise OddspotError(f"{source}: option {name} missing; a saved config holds every option, refit the model")
    try:
        return cls(**converted)
    except OddspotError as exc:
        message = str(exc)
        raise OddspotError(message if message.startswith(source) else f"{source}: {message}") from None
    except (TypeError, ValueError) as exc:
        raise OddspotError(f"{source}: {exc}") from None


def check_range(name: str, value: float, low: float | None = None, high: float | None = None,
                low_open: bool = False, high_open: bool = False) -> None:
    """Raise a one-line error unless `low <= value <= high` (open ends exclude the bound)."""
    ok = math.isfinite(value) if isinstance(value, float) else True
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        lo = "-inf" if low is None else f"{low}"
        hi = "inf" if high is None else f"{high}"
        interval = f"{'(' if low_open or low is None else '['}{lo}, {hi}{')' if high_open or high is None else ']'}"
        raise OddspotError(f"{name} {value!r} out of range; use a value in {interval}")
