"""Batch scoring and evaluation on a Ray cluster (`oddspot <task> predict|evaluate --engine ray`).

- `predict(task, run, sources, out, ...)`: Ray Data over an actor pool (the model loaded once per
  actor), results in atomic shards, resumable, united in OUT/scores.parquet (`scale.predict`);
- `evaluate(task, ...)`: each block of test items folded into mergeable metric states on the
  workers, merged exactly on the driver, the task's evaluation record written (`scale.evaluate`).

Ray and pyarrow are optional (`pip install 'oddspot[ray]'`): nothing here imports them until a job runs.
"""

from oddspot.lazy import lazy_exports

__all__ = ["evaluate", "predict"]
__getattr__, __dir__ = lazy_exports(__name__, {"evaluate": "evaluate", "predict": "predict"})
