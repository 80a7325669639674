"""The one estimator shape shared by every task and kind.

`fit(samples)`, `predict(samples)`, `save(folder)`, `Cls.load(folder)`. Parameters live in a
config dataclass (`model.config`), fitted state is explicit (`to_record` lists all of it), and
`save` / `load` go through the run contract, so every model is saved and loaded by the same code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar, runtime_checkable

from oddspot.errors import OddspotError
from oddspot.runs.contract import MODEL_FILE, Record, load_record, save_record

M = TypeVar("M", bound="RunModel")


@runtime_checkable
class Model(Protocol):
    """What the CLI, the service and the engines rely on for any `(task, kind)`."""

    task: ClassVar[str]
    kind: ClassVar[str]
    config: Any

    def fit(self, samples: Any) -> Any: ...

    def predict(self, samples: Any) -> Any: ...

    def save(self, folder: str | Path) -> Path: ...

    def to_record(self) -> Record: ...


class RunModel:
    """Mixin: `save` and `load` through the run contract from `to_record` / `from_record`.

    `config_class` is the config dataclass that `Cls(**options)` reads strictly (`configs.from_mapping`).
    """

    task: ClassVar[str]
    kind: ClassVar[str]
    config_class: ClassVar[type]

    def to_record(self) -> Record:
        raise NotImplementedError

    @classmethod
    def from_record(cls: type[M], record: Record, **kwargs: Any) -> M:
        raise NotImplementedError

    def save(self, folder: str | Path) -> Path:
        """Write model.json + model.safetensors to `folder` (see `oddspot.runs.contract`)."""
        return save_record(folder, self.to_record())

    @classmethod
    def load(cls: type[M], folder: str | Path, **kwargs: Any) -> M:
        """Load a model saved by `save`; the folder must hold this task and kind."""
        return build_from_record(cls, load_record(folder, cls.task, cls.kind), **kwargs)


def build_from_record(cls: type[M], record: Record, **kwargs: Any) -> M:
    """`cls.from_record(record)`, with every error naming the record's folder: a value that passed the
    checks of model.json can still fail when the model is built (a backbone that is not installed)."""
    try:
        return cls.from_record(record, **kwargs)
    except OddspotError as exc:
        message = str(exc)
        if record.source in message:
            raise
        raise OddspotError(f"{record.source}/{MODEL_FILE}: {message}") from None
