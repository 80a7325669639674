"""Score shards in an output folder: written atomically as results arrive, read back to resume, united at the end.

    OUT/shards/job.json           which run (and task) the shards belong to; a rerun with another run is refused
    OUT/shards/part-*.parquet     rows as they came back, each file written whole (temp file + rename)
    OUT/scores.parquet            the union: one row set per input of this job, in input order

A rerun reads the keys (input paths) of the existing shards and scores only the other inputs, so an
interrupted job picks up where it stopped. The union keeps, for each key, the rows of the first
shard that holds it, so an input scored twice (a batch retried after its results were written)
still appears exactly once.
"""

from __future__ import annotations

import io
import os
import secrets
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from oddspot.errors import OddspotError
from oddspot.files import atomic_write_bytes, read_json, write_json

SHARDS_DIR = "shards"
JOB_FILE = "job.json"
SCORES_PARQUET = "scores.parquet"
ORDER_COLUMN = "__order"


def shard_files(out: Path) -> list[Path]:
    """The finished shard files of `out`, oldest name first."""
    folder = Path(out) / SHARDS_DIR
    return sorted(folder.glob("part-*.parquet")) if folder.is_dir() else []


def _read(path: Path, columns: list[str] | None = None) -> Any:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path, columns=columns)
    except (OSError, pa.ArrowException) as exc:
        raise OddspotError(f"{path}: unreadable shard ({str(exc).splitlines()[0]}); delete it to score its inputs "
                           "again") from None


def open_job(out: Path, identity: dict[str, Any], key: str) -> set[str]:
    """Start or resume the job of `identity` in `out`; returns the keys already scored there.

    A folder holding shards of another job (another run or task) is a one-line error.
    """
    folder = Path(out) / SHARDS_DIR
    job = folder / JOB_FILE
    if job.exists():
        saved = read_json(job, f"delete {folder} to start over")
        if saved != identity:
            diff = sorted(k for k in identity if saved.get(k) != identity[k])
            raise OddspotError(f"{out}: holds scores of another job (different {', '.join(diff) or 'fields'}); choose "
                               f"another --out, or delete {folder} to start over")
    else:
        write_json(job, identity)
    done: set[str] = set()
    for path in shard_files(out):
        done.update(_read(path, [key]).column(key).to_pylist())
    return done


class ShardWriter:
    """Collects result rows and writes them as shard files of about `rows_per_shard` rows (or every `seconds`)."""

    def __init__(self, out: Path, schema: Any, rows_per_shard: int = 4096, seconds: float = 60.0) -> None:
        self.folder = Path(out) / SHARDS_DIR
        self.schema = schema
        self.rows_per_shard = rows_per_shard
        self.seconds = seconds
        self.rows: list[dict[str, Any]] = []
        self.written = 0
        self._last = time.monotonic()

    def add(self, rows: Sequence[dict[str, Any]]) -> None:
        """Buffer rows; write a shard when enough have come or enough time has passed."""
        self.rows.extend(rows)
        if len(self.rows) >= self.rows_per_shard or time.monotonic() - self._last >= self.seconds:
            self.flush()

    def flush(self) -> None:
        """Write the buffered rows as one shard file (atomically), if there are any."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        self._last = time.monotonic()
        if not self.rows:
            return
        table = pa.Table.from_pylist(self.rows, schema=self.schema)
        buf = io.BytesIO()
        pq.write_table(table, buf)
        name = f"part-{time.time_ns():020d}-{os.getpid()}-{secrets.token_hex(4)}.parquet"
        atomic_write_bytes(self.folder / name, buf.getvalue())
        self.written += len(self.rows)
        self.rows = []


def unite(out: Path, key: str, order: Sequence[str], schema: Any, then_by: Sequence[str] = ()) -> Any:
    """Write OUT/scores.parquet: for each key of `order` (in that order), the rows of the first shard holding it.

    Rows of one key keep their order within the shard, or are sorted by the `then_by` columns.
    Returns the table written.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    claimed: set[str] = set()
    parts = []
    for path in shard_files(out):
        table = _read(path)
        keys = set(table.column(key).to_pylist()) - claimed
        if keys:
            parts.append(table.filter(pc.is_in(table.column(key), value_set=pa.array(sorted(keys), pa.string()))))
            claimed |= keys
    table = pa.concat_tables(parts).cast(schema) if parts else schema.empty_table()
    ranks = pa.table({key: pa.array(list(order), pa.string()), ORDER_COLUMN: pa.array(range(len(order)), pa.int64())})
    joined = table.join(ranks, key, join_type="inner")
    joined = joined.sort_by([(ORDER_COLUMN, "ascending"), *((c, "ascending") for c in then_by)])
    result = joined.drop_columns([ORDER_COLUMN]).select(schema.names)
    buf = io.BytesIO()
    pq.write_table(result, buf)
    atomic_write_bytes(Path(out) / SCORES_PARQUET, buf.getvalue())
    return result
